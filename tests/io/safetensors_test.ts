import assert from "node:assert/strict";
import { f32ToF16Bits } from "../../core/io/half.ts";
import { openSafetensors, writeSafetensors } from "../../core/io/safetensors.ts";
import { EXPECTED, fixture, GOLDEN_UNET, withTempDir } from "./_fixtures.ts";

/** Builds a safetensors file from a header object (or raw header text) and a data region. */
function craft(header: unknown, data: Uint8Array, declaredLen?: bigint): Uint8Array {
  const json = new TextEncoder().encode(
    typeof header === "string" ? header : JSON.stringify(header),
  );
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, declaredLen ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

async function expectOpenError(bytes: Uint8Array, pattern: RegExp): Promise<void> {
  await withTempDir(async (dir) => {
    const path = `${dir}/hostile.safetensors`;
    await Deno.writeFile(path, bytes);
    await assert.rejects(openSafetensors(path), (err: Error) => {
      assert.match(err.message, pattern);
      assert.ok(err.message.includes(path), `error does not name the file: ${err.message}`);
      return true;
    });
  });
}

Deno.test("safetensors: write then read round-trips every dtype, sorted and aligned", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/w.safetensors`;
    const f32 = new Float32Array([1.5, -2.25, 3e-8, 1e30, -0, 7]);
    const half = f32ToF16Bits(new Float32Array([0.5, -1, 65504]));
    const ints = new Int32Array([-5, 0, 2147483647, -2147483648]);
    const longs = new BigInt64Array([-(2n ** 40n), 9n]);
    await writeSafetensors(path, [
      { name: "zeta", dtype: "F32", shape: [2, 3], data: f32 },
      { name: "alpha.half", dtype: "F16", shape: [3], data: half },
      { name: "mid", dtype: "I32", shape: [2, 2], data: ints },
      { name: "long", dtype: "I64", shape: [2], data: longs },
      { name: "empty", dtype: "F32", shape: [0, 4], data: new Float32Array(0) },
    ], { format: "pt", note: "made by a test" });
    const names = [...Deno.readDirSync(dir)].map((e) => e.name);
    assert.deepEqual(names, ["w.safetensors"], "temporary file left behind");

    const raw = await Deno.readFile(path);
    const n = Number(new DataView(raw.buffer).getBigUint64(0, true));
    assert.equal(n % 8, 0);
    const headerText = new TextDecoder().decode(raw.subarray(8, 8 + n));
    assert.match(headerText, /^\{.*\} *$/);
    const header = JSON.parse(headerText);
    assert.deepEqual(Object.keys(header), [
      "__metadata__",
      "alpha.half",
      "empty",
      "long",
      "mid",
      "zeta",
    ]);
    assert.deepEqual(header["alpha.half"].data_offsets, [0, 6]);
    assert.deepEqual(header.zeta.data_offsets, [38, 62]);
    assert.equal(raw.length, 8 + n + 62);

    const st = await openSafetensors(path);
    try {
      assert.deepEqual(st.metadata, { format: "pt", note: "made by a test" });
      assert.deepEqual(st.keys().sort(), ["alpha.half", "empty", "long", "mid", "zeta"]);
      assert.deepEqual(st.info("zeta"), { dtype: "F32", shape: [2, 3] });
      assert.deepEqual(await st.readF32("zeta"), f32);
      assert.deepEqual(await st.readF32("alpha.half"), new Float32Array([0.5, -1, 65504]));
      assert.deepEqual(await st.readF32("mid"), Float32Array.from(ints));
      assert.deepEqual(await st.readF32("long"), new Float32Array([-(2 ** 40), 9]));
      assert.deepEqual(new Int32Array((await st.readRaw("mid")).buffer), ints);
      assert.equal((await st.readRaw("empty")).length, 0);
      // Concurrent reads on one handle must not interleave their seeks.
      const [a, b] = await Promise.all([st.readRaw("zeta"), st.readRaw("alpha.half")]);
      assert.deepEqual(new Float32Array(a.buffer), f32);
      assert.deepEqual(new Uint16Array(b.buffer), half);
      assert.throws(() => st.info("nope"), /no tensor named "nope"/);
    } finally {
      st.close();
    }
  });
});

Deno.test("safetensors: reads a file written by Python (F16, BF16, I64, metadata)", async () => {
  const st = await openSafetensors(fixture("py_written.safetensors"));
  try {
    const want = EXPECTED["py_written.safetensors"];
    assert.deepEqual(st.metadata, { format: "pt" });
    assert.deepEqual(st.info("h"), { dtype: "F16", shape: [3, 2] });
    assert.deepEqual(st.info("bf"), { dtype: "BF16", shape: [4] });
    assert.deepEqual(st.info("ids"), { dtype: "I64", shape: [2, 2] });
    for (const key of ["h", "bf", "ids"]) {
      assert.deepEqual([...await st.readF32(key)], want[key], key);
    }
  } finally {
    st.close();
  }
});

Deno.test({
  name: "safetensors: golden tiny UNet tensors match values parsed by Python",
  ignore: !(() => {
    try {
      return Deno.statSync(GOLDEN_UNET).isFile;
    } catch {
      return false;
    }
  })(),
  fn: async () => {
    const want = EXPECTED.golden_unet;
    const st = await openSafetensors(GOLDEN_UNET);
    try {
      assert.equal(st.keys().length, want.count);
      for (const [key, t] of Object.entries<Record<string, number[] | number>>(want.tensors)) {
        assert.deepEqual(st.info(key), { dtype: "F32", shape: t.shape });
        const v = await st.readF32(key);
        assert.equal(v.length, t.numel);
        assert.deepEqual([...v.subarray(0, 8)], t.first);
        const sum = v.reduce((s, x) => s + x, 0);
        assert.ok(Math.abs(sum - (t.sum as number)) <= 1e-9 * (1 + Math.abs(t.sum as number)), key);
      }
    } finally {
      st.close();
    }
  },
});

Deno.test("safetensors: a small tensor is read from a huge sparse file without loading it", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/sparse.safetensors`;
    const big = 2 ** 30; // 1 GiB of (sparse) zeros: a whole-file read would be slow and huge
    const header = {
      big: { dtype: "U8", shape: [big], data_offsets: [0, big] },
      small: { dtype: "F32", shape: [2], data_offsets: [big, big + 8] },
    };
    const head = craft(header, new Uint8Array(0));
    const f = await Deno.open(path, { write: true, create: true });
    await f.write(head);
    await f.truncate(head.length + big);
    await f.seek(head.length + big, Deno.SeekMode.Start);
    await f.write(new Uint8Array(new Float32Array([4.5, -1]).buffer));
    f.close();
    const st = await openSafetensors(path);
    try {
      assert.deepEqual(await st.readF32("small"), new Float32Array([4.5, -1]));
    } finally {
      st.close();
    }
  });
});

