/**
 * The `sample` job (the original's `reflow_sample.py`): draw samples from a trained rectified-flow
 * student and write them to the eval folder:
 *
 * ```
 * <eval_folder>/sample.log               the log (config, models, per-batch lines)
 * <eval_folder>/caption.txt              one caption a line, in sample order
 * <eval_folder>/samples/sample_{i}.png   decoded samples
 * <eval_folder>/noise/noise_{i}.png      decoded z0 (sampling.decode_noise)
 * <eval_folder>/latent/latent_{i}.png    decoded teacher z1 (sampling.decode_latent, data set only)
 * <eval_folder>/traj/traj_{i}.png        decoded states along the path, one row (sampling.return_traj)
 * <eval_folder>/summary.json             NFE, time per image, straightness, distance to z1
 * ```
 *
 * Split among ranks (`shard`, from mpirun/srun; core/distributed/shard.ts), rank r samples its
 * contiguous share of the indices and writes `sample.rank{r}.log`, `caption.rank{r}.txt` (its
 * captions, in index order), `summary.rank{r}.json` and `manifest/rank{r}.json`; the image files
 * keep their global index. Euler sampling depends only on (seed, index); RK45's steps adapt to the
 * whole batch, as with any change of batch size.
 *
 * Inputs: the first `num_samples` pairs of `data.eval_root` in order, in batches of
 * `sampling.batch_size` (the last batch may be smaller), with their captions and either their
 * stored z0 (`randz0 = fix`) or fresh seeded noise (`random`; the captions then cycle over the
 * data set when `num_samples` exceeds it, as the original's cycling loader does); or prompts given
 * directly, each sampled once from seeded noise. Seeded noise of sample i is
 * philoxNormal(seed, i·C·H·W, C·H·W) · init_noise_scale: it depends only on (seed, i), never on
 * the batch size.
 *
 * Differences from the original, on purpose: `decode_noise` decodes the z0 actually used (the
 * original decodes the stored noise even when it samples from fresh noise); captions are written
 * as stored (the original re-decodes them from token ids, which cuts long captions); output
 * folders are made only when used; files are written atomically.
 *
 * @module
 */

import { join } from "node:path";
import type { Gpu } from "../gpu/device.ts";
import type { SampleConfig } from "../../configs/sample.ts";
import { formatConfig } from "../config/overrides.ts";
import { checkLatentSize } from "../models/unet2d_condition.ts";
import { openPairDataset, type PairDataset } from "../data/dataset.ts";
import { writeFileAtomic } from "../data/atomic_write.ts";
import { type ImageTensor, makeGrid, saveImage } from "../io/png.ts";
import { philoxNormal } from "../tensor/philox.ts";
import { createLogger, type Logger } from "../util/log.ts";
import { createProgress } from "../util/progress.ts";
import type { ScoreModel } from "./score_model.ts";
import { decodeToImages } from "../flow/images.ts";
import { encodeCaptions } from "../flow/captions.ts";
import {
  type BatchSampleResult,
  type BatchSamplerOptions,
  sampleBatch,
  type SamplerName,
} from "../flow/sample_batch.ts";
import { perSampleMse } from "../flow/straightness.ts";
import { indexRuns, type Shard, shardRange, writeRankManifest } from "../distributed/shard.ts";
import {
  checkSampleSettings,
  DEFAULT_ODE_TOL,
  DEFAULT_SIGMA_VAR,
  disposeSampleModels,
  loadSampleModels,
  noProgress,
  prepareEvalFolder,
  type SampleJobOptions,
  type SampleModels,
  type SampleRecord,
  type SampleSummary,
  seededNoise,
} from "./sample_setup.ts";

/** Counter offset where the SDE sampler's per-step noise starts (far from the z0 draws). */
const SDE_NOISE_OFFSET = 2 ** 51;

function splitBatch(x: Float32Array, n: number): Float32Array[] {
  return Array.from({ length: x.length / n }, (_, b) => x.subarray(b * n, (b + 1) * n));
}

/** A sample run's settings, models and inputs, as {@link runSample}'s steps share them. */
interface SampleRun {
  gpu: Gpu;
  config: SampleConfig;
  evalFolder: string;
  log: Logger;
  models: SampleModels;
  /** The eval data set, or null when sampling prompts. */
  data: PairDataset | null;
  prompts: string[] | null;
  /** Samples of the whole job, and this rank's range [lo, hi) of them. */
  total: number;
  lo: number;
  hi: number;
  shard: Shard;
  shape: [number, number, number];
  /** Values per latent (C·H·W). */
  n: number;
  sampler: SamplerName;
  sigmaVar: number;
  odeTol: number;
  adapter: string;
}

