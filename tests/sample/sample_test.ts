/**
 * The sample job end to end on a tiny model (tests/sample/_tiny.ts): outputs (number and size of
 * the PNGs, caption order, summary.json), the numbers (a one-step Euler sample recomputed here from
 * the UNet), seeded noise, the timestep orientation from checkpoint metadata, prompts, and the
 * errors for bad input.
 */
import { encodeCaptions } from "../../core/flow/captions.ts";
import assert from "node:assert/strict";
import { join } from "node:path";
import { decode } from "fast-png";
import { testGpu } from "../helpers/gpu.ts";
import { runSample } from "../../core/sample/run_sample.ts";
import type { SampleSummary } from "../../core/sample/sample_setup.ts";
import { identityDecode } from "../../core/flow/images.ts";
import { UNet2DConditionModel } from "../../core/models/unet2d_condition.ts";
import { loadTextEncoder } from "../../core/models/diffusers_folder.ts";
import { loadTokenizer } from "../../core/models/tokenizers/load.ts";
import { loadModuleFile, saveModule } from "../../core/models/load.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { noGrad } from "../../core/tensor/autograd.ts";
import { tidy } from "../../core/tensor/scope.ts";
import { f16BitsToF32 } from "../../core/io/half.ts";
import { philoxNormal } from "../../core/tensor/philox.ts";
import { tensorToImage } from "../../core/io/png.ts";
import {
  makeTinyData,
  makeTinyModel,
  SAMPLE_FIXTURES,
  TINY_UNET_CONFIG,
  tinyCaption,
  tinyConfig,
  tinyPair,
} from "./_tiny.ts";
import type { SampleConfig } from "../../configs/sample.ts";