Deno.test("safetensors: hostile headers are refused with errors naming file and key", async () => {
  const t = (shape: number[], offsets: number[], dtype = "F32") => ({
    dtype,
    shape,
    data_offsets: offsets,
  });
  const eight = new Uint8Array(8);
  await expectOpenError(new Uint8Array(5), /too short/);
  await expectOpenError(craft({}, eight, 200_000_000n), /exceeds the 100000000-byte limit/);
  await expectOpenError(craft({}, eight, 2n ** 63n), /exceeds/);
  await expectOpenError(
    craft({ a: t([2], [0, 8]) }, eight, 5000n),
    /runs past the end of the file/,
  );
  await expectOpenError(craft("{not json", eight), /not valid UTF-8 JSON/);
  await expectOpenError(craft("[1,2]", eight), /not a JSON object/);
  await expectOpenError(
    craft({ w: t([2], [0, 8], "F12") }, eight),
    /tensor "w".*unknown dtype "F12"/,
  );
  await expectOpenError(craft({ w: t([3], [0, 8]) }, eight), /tensor "w".*needs 12 bytes.*span 8/);
  await expectOpenError(craft({ w: t([-2], [0, 8]) }, eight), /tensor "w".*shape/);
  await expectOpenError(
    craft({ w: t([4], [0, 16]) }, eight),
    /tensor "w".*past the end of the data/,
  );
  await expectOpenError(craft({ w: t([2], [8, 0]) }, eight), /tensor "w".*data_offsets/);
  await expectOpenError(
    craft({ a: t([2], [0, 8]), b: t([1], [4, 8]) }, eight),
    /tensor "b".*overlap/,
  );
  await expectOpenError(craft({ a: t([1], [4, 8]) }, eight), /tensor "a".*gap/);
  await expectOpenError(craft({ a: t([1], [0, 4]) }, eight), /cover 4 bytes.*holds 8/);
  await expectOpenError(craft({ __metadata__: { x: 1 } }, new Uint8Array(0)), /__metadata__\.x/);
});

Deno.test("writeSafetensors refuses mismatched data and leaves no file", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/bad.safetensors`;
    await assert.rejects(
      writeSafetensors(path, [{ name: "w", dtype: "F32", shape: [3], data: new Float32Array(2) }]),
      /tensor "w": shape \[3\] does not match 2 elements/,
    );
    await assert.rejects(
      writeSafetensors(path, [{ name: "h", dtype: "F16", shape: [2], data: new Float32Array(2) }]),
      /tensor "h": F16 data must be a Uint16Array/,
    );
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  });
});

Deno.test("safetensors: deeply nested or huge header values are described, not stringified", async () => {
  const deep = "[".repeat(200_000) + "]".repeat(200_000);
  const entry = (field: string, value: string) =>
    `{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], ${field}: ${value}}}`;
  const eight = new Uint8Array(8);
  await expectOpenError(
    craft(entry('"dtype"', deep), eight),
    /hostile\.safetensors: tensor "w": unknown dtype a list of 1 items$/,
  );
  await expectOpenError(
    craft(entry('"shape"', deep), eight),
    /tensor "w": shape a list of 1 items is not a list of sizes$/,
  );
  await expectOpenError(
    craft(entry('"data_offsets"', `[0, ${deep}]`), eight),
    /tensor "w": data_offsets a list of 2 items is not \[begin, end\]$/,
  );
  // A megabyte-long dtype string and tensor name are clipped in the message.
  const long = "F".repeat(1 << 20);
  await withTempDir(async (dir) => {
    const path = `${dir}/long.safetensors`;
    await Deno.writeFile(
      path,
      craft(entry('"dtype"', `"${long}"`).replace('"w"', `"${long}"`), eight),
    );
    await assert.rejects(openSafetensors(path), (err: Error) => {
      assert.equal(err.name, "FormatError");
      assert.ok(err.message.length < 400, `${err.message.length} characters`);
      assert.match(
        err.message,
        /tensor "F+\.\.\. \(1048576 chars\)": unknown dtype "F+\.\.\. \(1048576 chars\)"/,
      );
      return true;
    });
  });
});
