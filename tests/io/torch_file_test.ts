import assert from "node:assert/strict";
import { pickledAttributes, unpickle } from "../../core/io/pickle.ts";
import { SafetensorsFile } from "../../core/io/safetensors.ts";
import { openTorchFile, TorchFile } from "../../core/io/torch_file.ts";
import { openWeights } from "../../core/io/weights.ts";
import { ZipReader } from "../../core/io/zip.ts";
import { EXPECTED, fixture, withTempDir } from "./_fixtures.ts";
import { buildZip } from "./_zip_builder.ts";
import { bytes, le32, moduleUrl, repeat, runIsolated, zeroDeflate } from "./_hostile.ts";

const DTYPES: Record<string, string> = {
  float32: "F32",
  float16: "F16",
  bfloat16: "BF16",
  int64: "I64",
};

Deno.test("torch .bin: every tensor of a torch.save'd state dict matches PyTorch", async () => {
  const want = EXPECTED["state_dict.bin"];
  const w = await openWeights(fixture("state_dict.bin"));
  try {
    assert.ok(w instanceof TorchFile);
    assert.deepEqual(w.keys(), Object.keys(want));
    for (
      const [key, t] of Object.entries<{ shape: number[]; dtype: string; values: number[] }>(want)
    ) {
      assert.deepEqual(w.info(key), { dtype: DTYPES[t.dtype], shape: t.shape }, key);
      assert.deepEqual([...await w.readF32(key)], t.values, key);
    }
    // The view shares base's storage from element 6: only its 8 floats are read.
    const raw = await w.readRaw("view_offset");
    assert.equal(raw.length, 32);
    assert.deepEqual(new Float32Array(raw.buffer), new Float32Array(want.base.values.slice(6, 14)));
    assert.deepEqual(w.info("scalar").shape, []);
    assert.throws(() => w.info("missing"), /state_dict\.bin: no tensor named "missing"/);
  } finally {
    w.close();
  }
});

Deno.test("torch .pth: a state dict nested under state_dict (with _metadata) is found", async () => {
  const want = EXPECTED["nested.pth"];
  const w = await openTorchFile(fixture("nested.pth"));
  try {
    assert.deepEqual(w.keys(), ["weight", "bias"]);
    for (const key of w.keys()) {
      assert.deepEqual(w.info(key).shape, want[key].shape);
      assert.deepEqual([...await w.readF32(key)], want[key].values);
    }
  } finally {
    w.close();
  }
  // The module state dict's _metadata attribute survives as an inert attribute.
  const z = await ZipReader.open(fixture("nested.pth"));
  const pkl = z.entries().find((e) => e.name.endsWith("/data.pkl"))!;
  const root = unpickle(await z.read(pkl.name), { persistentLoad: () => ({}) }) as Map<
    string,
    unknown
  >;
  z.close();
  assert.equal(root.get("step"), 7);
  const attrs = pickledAttributes(root.get("state_dict") as Map<unknown, unknown>);
  assert.ok(attrs instanceof Map && attrs.get("_metadata") instanceof Map);
});

Deno.test("torch files: non-contiguous, truncated, tampered and legacy files are refused", async () => {
  await assert.rejects(
    openTorchFile(fixture("noncontig.bin")),
    /noncontig\.bin: tensor "t": non-contiguous view \(size \[4,3\], stride \[1,4\]\)/,
  );
  await assert.rejects(openWeights(fixture("truncated.bin")), /truncated/);

  const z = await ZipReader.open(fixture("state_dict.bin"));
  const files = await Promise.all(
    z.entries().map(async (e) => ({ name: e.name, data: await z.read(e.name) })),
  );
  z.close();
  await withTempDir(async (dir) => {
    const missing = `${dir}/missing.bin`;
    await Deno.writeFile(missing, buildZip(files.filter((f) => f.name !== "state_dict/data/3")));
    await assert.rejects(openTorchFile(missing), /storage entry state_dict\/data\/3 is missing/);

    const short = `${dir}/short.bin`;
    const cut = files.map((f) =>
      f.name === "state_dict/data/0" ? { ...f, data: f.data.subarray(0, 20) } : f
    );
    await Deno.writeFile(short, buildZip(cut));
    await assert.rejects(openTorchFile(short), /state_dict\/data\/0 is shorter than its 12/);

    const evil = `${dir}/evil.bin`;
    const evilPkl = await Deno.readFile(fixture("evil_p2.pkl"));
    await Deno.writeFile(evil, buildZip([{ name: "archive/data.pkl", data: evilPkl }]));
    await assert.rejects(
      openWeights(evil),
      /evil\.bin: archive\/data\.pkl: byte \d+: global .*system/,
    );

    const noPkl = `${dir}/nopkl.bin`;
    await Deno.writeFile(noPkl, buildZip([{ name: "x/other", data: new Uint8Array(3) }]));
    await assert.rejects(openTorchFile(noPkl), /has no data\.pkl/);

    const legacy = `${dir}/legacy.pth`;
    await Deno.writeFile(legacy, new Uint8Array([0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46]));
    await assert.rejects(openWeights(legacy), /legacy \(pre-1\.6, non-zip\) PyTorch/);
  });
});

