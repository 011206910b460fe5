/**
 * The score-model checkpoint formats load the same weights: our safetensors file, a diffusers
 * UNet folder, the original tool's `score_model_s{step}.pth` and a DDP-prefixed `.pth`, all made
 * from one set of weights (tests/fixtures/sample: make_fixture.ts, then make_pth.py with torch).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { testGpu } from "../helpers/gpu.ts";
import { loadScoreModel, type ScoreModelOptions } from "../../core/sample/score_model.ts";
import { stateDict } from "../../core/models/load.ts";
import { openWeights } from "../../core/io/weights.ts";
import { SAMPLE_FIXTURES } from "./_tiny.ts";

const TMP = await Deno.makeTempDir({ prefix: "reflow_score_model_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(TMP, { recursive: true }));
const UNET_DIR = join(SAMPLE_FIXTURES, "unet_tiny");
const SAFETENSORS = join(UNET_DIR, "diffusion_pytorch_model.safetensors");

/** A model folder whose unet/config.json is the fixture's. */
async function modelDir(): Promise<string> {
  const dir = join(TMP, "model");
  await Deno.mkdir(join(dir, "unet"), { recursive: true });
  await Deno.copyFile(join(UNET_DIR, "config.json"), join(dir, "unet", "config.json"));
  return dir;
}

function options(dir: string, ckptPath: string): ScoreModelOptions {
  return {
    modelDir: dir,
    ckptPath,
    loadPretrained: false,
    allowMissingKeys: false,
    seed: 123,
    orientation: "original",
  };
}

Deno.test("score model: safetensors, diffusers folder, .pth and DDP .pth load equal weights", async () => {
  const gpu = await testGpu();
  const dir = await modelDir();
  const reader = await openWeights(SAFETENSORS);
  const want = new Map<string, Float32Array>();
  for (const k of reader.keys()) want.set(k, await reader.readF32(k));
  reader.close();

  const cases: [string, string, string][] = [
    [SAFETENSORS, "safetensors", ""],
    [UNET_DIR, "diffusers", ""],
    [join(SAMPLE_FIXTURES, "score_model_s7.pth"), "torch", ""],
    [join(SAMPLE_FIXTURES, "score_model_ddp_s7.pth"), "torch", "module."],
  ];
  for (const [path, format, prefix] of cases) {
    const sm = await loadScoreModel(gpu, options(dir, path));
    try {
      assert.equal(sm.format, format, path);
      assert.deepEqual(sm.strippedPrefixes, prefix ? [prefix] : []);
      assert.deepEqual(sm.report?.missing, []);
      assert.deepEqual(sm.report?.unexpected, []);
      assert.equal(sm.orientation, "original");
      const got = await stateDict(sm.unet);
      assert.equal(got.size, want.size, path);
      for (const [k, v] of want) assert.deepEqual(got.get(k), v, `${path}: ${k}`);
    } finally {
      sm.unet.dispose();
    }
  }
});

Deno.test("score model: empty ckpt_path gives a fresh (seeded) or the pretrained UNet", async () => {
  const gpu = await testGpu();
  const dir = join(TMP, "model_pre");
  await Deno.mkdir(dir, { recursive: true });
  // A pipeline folder whose unet/ is the fixture folder.
  await Deno.symlink(UNET_DIR, join(dir, "unet"));
  const fresh = await loadScoreModel(gpu, options(dir, ""));
  const fresh2 = await loadScoreModel(gpu, options(dir, ""));
  const pre = await loadScoreModel(gpu, { ...options(dir, ""), loadPretrained: true });
  try {
    assert.equal(fresh.format, "fresh");
    assert.equal(pre.format, "pretrained");
    const [a, b, p] = await Promise.all([fresh, fresh2, pre].map((m) => stateDict(m.unet)));
    assert.deepEqual(a.get("conv_in.weight"), b.get("conv_in.weight"));
    const reader = await openWeights(SAFETENSORS);
    assert.deepEqual(p.get("conv_in.weight"), await reader.readF32("conv_in.weight"));
    assert.notDeepEqual(a.get("conv_in.weight"), p.get("conv_in.weight"));
    reader.close();
  } finally {
    for (const m of [fresh, fresh2, pre]) m.unet.dispose();
  }
});

Deno.test("score model: a checkpoint folder's own config.json describes its weights", async () => {
  const gpu = await testGpu();
  // The model folder's UNet config differs (wider): the checkpoint folder's config wins.
  const dir = join(TMP, "model_wide");
  await Deno.mkdir(join(dir, "unet"), { recursive: true });
  const cfg = JSON.parse(await Deno.readTextFile(join(UNET_DIR, "config.json")));
  await Deno.writeTextFile(
    join(dir, "unet", "config.json"),
    JSON.stringify({ ...cfg, block_out_channels: [16, 32] }),
  );
  const sm = await loadScoreModel(gpu, options(dir, UNET_DIR));
  assert.equal(sm.configPath, join(UNET_DIR, "config.json"));
  sm.unet.dispose();
  // A single file is read against the model folder's config: the shapes do not fit.
  await assert.rejects(
    () => loadScoreModel(gpu, options(dir, join(SAMPLE_FIXTURES, "score_model_s7.pth"))),
    /does not fit the UNet config .*model_wide[\\/]unet[\\/]config\.json.*has shape \[\d+(,\d+)*\], the model expects \[\d+(,\d+)*\]/,
  );
});

Deno.test("score model: a bad timestep_orientation in the metadata is an error", async () => {
  const gpu = await testGpu();
  const dir = await modelDir();
  // Same tensors with a different header: rewrite the metadata of the fixture.
  const bytes = await Deno.readFile(SAFETENSORS);
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  header.__metadata__ = { ...header.__metadata__, timestep_orientation: "sideways" };
  let text = JSON.stringify(header);
  while ((8 + new TextEncoder().encode(text).length) % 8 !== 0) text += " ";
  const head = new TextEncoder().encode(text);
  const out = new Uint8Array(8 + head.length + bytes.length - 8 - n);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  out.set(bytes.subarray(8 + n), 8 + head.length);
  const path = join(TMP, "sideways.safetensors");
  await Deno.writeFile(path, out);
  await assert.rejects(
    () => loadScoreModel(gpu, options(dir, path)),
    /timestep_orientation = "sideways" is not "original" or "pretrained"/,
  );
});
