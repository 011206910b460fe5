import assert from "node:assert/strict";
import { decodeNpy, encodeNpy, type NpyArray, readNpy, writeNpy } from "../../core/data/npy.ts";

const FIX = new URL("../fixtures/data/npy/", import.meta.url);
const fixture = (name: string) => new URL(`${name}.npy`, FIX).pathname;

/** The arrays make_fixtures.py saved with numpy, recomputed from the same formulas. */
function expected(): Record<string, NpyArray> {
  const f2 = new Uint16Array(2 * 4 * 8 * 8);
  for (let i = 0; i < f2.length; i++) f2[i] = (i * 37) & 0xffff;
  return {
    f2: { dtype: "<f2", shape: [2, 4, 8, 8], data: f2 },
    f4: {
      dtype: "<f4",
      shape: [3, 5],
      data: Float32Array.from({ length: 15 }, (_, i) => i * 0.25 - 3),
    },
    f8_scalar: { dtype: "<f8", shape: [], data: Float64Array.of(2.5) },
    i4: { dtype: "<i4", shape: [7], data: Int32Array.from({ length: 7 }, (_, i) => i * -7 + 100) },
    i8: {
      dtype: "<i8",
      shape: [2, 3],
      data: BigInt64Array.from({ length: 6 }, (_, i) => BigInt(i) * 10n ** 12n - 5n),
    },
    u1_empty: { dtype: "|u1", shape: [3, 0], data: new Uint8Array(0) },
    u1: { dtype: "|u1", shape: [300], data: Uint8Array.from({ length: 300 }, (_, i) => i % 256) },
    f4_big_dim: { dtype: "<f4", shape: [12345678901, 0], data: new Float32Array(0) },
  };
}

Deno.test("npy: we read numpy's files (v1, v2, v3)", async () => {
  for (const [name, want] of Object.entries(expected())) {
    const got = await readNpy(fixture(name));
    assert.equal(got.dtype, want.dtype, name);
    assert.deepEqual(got.shape, want.shape, name);
    assert.deepEqual(got.data, want.data, name);
  }
  const f4 = expected().f4;
  for (const v of ["f4_v2", "f4_v3"]) {
    const got = await readNpy(fixture(v));
    assert.deepEqual(got.shape, f4.shape, v);
    assert.deepEqual(got.data, f4.data, v);
  }
});

Deno.test("npy: our bytes are identical to numpy.save", async () => {
  for (const [name, arr] of Object.entries(expected())) {
    const numpyBytes = await Deno.readFile(fixture(name));
    assert.deepEqual(encodeNpy(arr), numpyBytes, name);
  }
});

Deno.test("npy: writeNpy round trip is atomic and exact", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const arr = expected().f2;
    const path = `${dir}/0.npy`;
    await writeNpy(path, arr);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["0.npy"]); // no .tmp left
    const back = await readNpy(path);
    assert.deepEqual(back, arr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("npy: bad input gives errors naming the file", async () => {
  const good = await Deno.readFile(fixture("f2"));
  assert.throws(
    () => decodeNpy(good.subarray(0, good.length - 1), "x/3.npy"),
    /x\/3\.npy: truncated .npy data/,
  );
  assert.throws(
    () => decodeNpy(good.subarray(0, 40), "x/3.npy"),
    /x\/3\.npy: truncated .npy header/,
  );
  const bad = good.slice();
  bad[1] = 0x41;
  assert.throws(() => decodeNpy(bad, "x/4.npy"), /x\/4\.npy: not a .npy file/);
  await assert.rejects(readNpy(fixture("f4_fortran")), /f4_fortran\.npy: Fortran-ordered/);
  await assert.rejects(
    readNpy(fixture("f4_bigendian")),
    /f4_bigendian\.npy: unsupported .npy dtype ">f4"/,
  );
  await assert.rejects(readNpy("/nonexistent/7.npy"), /cannot read \/nonexistent\/7\.npy/);
  assert.throws(
    () => encodeNpy({ dtype: "<f4", shape: [2, 2], data: new Float32Array(3) }),
    /needs 4 elements, got 3/,
  );
  assert.throws(
    () => encodeNpy({ dtype: "<f2", shape: [1], data: new Float32Array(1) }),
    /does not match/,
  );
});