/** What the batches produced so far. */
interface SampleTally {
  captions: string[];
  records: SampleRecord[];
  nfePerBatch: number[];
  samplerSeconds: number;
  /** Wall time of the sampling loop, seconds. */
  loopSeconds: number;
}

/** One batch's inputs: samples [start, start + B). */
interface BatchInputs {
  start: number;
  B: number;
  captions: string[];
  /** Pair index of each sample in the eval data (null for prompts). */
  sources: (number | null)[];
  z0: Float32Array;
  /** The teacher's latents (randz0 = "fix" only). */
  z1: Float32Array | null;
}

/** A file name of this rank: files every rank would write get the rank in their name. */
function rankFile(shard: Shard, name: string, ext: string): string {
  return shard.worldSize > 1 ? `${name}.rank${shard.rank}.${ext}` : `${name}.${ext}`;
}

/**
 * Runs the sample job and writes its outputs; returns what `summary.json` holds.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { getConfig } from "../../configs/sample.ts";
 * import { Gpu } from "../gpu/device.ts";
 *
 * // the shipped student of the demo's teacher (3x12x12 pixels, no VAE), one Euler step
 * const config = getConfig();
 * config.diffusers.ckpt_path = "models/tiny_teacher";
 * config.sampling.ckpt_path = "models/tiny_student/unet/diffusion_pytorch_model.safetensors";
 * config.data.image_size = 12;
 * config.data.num_channels = 3;
 * const evalFolder = await Deno.makeTempDir(); // e.g. out/run1
 * const prompts = ["a red circle", "a blue square on the left"];
 * const gpu = await Gpu.open();
 * const quiet = { console: false, progress: false }; // the log still goes to sample.log
 * const summary = await runSample({ gpu, config, evalFolder, prompts, ...quiet });
 * console.log(summary.nfe, summary.seconds_per_image);
 * assert.equal(summary.nfe, 1);
 * assert.equal(summary.samples.length, 2);
 * const written = JSON.parse(await Deno.readTextFile(`${evalFolder}/summary.json`));
 * assert.equal(written.nfe, 1);
 * await Deno.remove(evalFolder, { recursive: true });
 * ```
 */
export async function runSample(opts: SampleJobOptions): Promise<SampleSummary> {
  const { config, evalFolder } = opts;
  const s = config.sampling;
  const sigmaVar = opts.sigmaVar ?? DEFAULT_SIGMA_VAR;
  const odeTol = opts.odeTol ?? DEFAULT_ODE_TOL;
  checkSampleSettings(config, { sigmaVar, odeTol });
  const prompts = opts.prompts && opts.prompts.length > 0 ? [...opts.prompts] : null;
  prompts?.forEach((p, i) => {
    if (/[\r\n]/.test(p)) throw new Error(`prompt ${i} contains a line break`);
  });

  const subdirs = ["samples"];
  if (s.decode_noise) subdirs.push("noise");
  if (s.decode_latent && !prompts) subdirs.push("latent");
  if (s.return_traj) subdirs.push("traj");
  await prepareEvalFolder(evalFolder, subdirs);

  const shard = opts.shard ?? { rank: 0, worldSize: 1 };
  const log = createLogger({
    file: join(evalFolder, rankFile(shard, "sample", "log")),
    console: opts.console ?? true,
  });
  // What this run opened itself, released however it ends.
  const owned: { data: PairDataset | null; models: SampleModels | null } = {
    data: null,
    models: null,
  };
  try {
    const settings = { prompts, shard, sigmaVar, odeTol };
    const run = await loadRun(opts, log, settings, owned);
    const tally = await sampleAll(run, opts.progress !== false);
    return await writeSummary(run, tally);
  } catch (e) {
    log.error((e as Error).message);
    throw e;
  } finally {
    await owned.data?.close();
    if (owned.models) disposeSampleModels(owned.models);
    log.close();
  }
}

/**
 * Logs the run's settings, opens its inputs (the prompts or `data.eval_root`), loads the models
 * (unless given) and checks the latent shape against the UNet.
 */
