import assert from "node:assert/strict";
import { pickledAttributes, unpickle } from "../../core/io/pickle.ts";
import { SafetensorsFile } from "../../core/io/safetensors.ts";
import { openTorchFile, TorchFile } from "../../core/io/torch_file.ts";
import { openWeights } from "../../core/io/weights.ts";
import { ZipReader } from "../../core/io/zip.ts";
import { EXPECTED, fixture, withTempDir } from "./_fixtures.ts";
import { buildZip } from "./_zip_builder.ts";

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
