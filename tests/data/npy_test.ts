import assert from "node:assert/strict";
import {
  decodeNpy,
  encodeNpy,
  NPY_MAX_HEADER_BYTES,
  NPY_MAX_NESTING,
  type NpyArray,
  readNpy,
  writeNpy,
} from "../../core/data/npy.ts";
import { FormatError } from "../../core/io/format_error.ts";

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

/** A .npy file (format 2.0: 4-byte header length) with `header` verbatim and `data` after it. */
function npyWithHeader(header: string, data = new Uint8Array(0)): Uint8Array {
  const h = Uint8Array.from(header, (c) => c.charCodeAt(0));
  const out = new Uint8Array(12 + h.length + data.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 2, 0]);
  new DataView(out.buffer).setUint32(8, h.length, true);
  out.set(h, 12);
  out.set(data, 12 + h.length);
  return out;
}

Deno.test("npy: hostile headers are refused by name, without recursion or huge messages", () => {
  const dict = (shape: string, descr = "'<f4'") =>
    `{'descr': ${descr}, 'fortran_order': False, 'shape': ${shape}, }\n`;
  // The same dict parses when well-formed (the checks below are not refusing everything).
  const fine = decodeNpy(npyWithHeader(dict("(2,)"), new Uint8Array(8)), "ok.npy");
  assert.deepEqual(fine.shape, [2]);

  // A 1 MB header (numpy refuses headers over 10000 bytes too).
  const huge = npyWithHeader(dict("(2,)").padEnd(1 << 20, " ") + "\n");
  const t0 = performance.now();
  assert.throws(
    () => decodeNpy(huge, "x/huge.npy"),
    (err: Error) =>
      err instanceof FormatError &&
      err.message === "x/huge.npy: .npy header length 1048577 exceeds numpy's 10000-byte limit",
  );
  assert.ok(performance.now() - t0 < 500);
  assert.equal(NPY_MAX_HEADER_BYTES, 10_000);

  // Nested shape tuples: 9 levels, and 3000 levels (as deep as 10000 bytes allow).
  for (const depth of [NPY_MAX_NESTING + 1, 3000]) {
    const shape = "(".repeat(depth) + "1" + ",)".repeat(depth);
    assert.throws(
      () => decodeNpy(npyWithHeader(dict(shape)), "x/nested.npy"),
      (err: Error) =>
        err instanceof FormatError && err.message.length < 400 &&
        /^x\/nested\.npy: malformed \.npy header \(nested more than 8 deep at \d+\)/.test(
          err.message,
        ),
    );
  }
  // A shape nested within the limit is still not a tuple of sizes.
  assert.throws(
    () => decodeNpy(npyWithHeader(dict("((1,),)")), "x/n2.npy"),
    /x\/n2\.npy: bad \.npy shape a list of 1 items/,
  );
  // More dimensions than numpy allows.
  assert.throws(
    () => decodeNpy(npyWithHeader(dict(`(${"1, ".repeat(65)})`)), "x/dims.npy"),
    /x\/dims\.npy: bad \.npy shape a list of 65 items \(a tuple of at most 64 sizes\)/,
  );
  // Object.prototype names are not dtypes, and "__proto__" is only a key.
  for (const descr of ["'__proto__'", "'constructor'", "'toString'"]) {
    assert.throws(
      () => decodeNpy(npyWithHeader(dict("(1,)", descr)), "x/proto.npy"),
      /x\/proto\.npy: unsupported \.npy dtype/,
    );
  }
  assert.throws(
    () => decodeNpy(npyWithHeader("{'__proto__': [1], 'shape': (1,)}"), "x/p.npy"),
    /x\/p\.npy: unsupported \.npy dtype undefined/,
  );
  // fortran_order that is not a boolean; a header length past the end of the file.
  assert.throws(
    () => decodeNpy(npyWithHeader(dict("(1,)").replace("False", "7")), "x/f.npy"),
    /x\/f\.npy: \.npy fortran_order is 7, not a boolean/,
  );
  const cut = npyWithHeader(dict("(1,)")).subarray(0, 30);
  assert.throws(
    () => decodeNpy(cut, "x/cut.npy"),
    /x\/cut\.npy: truncated \.npy header \(header length \d+, file has 30 bytes\)/,
  );
});