const TMP = await Deno.makeTempDir({ prefix: "reflow_sample_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(TMP, { recursive: true }));
const MODEL = join(TMP, "model");
const MODEL_NO_VAE = join(TMP, "model_novae");
const DATA = join(TMP, "data");
let ready: Promise<void> | null = null;

function setup(): Promise<void> {
  ready ??= (async () => {
    const gpu = await testGpu();
    await makeTinyModel(gpu, MODEL, { vae: true });
    await makeTinyModel(gpu, MODEL_NO_VAE, { vae: false });
    await makeTinyData(DATA, 3);
    // The student checkpoint: a UNet with other weights than the model folder's.
    const unet = UNet2DConditionModel.create(gpu, TINY_UNET_CONFIG, 11);
    await saveModule(unet, join(TMP, "score_model_s11.safetensors"), { metadata: { step: "11" } });
    await saveModule(unet, join(TMP, "score_model_pre_s11.safetensors"), {
      metadata: { step: "11", timestep_orientation: "pretrained" },
    });
    unet.dispose();
  })();
  return ready;
}

async function run(
  config: SampleConfig,
  name: string,
  extra: { prompts?: string[]; odeTol?: number } = {},
): Promise<{ folder: string; summary: SampleSummary }> {
  const gpu = await testGpu();
  const folder = join(TMP, "out", name);
  const summary = await runSample({
    gpu,
    config,
    evalFolder: folder,
    console: false,
    progress: false,
    ...extra,
  });
  return { folder, summary };
}

function png(path: string): { width: number; height: number; channels: number; data: Uint8Array } {
  const im = decode(Deno.readFileSync(path));
  return { width: im.width, height: im.height, channels: im.channels, data: im.data as Uint8Array };
}

async function files(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

/** x = z0 + v(z0, eps) for the first `B` pairs, recomputed from the UNet and text encoder. */
async function oneStepReference(
  ckpt: string,
  timestep: number,
  B: number,
): Promise<{ x: Float32Array; z1: Float32Array }> {
  const gpu = await testGpu();
  const unet = UNet2DConditionModel.create(gpu, TINY_UNET_CONFIG, 0);
  await loadModuleFile(unet, ckpt);
  const tok = await loadTokenizer(join(MODEL, "tokenizer"));
  const enc = await loadTextEncoder(gpu, join(MODEL, "text_encoder"));
  const n = 256;
  const z0 = new Float32Array(B * n), z1 = new Float32Array(B * n);
  for (let i = 0; i < B; i++) {
    const p = tinyPair(i, n);
    z0.set(f16BitsToF32(p.z0), i * n);
    z1.set(f16BitsToF32(p.z1), i * n);
  }
  const captions = Array.from({ length: B }, (_, i) => tinyCaption(i));
  const out = noGrad(() =>
    tidy(() => {
      // diffusers' rule: the mask reaches the encoder only where its config asks for it.
      const ctx = encodeCaptions(tok, enc, captions);
      return unet.forward(
        Tensor.from(gpu, z0, [B, 4, 8, 8]),
        Tensor.from(gpu, new Float32Array(B).fill(timestep), [B]),
        ctx,
      );
    })
  );
  const v = await out.toF32();
  out.dispose();
  unet.dispose();
  enc.dispose();
  return { x: z0.map((z, j) => z + v[j]), z1 };
}

function mse(a: Float32Array, b: Float32Array, from: number, to: number): number {
  let s = 0;
  for (let j = from; j < to; j++) s += (a[j] - b[j]) ** 2;
  return s / (to - from);
}

Deno.test("sample: euler with VAE writes samples, noise, latents, trajectories, captions, summary", async () => {
  await setup();
  const c = tinyConfig(MODEL, DATA);
  c.sampling.ckpt_path = join(TMP, "score_model_s11.safetensors");
  c.sampling.sample_N = 2;
  c.sampling.decode_noise = true;
  c.sampling.decode_latent = true;
  c.sampling.return_traj = true;
  const { folder, summary } = await run(c, "euler_vae");

  const names = ["sample_0.png", "sample_1.png", "sample_2.png"];
  assert.deepEqual(await files(join(folder, "samples")), names);
  assert.deepEqual(
    await files(join(folder, "noise")),
    names.map((f) => f.replace("sample", "noise")),
  );
  assert.deepEqual(
    await files(join(folder, "latent")),
    names.map((f) => f.replace("sample", "latent")),
  );
  assert.deepEqual(
    await files(join(folder, "traj")),
    names.map((f) => f.replace("sample", "traj")),
  );
  for (const f of names) {
    const im = png(join(folder, "samples", f));
    assert.deepEqual([im.width, im.height, im.channels], [16, 16, 3]); // vae_tiny upsamples 2x
  }
  // Three states (z0 and two steps) in one row, 2 px padding: 3 * (16 + 2) + 2 by 16 + 4.
  const traj = png(join(folder, "traj", "traj_1.png"));
  assert.deepEqual([traj.width, traj.height], [56, 20]);

  const captions = await Deno.readTextFile(join(folder, "caption.txt"));
  assert.equal(captions, [0, 1, 2].map((i) => tinyCaption(i) + "\n").join(""));

  const onDisk = JSON.parse(await Deno.readTextFile(join(folder, "summary.json")));
  assert.deepEqual(onDisk, JSON.parse(JSON.stringify(summary)));
  assert.equal(summary.sampler, "euler");
  assert.equal(summary.sample_N, 2);
  assert.equal(summary.nfe, 2);
  assert.deepEqual(summary.nfe_per_batch, [2, 2]);
  assert.equal(summary.num_samples, 3);
  assert.equal(summary.score_model.format, "safetensors");
  assert.equal(summary.timestep_orientation, "original");
  assert.ok(summary.seconds_per_image > 0 && summary.sampler_seconds_per_image > 0);
  assert.equal(summary.samples.length, 3);
  summary.samples.forEach((r, i) => {
    assert.equal(r.index, i);
    assert.equal(r.source_index, i);
    assert.equal(r.caption, tinyCaption(i));
    assert.ok(
      Number.isFinite(r.straightness) && r.straightness > 0,
      `straightness ${r.straightness}`,
    );
    assert.ok(r.mse_to_z1 !== null && Number.isFinite(r.mse_to_z1) && r.mse_to_z1 > 0);
  });
  const log = await Deno.readTextFile(join(folder, "sample.log"));
  assert.match(log, /load ckpt from .*score_model_s11\.safetensors/);
  assert.match(log, /NFE 2/);
});

Deno.test("sample: one Euler step equals z0 + UNet(z0, floor(999 eps)) with the captions' states", async () => {
  await setup();
  const ckpt = join(TMP, "score_model_s11.safetensors");
  const c = tinyConfig(MODEL, DATA);
  c.sampling.ckpt_path = ckpt;
  c.sampling.sample_N = 1;
  const { summary } = await run(c, "euler1");
  const ref = await oneStepReference(ckpt, 0, 3);
  summary.samples.forEach((r, i) => {
    const want = mse(ref.x, ref.z1, i * 256, (i + 1) * 256);
    assert.ok(
      Math.abs(r.mse_to_z1! - want) <= 1e-5 * want,
      `sample ${i}: ${r.mse_to_z1} vs ${want}`,
    );
    // One step is straight by construction.
    assert.ok(r.straightness < 1e-10, `straightness ${r.straightness}`);
  });
});

Deno.test("sample: checkpoint metadata timestep_orientation=pretrained uses 999 (1 - t)", async () => {
  await setup();
  const ckpt = join(TMP, "score_model_pre_s11.safetensors");
  const c = tinyConfig(MODEL, DATA);
  c.sampling.ckpt_path = ckpt;
  c.sampling.num_samples = 2;
  const { folder, summary } = await run(c, "pretrained");
  assert.equal(summary.timestep_orientation, "pretrained");
  const ref = await oneStepReference(
    ckpt,
    Math.fround(999 * Math.fround(1 - Math.fround(1e-3))),
    2,
  );
  summary.samples.forEach((r, i) => {
    const want = mse(ref.x, ref.z1, i * 256, (i + 1) * 256);
    assert.ok(
      Math.abs(r.mse_to_z1! - want) <= 1e-5 * want,
      `sample ${i}: ${r.mse_to_z1} vs ${want}`,
    );
  });
  assert.match(
    await Deno.readTextFile(join(folder, "sample.log")),
    /"pretrained" \(checkpoint metadata\)/,
  );
});

Deno.test("sample: rk45 from seeded noise without a VAE (identity codec), NFE reported", async () => {
  await setup();
  const c = tinyConfig(MODEL_NO_VAE, DATA);
  c.sampling.use_ode_sampler = "rk45";
  c.sampling.randz0 = "random";
  c.sampling.num_samples = 4; // more than the 3 pairs: captions cycle, as the original's loader
  c.sampling.batch_size = 4;
  c.sampling.decode_noise = true;
  const { folder, summary } = await run(c, "rk45", { odeTol: 1e-2 });
  assert.equal(summary.sampler, "rk45");
  assert.equal(summary.ode_tol, 1e-2);
  assert.equal(summary.sample_N, null);
  assert.equal(summary.nfe_per_batch.length, 1);
  for (const nfe of summary.nfe_per_batch) {
    // scipy's RK45: 2 evaluations to pick the first step, then 6 per step (first same as last).
    assert.ok(nfe >= 8 && (nfe - 2) % 6 === 0, `nfe ${nfe}`);
  }
  assert.equal(summary.score_model.format, "fresh");
  assert.equal(summary.mean_mse_to_z1, null);
  assert.deepEqual(summary.samples.map((r) => r.source_index), [0, 1, 2, 0]);
  const captions = (await Deno.readTextFile(join(folder, "caption.txt"))).split("\n");
  assert.deepEqual(captions, [0, 1, 2, 0].map(tinyCaption).concat([""]));
  const im = png(join(folder, "samples", "sample_3.png"));
  assert.deepEqual([im.width, im.height, im.channels], [8, 8, 4]); // latents as RGBA
  // noise_i is the identity decoding of philoxNormal(seed, i * 256, 256).
  const z = philoxNormal(c.seed, 3 * 256, 256);
  const [want] = identityDecode(z, 1, 4, 8, 8);
  assert.deepEqual(
    png(join(folder, "noise", "noise_3.png")).data,
    tensorToImage(want.data, 4, 8, 8),
  );
  const log = await Deno.readTextFile(join(folder, "sample.log"));
  assert.match(log, /totally random score model/);
  assert.match(log, /identity codec/);
});

Deno.test("sample: prompts given directly, pretrained UNet of the model folder", async () => {
  await setup();
  const c = tinyConfig(MODEL, DATA);
  c.diffusers.load_score_model = true;
  c.sampling.batch_size = 2;
  const prompts = ["a red bus", "two dogs on a beach", "sunset over the sea"];
  const { folder, summary } = await run(c, "prompts", { prompts });
  assert.equal(summary.inputs, "prompts");
  assert.equal(summary.score_model.format, "pretrained");
  assert.deepEqual(await files(join(folder, "samples")), [
    "sample_0.png",
    "sample_1.png",
    "sample_2.png",
  ]);
  assert.equal(await Deno.readTextFile(join(folder, "caption.txt")), prompts.join("\n") + "\n");
  assert.match(
    await Deno.readTextFile(join(folder, "sample.log")),
    /use pretrained diffusers score model/,
  );
});

Deno.test("sample: Euler with sigma_var > 0 is seeded (same run, same samples)", async () => {
  await setup();
  const c = tinyConfig(MODEL_NO_VAE, DATA);
  c.sampling.sample_N = 3;
  c.sampling.num_samples = 2;
  const a = await runSample({
    gpu: await testGpu(),
    config: c,
    evalFolder: join(TMP, "out", "sde_a"),
    sigmaVar: 0.5,
    console: false,
    progress: false,
  });
  const b = await runSample({
    gpu: await testGpu(),
    config: c,
    evalFolder: join(TMP, "out", "sde_b"),
    sigmaVar: 0.5,
    console: false,
    progress: false,
  });
  const plain = await run(c, "sde_plain");
  assert.deepEqual(a.samples.map((r) => r.mse_to_z1), b.samples.map((r) => r.mse_to_z1));
  assert.notDeepEqual(
    a.samples.map((r) => r.mse_to_z1),
    plain.summary.samples.map((r) => r.mse_to_z1),
  );
});

// ---------------------------------------------------------------- bad input

Deno.test("sample errors: checkpoint that does not fit the UNet config names key and shapes", async () => {
  await setup();
  const c = tinyConfig(MODEL, DATA);
  // unet_tiny has block_out_channels [8, 16]: every shape differs.
  c.sampling.ckpt_path = join(SAMPLE_FIXTURES, "score_model_s7.pth");
  await assert.rejects(
    () => run(c, "bad_shape"),
    /does not fit the UNet config .*unet[\\/]config\.json.*"[a-z_.0-9]+" has shape \[[0-9,]+\], the model expects \[[0-9,]+\]/,
  );
});

Deno.test("sample errors: missing keys are refused unless allow_missing_keys (then logged)", async () => {
  await setup();
  const gpu = await testGpu();
  const unet = UNet2DConditionModel.create(gpu, TINY_UNET_CONFIG, 11);
  // A checkpoint without conv_out: save a module whose parameters lack it.
  const partial = {
    namedParameters: () => unet.namedParameters().filter(([k]) => !k.startsWith("conv_out.")),
  } as unknown as UNet2DConditionModel;
  const path = join(TMP, "partial.safetensors");
  await saveModule(partial, path);
  unet.dispose();
  const c = tinyConfig(MODEL, DATA);
  c.sampling.ckpt_path = path;
  c.sampling.num_samples = 1;
  await assert.rejects(
    () => run(c, "missing"),
    /2 parameter\(s\) missing from the file: conv_out\.weight, conv_out\.bias.*allow_missing_keys/,
  );
  c.sampling.allow_missing_keys = true;
  const { folder } = await run(c, "missing_ok");
  assert.match(
    await Deno.readTextFile(join(folder, "sample.log")),
    /2 parameter\(s\) missing from the checkpoint keep their initial values: conv_out\.weight, conv_out\.bias/,
  );
});

Deno.test("sample errors: unwritable eval folder, sample_N < 1, unknown sampler, too many samples", async () => {
  await setup();
  const c = tinyConfig(MODEL, DATA);
  const file = join(TMP, "a_file");
  await Deno.writeTextFile(file, "x");
  const gpu = await testGpu();
  const go = (config: SampleConfig, evalFolder = join(TMP, "out", "err")) =>
    runSample({ gpu, config, evalFolder, console: false, progress: false });
  await assert.rejects(
    () => go(c, join(file, "sub")),
    /--eval_folder: ".*a_file[\\/]sub" cannot be written/,
  );

  const n0 = tinyConfig(MODEL, DATA);
  n0.sampling.sample_N = 0;
  await assert.rejects(() => go(n0), /config\.sampling\.sample_N: must be an integer >= 1, got 0/);

  const heun = tinyConfig(MODEL, DATA);
  (heun.sampling as { use_ode_sampler: string }).use_ode_sampler = "heun";
  await assert.rejects(() => go(heun), /config\.sampling\.use_ode_sampler: unknown sampler "heun"/);

  const many = tinyConfig(MODEL, DATA);
  many.sampling.num_samples = 10;
  await assert.rejects(
    () => go(many),
    /config\.sampling\.num_samples = 10 is larger than the 3 pairs of .*randz0 = "fix"/,
  );

  const rk = tinyConfig(MODEL, DATA);
  rk.sampling.use_ode_sampler = "rk45";
  await assert.rejects(
    () =>
      runSample({
        gpu,
        config: rk,
        evalFolder: join(TMP, "out", "err"),
        sigmaVar: 1,
        console: false,
        progress: false,
      }),
    /sigma_var = 1 applies to the euler sampler only/,
  );

  const noData = tinyConfig(MODEL, join(TMP, "nowhere"));
  await assert.rejects(() => go(noData), /config\.data\.eval_root:/);

  const noCkpt = tinyConfig(MODEL, DATA);
  noCkpt.sampling.ckpt_path = join(TMP, "score_model_s404.pth");
  await assert.rejects(
    () => go(noCkpt),
    /config\.sampling\.ckpt_path: ".*score_model_s404\.pth" does not exist/,
  );
});

// ---------------------------------------------------------------- command line

async function cli(args: string[]): Promise<{ code: number; stderr: string }> {
  const script = new URL("../../scripts/sample.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    cwd: new URL("../..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("sample CLI: overrides and repeated --prompt", async () => {
  await setup();
  const folder = join(TMP, "out", "cli");
  const common = [
    "--config",
    "configs/sample.ts",
    "--eval_folder",
    folder,
    `--config.diffusers.ckpt_path=${MODEL}`,
    `--config.data.eval_root=${DATA}`,
    "--config.data.image_size=8",
    "--config.sampling.ckpt_path=",
  ];
  const ok = await cli([
    ...common,
    "--config.sampling.sample_N=2",
    "--prompt",
    "a cat",
    "--prompt=a dog",
  ]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(await Deno.readTextFile(join(folder, "caption.txt")), "a cat\na dog\n");
  const summary = JSON.parse(await Deno.readTextFile(join(folder, "summary.json")));
  assert.equal(summary.nfe, 2);

  const bad = await cli([...common, "--config.sampling.use_ode_sampler=heun"]);
  assert.equal(bad.code, 1);
  assert.match(
    bad.stderr,
    /config\.sampling\.use_ode_sampler.*"heun" is not one of "euler", "rk45"/,
  );
  const zero = await cli([...common, "--config.sampling.sample_N=0"]);
  assert.equal(zero.code, 1);
  assert.match(zero.stderr, /config\.sampling\.sample_N": 0 is out of range: it must be >= 1/);
});