async function loadRun(
  opts: SampleJobOptions,
  log: Logger,
  settings: Pick<SampleRun, "prompts" | "shard" | "sigmaVar" | "odeTol">,
  owned: { data: PairDataset | null; models: SampleModels | null },
): Promise<SampleRun> {
  const { gpu, config } = opts;
  const s = config.sampling;
  log.info(`\n${formatConfig(config)}`);
  if (opts.comment) log.info(`comment : ${opts.comment}`);
  const adapter = gpu.describe();
  log.info(
    `adapter: ${adapter.description} (${adapter.vendor})${adapter.fallback ? " [software]" : ""}`,
  );
  if (config.device === "gpu" && adapter.fallback) {
    throw new Error(`config.device = "gpu" but the WebGPU adapter is a software fallback`);
  }
  const { data, total } = await openInputs(config, settings.prompts, log, owned);
  const models = opts.models ?? (owned.models = await loadSampleModels(gpu, config));
  logModels(config, models, log);
  const shape = await latentShape(config, models.score, data);
  const sampler = s.use_ode_sampler as SamplerName;
  log.info(
    sampler === "euler"
      ? `sampler euler, sample_N ${s.sample_N}, sigma_var ${settings.sigmaVar}`
      : `sampler rk45, ode_tol ${settings.odeTol}`,
  );
  log.info(`latent shape [${shape}], ${total} samples in batches of ${s.batch_size}`);
  const { shard } = settings;
  const [lo, hi] = shardRange(total, shard);
  if (shard.worldSize > 1) {
    log.info(`rank ${shard.rank} of ${shard.worldSize}: samples ${lo}..${hi - 1}`);
  }
  const n = shape[0] * shape[1] * shape[2];
  return {
    ...settings,
    gpu,
    config,
    evalFolder: opts.evalFolder,
    log,
    models,
    data,
    total,
    lo,
    hi,
    shape,
    n,
    sampler,
    adapter: adapter.description,
  };
}

/** The prompts, or the eval data set (kept in `owned`): their count and the log lines. */
async function openInputs(
  config: SampleConfig,
  prompts: string[] | null,
  log: Logger,
  owned: { data: PairDataset | null },
): Promise<{ data: PairDataset | null; total: number }> {
  const s = config.sampling;
  if (prompts) {
    log.info(
      `${prompts.length} prompt(s) given: sampling each once from seeded noise (seed ${config.seed}); ` +
        `data.eval_root and sampling.num_samples are not used`,
    );
    if (s.decode_latent) {
      log.warn("sampling.decode_latent: prompts have no teacher latent; skipped");
    }
    return { data: null, total: prompts.length };
  }
  let data: PairDataset;
  try {
    data = owned.data = await openPairDataset(config.data.eval_root);
  } catch (e) {
    throw new Error(`config.data.eval_root: ${(e as Error).message}`, { cause: e });
  }
  const total = s.num_samples;
  log.info(`${data.length} pairs in ${config.data.eval_root}`);
  if (data.length === 0) {
    throw new Error(`config.data.eval_root: ${config.data.eval_root} holds no pairs`);
  }
  if (s.randz0 === "fix" && total > data.length) {
    throw new Error(
      `config.sampling.num_samples = ${total} is larger than the ${data.length} pairs of ` +
        `${config.data.eval_root}; with randz0 = "fix" every sample needs its own stored z0`,
    );
  }
  return { data, total };
}

/** Logs how the score model was found and read, and the image codec. */
function logModels(config: SampleConfig, models: SampleModels, log: Logger): void {
  const { score, vae } = models;
  for (const line of score.notes) log.info(line);
  if (score.report && (score.report.missing.length || score.report.unexpected.length)) {
    log.warn(
      `checkpoint keys: ${score.report.missing.length} missing, ${score.report.unexpected.length} unexpected (allowed by config.sampling.allow_missing_keys)`,
    );
  }
  if (!vae) {
    log.info(
      `no VAE in ${config.diffusers.ckpt_path}: images are the latents themselves (identity codec: clamp(z / 0.18215 / 2 + 0.5, 0, 1))`,
    );
  }
}

/** The latent shape [C, H, W] (of the data, else of the config), checked against the UNet. */
async function latentShape(
  config: SampleConfig,
  score: ScoreModel,
  data: PairDataset | null,
): Promise<[number, number, number]> {
  const unetCfg = score.unet.config;
  const shape: [number, number, number] = data
    ? (await data.get(0)).shape
    : [config.data.num_channels, config.data.image_size, config.data.image_size];
  if (shape[0] !== unetCfg.in_channels) {
    throw new Error(
      `${
        data
          ? `config.data.eval_root: latents have ${shape[0]} channels`
          : `config.data.num_channels = ${shape[0]}`
      }` +
        `, the UNet (${score.configPath}) takes in_channels = ${unetCfg.in_channels}`,
    );
  }
  checkLatentSize(unetCfg, shape[1], shape[2]);
  return shape;
}