Deno.test("openWeights picks safetensors for safetensors files", async () => {
  const w = await openWeights(fixture("py_written.safetensors"));
  try {
    assert.ok(w instanceof SafetensorsFile);
    assert.deepEqual(w.keys().sort(), ["bf", "h", "ids"]);
  } finally {
    w.close();
  }
});

Deno.test("torch .pth: a deflate bomb in data.pkl fails fast, by name, in bounded memory", async () => {
  await withTempDir(async (dir) => {
    const stream = zeroDeflate(1024); // 1 GiB of zeros in about 1 MB
    const pth = (name: string, declaredSize: number, rawDeflate = stream) => {
      const path = `${dir}/${name}.pth`;
      Deno.writeFileSync(
        path,
        buildZip([{ name: "archive/data.pkl", data: new Uint8Array(0), rawDeflate, declaredSize }]),
      );
      return path;
    };
    const cases: [string, RegExp][] = [
      // Honest header: 1 GiB is over data.pkl's limit, refused before inflating.
      [
        pth("honest", 2 ** 30),
        /honest\.pth: zip entry "archive\/data\.pkl" declares 1073741824 bytes, more than the 16777216-byte limit/,
      ],
      // Lying header: inflating stops as soon as the output passes the declared 1000 bytes.
      [
        pth("lying", 1000),
        /lying\.pth: zip entry "archive\/data\.pkl" inflates to more than the 1000 bytes/,
      ],
      // A declared size no deflate stream of this length can reach.
      [
        pth("ratio", 8 << 20, stream.subarray(0, 2048)),
        /ratio\.pth: .*declares 8388608 bytes from 2048 compressed/,
      ],
    ];
    assert.ok(Deno.statSync(`${dir}/honest.pth`).size < 1.1e6);
    const run = await runIsolated(
      `import { openTorchFile } from "${moduleUrl("core/io/torch_file.ts")}";`,
      `const out = [];
       for (const path of ${JSON.stringify(cases.map((c) => c[0]))}) {
         const t0 = performance.now();
         try { (await openTorchFile(path)).close(); out.push({ ok: true }); }
         catch (e) { out.push({ name: e.name, message: e.message, ms: performance.now() - t0 }); }
       }
       return out;`,
    );
    cases.forEach(([, pattern], i) => {
      const r = run.result[i];
      assert.equal(r.name, "FormatError", JSON.stringify(r));
      assert.match(r.message, pattern);
      assert.ok(r.ms < 2000, `case ${i} took ${r.ms} ms`);
    });
    // A fresh Deno process peaks near 100 MiB; inflating the bomb would need over 1 GiB.
    assert.ok(run.peakMiB < 300, `peak resident memory ${run.peakMiB} MiB`);
    console.log(`deflate bombs refused; child peak RSS ${run.peakMiB.toFixed(0)} MiB`);

    // The limit is the caller's to raise: the honest bomb then inflates (to a 64 MiB cap here).
    const small = pth("small", 64 << 20, zeroDeflate(64));
    await assert.rejects(
      openTorchFile(small, { maxPickleBytes: 64 << 20 }),
      /small\.pth: zip entry "archive\/data\.pkl" fails its CRC-32 check/,
    );
  });
});

Deno.test("torch .pth: hostile pickles in data.pkl end in errors naming the file", async () => {
  await withTempDir(async (dir) => {
    const write = (name: string, pkl: Uint8Array) => {
      const path = `${dir}/${name}.pth`;
      Deno.writeFileSync(path, buildZip([{ name: "archive/data.pkl", data: pkl }]));
      return path;
    };
    // {"w": _rebuild_parameter(_rebuild_parameter(...(None)...))} nested 100k deep.
    const depth = 100_000;
    const wrap = bytes("ctorch._utils\n_rebuild_parameter\n", [0x94]); // GLOBAL + MEMOIZE
    const deep = bytes(
      [0x80, 4, 0x7d],
      [0x8c, 1],
      "w",
      wrap,
      repeat([0x68, 0], depth - 1), // BINGET 0
      [0x4e],
      repeat([0x85, 0x52], depth), // TUPLE1 REDUCE
      [0x73, 0x2e],
    );
    await assert.rejects(
      openTorchFile(write("deep", deep)),
      /deep\.pth: tensor "w": tensor wrapped more than 8 times/,
    );
    // A storage whose key is a deeply nested tuple instead of a string.
    const nested = bytes(
      [0x80, 2, 0x7d, 0x58],
      le32(1),
      "w(X",
      le32(7),
      "storagectorch\nFloatStorage\n",
      [0x4e],
      repeat([0x85], 50_000), // TUPLE1 x 50k
      "X",
      le32(3),
      "cpuJ",
      le32(1),
      "tQs.",
    );
    await assert.rejects(
      openTorchFile(write("nested", nested)),
      /nested\.pth: storage key a tuple of 1 items is not a string/,
    );
    // LONG4 of 2 MB: refused in milliseconds (it used to take minutes).
    const long4 = bytes([0x80, 2, 0x8b], le32(2 << 20), new Uint8Array(2 << 20).fill(0x7f), ".");
    const t0 = performance.now();
    await assert.rejects(
      openTorchFile(write("long4", long4)),
      /long4\.pth: archive\/data\.pkl: byte 2: LONG4 integer of 2097152 bytes exceeds the 4096-byte limit/,
    );
    assert.ok(performance.now() - t0 < 2000);
  });
});