/** Samples this rank's range batch by batch, writing each batch's outputs as it goes. */
async function sampleAll(run: SampleRun, showProgress: boolean): Promise<SampleTally> {
  const { lo, hi } = run;
  const batchSize = run.config.sampling.batch_size;
  const bar = showProgress
    ? createProgress({ total: hi - lo, label: "Samples", unit: "img" })
    : noProgress();
  const tally: SampleTally = {
    captions: [],
    records: [],
    nfePerBatch: [],
    samplerSeconds: 0,
    loopSeconds: 0,
  };
  const t0 = performance.now();
  try {
    for (let start = lo; start < hi; start += batchSize) {
      const inputs = await batchInputs(run, start, Math.min(batchSize, hi - start));
      await writeInputImages(run, inputs);
      const result = await sampleInputs(run, inputs);
      tally.samplerSeconds += result.seconds;
      tally.nfePerBatch.push(result.nfe);
      await writeBatchOutputs(run, inputs, result, tally);
      bar.increment(inputs.B, { nfe: result.nfe });
    }
  } finally {
    bar.stop();
  }
  tally.loopSeconds = (performance.now() - t0) / 1000;
  return tally;
}

/** Captions, sources, z0 (stored or seeded) and z1 of samples [start, start + B). */
async function batchInputs(run: SampleRun, start: number, B: number): Promise<BatchInputs> {
  const { config, data, shape, n } = run;
  const s = config.sampling;
  const order = Array.from({ length: B }, (_, k) => start + k);
  if (!data) {
    return {
      start,
      B,
      captions: run.prompts!.slice(start, start + B),
      sources: order.map(() => null),
      z0: seededNoise(config.seed, start, B, n, s.init_noise_scale),
      z1: null,
    };
  }
  const idx = order.map((i) => i % data.length);
  const batch = await data.getBatch(idx);
  if (batch.shape.some((d, j) => d !== shape[j])) {
    throw new Error(
      `config.data.eval_root: pair ${idx[0]} has shape [${batch.shape}], expected [${shape}]`,
    );
  }
  const fix = s.randz0 === "fix";
  return {
    start,
    B,
    captions: batch.captions,
    sources: idx,
    z0: fix ? batch.z0 : seededNoise(config.seed, start, B, n, s.init_noise_scale),
    z1: fix ? batch.z1 : null,
  };
}

/** noise/noise_{i}.png (sampling.decode_noise) and latent/latent_{i}.png (decode_latent). */
async function writeInputImages(run: SampleRun, inputs: BatchInputs): Promise<void> {
  const { gpu, shape, evalFolder } = run;
  const { models: { vae } } = run;
  const s = run.config.sampling;
  const { start, z0, z1 } = inputs;
  if (s.decode_noise) {
    const imgs = await decodeToImages(gpu, vae, z0, shape, s.batch_size);
    imgs.forEach((im, k) => saveImage(join(evalFolder, "noise", `noise_${start + k}.png`), im));
  }
  if (s.decode_latent && z1) {
    const imgs = await decodeToImages(gpu, vae, z1, shape, s.batch_size);
    imgs.forEach((im, k) => saveImage(join(evalFolder, "latent", `latent_${start + k}.png`), im));
  }
}

/** The student's flow from the batch's z0 (core/flow/sample_batch.ts). */
async function sampleInputs(run: SampleRun, inputs: BatchInputs): Promise<BatchSampleResult> {
  const { config, n, models } = run;
  const s = config.sampling;
  const { start, B } = inputs;
  const batchOpts: BatchSamplerOptions = {
    sampler: run.sampler,
    sampleN: s.sample_N,
    odeTol: run.odeTol,
    sigmaVar: run.sigmaVar,
    noiseScale: s.init_noise_scale,
    orientation: models.score.orientation,
    returnTrajectory: s.return_traj,
    stepNoise: (step, length) => {
      // Per sample and step, so the noise does not depend on the batch size either.
      const out = new Float32Array(length);
      for (let k = 0; k < B; k++) {
        const off = SDE_NOISE_OFFSET + ((start + k) * s.sample_N + step) * n;
        out.set(philoxNormal(config.seed, off, n), k * n);
      }
      return out;
    },
  };
  // As the teacher and the trainer encode them (the mask only where the encoder's config asks).
  const context = encodeCaptions(models.tokenizer, models.textEncoder, inputs.captions);
  try {
    return await sampleBatch(run.gpu, models.score.unet, context, inputs.z0, run.shape, batchOpts);
  } finally {
    context.dispose();
  }
}

/**
 * samples/sample_{i}.png, traj/traj_{i}.png (sampling.return_traj), the batch's records, the
 * captions file so far and the batch's log line.
 */
async function writeBatchOutputs(
  run: SampleRun,
  inputs: BatchInputs,
  result: BatchSampleResult,
  tally: SampleTally,
): Promise<void> {
  const { gpu, shape, n, evalFolder } = run;
  const { vae } = run.models;
  const batchSize = run.config.sampling.batch_size;
  const { start, B, captions, z1 } = inputs;
  const images = await decodeToImages(gpu, vae, result.x, shape, batchSize);
  images.forEach((im, k) => saveImage(join(evalFolder, "samples", `sample_${start + k}.png`), im));
  if (result.trajectory) {
    const states = result.trajectory.map((st) => splitBatch(st, n));
    for (let k = 0; k < B; k++) {
      const path = new Float32Array(states.length * n);
      states.forEach((st, j) => path.set(st[k], j * n));
      const frames: ImageTensor[] = await decodeToImages(gpu, vae, path, shape, batchSize);
      saveImage(
        join(evalFolder, "traj", `traj_${start + k}.png`),
        makeGrid(frames, frames.length, 2),
      );
    }
  }
  const mse = z1 ? perSampleMse(result.x, z1, B, n) : null;
  captions.forEach((caption, k) => {
    tally.records.push({
      index: start + k,
      caption,
      source_index: inputs.sources[k],
      nfe: result.nfe,
      straightness: result.straightness[k],
      mse_to_z1: mse ? mse[k] : null,
    });
  });
  tally.captions.push(...captions);
  await writeFileAtomic(
    join(evalFolder, rankFile(run.shard, "caption", "txt")),
    new TextEncoder().encode(tally.captions.map((c) => c + "\n").join("")),
  );
  const meanS = result.straightness.reduce((a, b) => a + b, 0) / B;
  run.log.info(
    `samples ${start}..${start + B - 1} | NFE ${result.nfe} | straightness ${
      meanS.toExponential(4)
    }` +
      (mse ? ` | mse_to_z1 ${(mse.reduce((a, b) => a + b, 0) / B).toExponential(4)}` : "") +
      ` | ${result.seconds.toFixed(2)} s`,
  );
}

/** summary.json (and this rank's manifest when the job is split), and the closing log line. */
async function writeSummary(run: SampleRun, tally: SampleTally): Promise<SampleSummary> {
  const { config, sampler, lo, hi, shard, evalFolder, models: { score } } = run;
  const s = config.sampling;
  const { records, loopSeconds } = tally;
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const mses = records.map((r) => r.mse_to_z1).filter((v): v is number => v !== null);
  const summary: SampleSummary = {
    sampler,
    sample_N: sampler === "euler" ? s.sample_N : null,
    ode_tol: sampler === "rk45" ? run.odeTol : null,
    sigma_var: run.sigmaVar,
    timestep_orientation: score.orientation,
    score_model: { format: score.format, weights: score.weightsPath, config: score.configPath },
    inputs: run.prompts ? "prompts" : "eval_data",
    randz0: run.prompts ? "random" : s.randz0,
    num_samples: run.total,
    batch_size: s.batch_size,
    latent_shape: run.shape,
    nfe: mean(tally.nfePerBatch),
    nfe_per_batch: tally.nfePerBatch,
    seconds_per_image: loopSeconds / Math.max(1, hi - lo),
    sampler_seconds_per_image: tally.samplerSeconds / Math.max(1, hi - lo),
    mean_straightness: mean(records.map((r) => r.straightness)),
    mean_mse_to_z1: mses.length ? mean(mses) : null,
    samples: records,
    adapter: run.adapter,
  };
  await writeFileAtomic(
    join(evalFolder, rankFile(shard, "summary", "json")),
    new TextEncoder().encode(JSON.stringify(summary, null, 2) + "\n"),
  );
  if (shard.worldSize > 1) {
    await writeRankManifest(evalFolder, {
      job: "sample",
      rank: shard.rank,
      world_size: shard.worldSize,
      range: [lo, hi],
      written: indexRuns(records.map((r) => r.index)),
      kept: [],
      details: { adapter: run.adapter, seconds: loopSeconds },
    });
  }
  run.log.info(
    `done: ${run.total} samples, NFE ${summary.nfe}, ${
      summary.seconds_per_image.toFixed(3)
    } s/image, ` +
      `mean straightness ${summary.mean_straightness.toExponential(4)}` +
      (summary.mean_mse_to_z1 !== null
        ? `, mean mse_to_z1 ${summary.mean_mse_to_z1.toExponential(4)}`
        : ""),
  );
  return summary;
}
