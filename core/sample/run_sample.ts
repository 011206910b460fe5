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
 * ```
 * ```
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

import { encodeCaptions } from "../generate/teacher.ts";
import { join } from "node:path";
import type { Gpu } from "../gpu/device.ts";
import type { Tensor } from "../tensor/tensor.ts";
import type { SampleConfig } from "../../configs/sample.ts";
import { formatConfig } from "../config/overrides.ts";
import { loadTextEncoder, loadVae } from "../models/diffusers_folder.ts";
import type { AutoencoderKL } from "../models/autoencoder_kl.ts";
import type { TextEncoder } from "../models/text_encoders.ts";
import type { TextTokenizer } from "../models/tokenizers/types.ts";
import { loadTokenizer } from "../models/tokenizers/load.ts";
import { checkLatentSize } from "../models/unet2d_condition.ts";
import { openPairDataset, type PairDataset } from "../data/dataset.ts";
import { writeFileAtomic } from "../data/atomic_write.ts";
import { type ImageTensor, makeGrid, saveImage } from "../io/png.ts";
import { philoxNormal } from "../tensor/philox.ts";
import { createLogger } from "../util/log.ts";
import { createProgress, type Progress } from "../util/progress.ts";
import { loadScoreModel, type ScoreModel } from "./score_model.ts";
import { decodeToImages } from "../flow/images.ts";
import { type BatchSamplerOptions, sampleBatch, type SamplerName, SAMPLERS } from "./sampler.ts";
import { perSampleMse } from "./path_stats.ts";
import { indexRuns, type Shard, shardRange, writeRankManifest } from "../distributed/shard.ts";

/** The original's RectifiedFlow defaults, which its sample config does not expose. */
export const DEFAULT_ODE_TOL = 1e-5;
export const DEFAULT_SIGMA_VAR = 0;

/** Counter offset where the SDE sampler's per-step noise starts (far from the z0 draws). */
const SDE_NOISE_OFFSET = 2 ** 51;

/** The frozen models of a sampling run. */
export interface SampleModels {
  tokenizer: TextTokenizer;
  textEncoder: TextEncoder;
  /** null: the model folder has no VAE; images come from the identity codec (decode.ts). */
  vae: AutoencoderKL | null;
  score: ScoreModel;
}

/** Everything {@link runSample} needs. */
export interface SampleJobOptions {
  gpu: Gpu;
  config: SampleConfig;
  /** Output folder (`--eval_folder`). */
  evalFolder: string;
  /** Prompts to sample instead of the eval data set (`--prompt`, `--prompts_file`). */
  prompts?: readonly string[] | null;
  /** Euler SDE variance (the original's `sigma_var`; default 0). */
  sigmaVar?: number;
  /** RK45 tolerance (the original's `ode_tol`; default 1e-5). */
  odeTol?: number;
  /** A note on the run, logged. */
  comment?: string;
  /** Echo log lines to stderr (default true). */
  console?: boolean;
  /** Show a progress bar / progress lines on stderr (default true). */
  progress?: boolean;
  /** Models already loaded (they are not disposed); default: loaded from the config. */
  models?: SampleModels;
  /** This rank's share of the samples when several machines split the job (default: all). */
  shard?: Shard;
}

/** One sample's record in `summary.json`. */
export interface SampleRecord {
  index: number;
  caption: string;
  /** Pair index in the eval data set (null for prompts). */
  source_index: number | null;
  /** Velocity evaluations of its batch. */
  nfe: number;
  straightness: number;
  /** Mean squared distance to the teacher's z1 (randz0 = fix only), else null. */
  mse_to_z1: number | null;
}

/** The contents of `summary.json`. */
export interface SampleSummary {
  sampler: SamplerName;
  sample_N: number | null;
  ode_tol: number | null;
  sigma_var: number;
  timestep_orientation: string;
  score_model: { format: string; weights: string | null; config: string };
  inputs: "eval_data" | "prompts";
  randz0: string;
  num_samples: number;
  batch_size: number;
  latent_shape: [number, number, number];
  /** Velocity evaluations per sample, averaged over batches. */
  nfe: number;
  nfe_per_batch: number[];
  /** Wall time of the sampling loop (sampling, decoding, writing) per image, seconds. */
  seconds_per_image: number;
  /** Integration time alone per image, seconds. */
  sampler_seconds_per_image: number;
  mean_straightness: number;
  mean_mse_to_z1: number | null;
  samples: SampleRecord[];
  adapter: string;
}

/** Checks the settings the job reads; throws naming the setting. */
export function checkSampleSettings(
  config: SampleConfig,
  extra: { sigmaVar: number; odeTol: number },
): void {
  const s = config.sampling;
  const err = (key: string, msg: string) => new Error(`config.sampling.${key}: ${msg}`);
  if (!(SAMPLERS as readonly string[]).includes(s.use_ode_sampler)) {
    throw err(
      "use_ode_sampler",
      `unknown sampler "${s.use_ode_sampler}" (one of ${SAMPLERS.map((x) => `"${x}"`).join(", ")})`,
    );
  }
  if (!Number.isInteger(s.sample_N) || s.sample_N < 1) {
    throw err("sample_N", `must be an integer >= 1, got ${s.sample_N}`);
  }
  if (!Number.isInteger(s.batch_size) || s.batch_size < 1) {
    throw err("batch_size", `must be an integer >= 1, got ${s.batch_size}`);
  }
  if (!Number.isInteger(s.num_samples) || s.num_samples < 1) {
    throw err("num_samples", `must be an integer >= 1, got ${s.num_samples}`);
  }
  if (s.randz0 !== "fix" && s.randz0 !== "random") {
    throw err("randz0", `"${s.randz0}" is not "fix" or "random"`);
  }
  if (s.method !== "rectified_flow") {
    throw err("method", `"${s.method}" is unknown (only "rectified_flow")`);
  }
  if (s.init_type !== "gaussian") {
    throw err("init_type", `"${s.init_type}" is not implemented (only "gaussian")`);
  }
  if (!(s.init_noise_scale > 0)) {
    throw err("init_noise_scale", `must be > 0, got ${s.init_noise_scale}`);
  }
  if (!(extra.sigmaVar >= 0) || !Number.isFinite(extra.sigmaVar)) {
    throw new Error(`sigma_var must be a finite number >= 0, got ${extra.sigmaVar}`);
  }
  if (extra.sigmaVar > 0 && s.use_ode_sampler !== "euler") {
    throw new Error(`sigma_var = ${extra.sigmaVar} applies to the euler sampler only`);
  }
  if (!(extra.odeTol > 0) || !Number.isFinite(extra.odeTol)) {
    throw new Error(`ode_tol must be a finite number > 0, got ${extra.odeTol}`);
  }
}

async function isDir(path: string): Promise<boolean> {
  return await Deno.stat(path).then((s) => s.isDirectory, () => false);
}

/**
 * Loads the tokenizer, text encoder and VAE (when present) of `diffusers.ckpt_path` and the score
 * model of `sampling.ckpt_path` (see score_model.ts).
 */
export async function loadSampleModels(gpu: Gpu, config: SampleConfig): Promise<SampleModels> {
  const dir = config.diffusers.ckpt_path;
  if (!(await isDir(dir))) {
    throw new Error(`config.diffusers.ckpt_path: model folder "${dir}" does not exist`);
  }
  const score = await loadScoreModel(gpu, {
    modelDir: dir,
    ckptPath: config.sampling.ckpt_path,
    loadPretrained: config.diffusers.load_score_model,
    allowMissingKeys: config.sampling.allow_missing_keys,
    seed: config.seed,
    orientation: config.training.timestep_orientation,
  });
  try {
    const tokenizer = await loadTokenizer(join(dir, "tokenizer"));
    const textEncoder = await loadTextEncoder(gpu, join(dir, "text_encoder"));
    const vaeDir = join(dir, "vae");
    const vae = (await isDir(vaeDir)) ? await loadVae(gpu, vaeDir) : null;
    vae?.requiresGrad(false);
    score.unet.requiresGrad(false);
    return { tokenizer, textEncoder, vae, score };
  } catch (e) {
    score.unet.dispose();
    throw e;
  }
}

/** Seeded z0 of samples [start, start + count): philoxNormal(seed, i·n, n) · scale each. */
export function seededNoise(
  seed: number,
  start: number,
  count: number,
  n: number,
  scale: number,
): Float32Array {
  const out = new Float32Array(count * n);
  for (let k = 0; k < count; k++) {
    const offset = (start + k) * n;
    if (!Number.isSafeInteger(offset + n)) {
      throw new Error(`noise offset of sample ${start + k} exceeds the safe integer range`);
    }
    const z = philoxNormal(seed, offset, n);
    for (let j = 0; j < n; j++) out[k * n + j] = z[j] * scale;
  }
  return out;
}

/** Makes the eval folder and checks that it can be written, naming it otherwise. */
async function prepareEvalFolder(folder: string, subdirs: string[]): Promise<void> {
  try {
    await Deno.mkdir(folder, { recursive: true });
    for (const d of subdirs) await Deno.mkdir(join(folder, d), { recursive: true });
    const probe = join(folder, `.write_test.${Deno.pid}`);
    await Deno.writeFile(probe, new Uint8Array(1));
    await Deno.remove(probe);
  } catch (e) {
    throw new Error(`--eval_folder: "${folder}" cannot be written: ${(e as Error).message}`, {
      cause: e,
    });
  }
}

function noProgress(): Progress {
  let value = 0;
  return {
    update(v: number) {
      value = v;
    },
    increment(d = 1) {
      value += d;
    },
    stop() {},
    get value() {
      return value;
    },
  };
}

function encodePrompts(models: SampleModels, captions: string[]): Tensor {
  // As the teacher and the trainer encode them (the mask only where the encoder's config asks).
  return encodeCaptions(models.tokenizer, models.textEncoder, captions);
}

function splitBatch(x: Float32Array, n: number): Float32Array[] {
  return Array.from({ length: x.length / n }, (_, b) => x.subarray(b * n, (b + 1) * n));
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
  const { gpu, config, evalFolder } = opts;
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
  // Files every rank would write get the rank in their name (issue 14).
  const own = (name: string, ext: string) =>
    shard.worldSize > 1 ? `${name}.rank${shard.rank}.${ext}` : `${name}.${ext}`;
  const log = createLogger({
    file: join(evalFolder, own("sample", "log")),
    console: opts.console ?? true,
  });
  let data: PairDataset | null = null;
  let ownModels: SampleModels | null = null;
  try {
    log.info(`\n${formatConfig(config)}`);
    if (opts.comment) log.info(`comment : ${opts.comment}`);
    const adapter = gpu.describe();
    log.info(
      `adapter: ${adapter.description} (${adapter.vendor})${adapter.fallback ? " [software]" : ""}`,
    );
    if (config.device === "gpu" && adapter.fallback) {
      throw new Error(`config.device = "gpu" but the WebGPU adapter is a software fallback`);
    }

    // Inputs: their count and where captions / z0 / z1 come from.
    let total: number;
    if (prompts) {
      total = prompts.length;
      log.info(
        `${total} prompt(s) given: sampling each once from seeded noise (seed ${config.seed}); ` +
          `data.eval_root and sampling.num_samples are not used`,
      );
      if (s.decode_latent) {
        log.warn("sampling.decode_latent: prompts have no teacher latent; skipped");
      }
    } else {
      try {
        data = await openPairDataset(config.data.eval_root);
      } catch (e) {
        throw new Error(`config.data.eval_root: ${(e as Error).message}`, { cause: e });
      }
      total = s.num_samples;
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
    }

    const models = opts.models ?? (ownModels = await loadSampleModels(gpu, config));
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

    const unetCfg = score.unet.config;
    let shape: [number, number, number];
    if (data) {
      shape = (await data.get(0)).shape;
    } else shape = [config.data.num_channels, config.data.image_size, config.data.image_size];
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
    const n = shape[0] * shape[1] * shape[2];
    const sampler = s.use_ode_sampler as SamplerName;
    log.info(
      sampler === "euler"
        ? `sampler euler, sample_N ${s.sample_N}, sigma_var ${sigmaVar}`
        : `sampler rk45, ode_tol ${odeTol}`,
    );
    log.info(`latent shape [${shape}], ${total} samples in batches of ${s.batch_size}`);
    const [lo, hi] = shardRange(total, shard);
    if (shard.worldSize > 1) {
      log.info(`rank ${shard.rank} of ${shard.worldSize}: samples ${lo}..${hi - 1}`);
    }

    const bar = opts.progress === false
      ? noProgress()
      : createProgress({ total: hi - lo, label: "Samples", unit: "img" });
    const captionsOut: string[] = [];
    const records: SampleRecord[] = [];
    const nfePerBatch: number[] = [];
    let samplerSeconds = 0;
    const t0 = performance.now();
    try {
      for (let start = lo; start < hi; start += s.batch_size) {
        const B = Math.min(s.batch_size, hi - start);
        const order = Array.from({ length: B }, (_, k) => start + k);
        let captions: string[];
        let sources: (number | null)[];
        let z0: Float32Array;
        let z1: Float32Array | null = null;
        if (data) {
          const idx = order.map((i) => i % data!.length);
          const batch = await data.getBatch(idx);
          if (batch.shape.some((d, j) => d !== shape[j])) {
            throw new Error(
              `config.data.eval_root: pair ${
                idx[0]
              } has shape [${batch.shape}], expected [${shape}]`,
            );
          }
          captions = batch.captions;
          sources = idx;
          if (s.randz0 === "fix") {
            z0 = batch.z0;
            z1 = batch.z1;
          } else z0 = seededNoise(config.seed, start, B, n, s.init_noise_scale);
        } else {
          captions = prompts!.slice(start, start + B);
          sources = order.map(() => null);
          z0 = seededNoise(config.seed, start, B, n, s.init_noise_scale);
        }

        if (s.decode_noise) {
          const imgs = await decodeToImages(gpu, vae, z0, shape, s.batch_size);
          imgs.forEach((im, k) =>
            saveImage(join(evalFolder, "noise", `noise_${start + k}.png`), im)
          );
        }
        if (s.decode_latent && z1) {
          const imgs = await decodeToImages(gpu, vae, z1, shape, s.batch_size);
          imgs.forEach((im, k) =>
            saveImage(join(evalFolder, "latent", `latent_${start + k}.png`), im)
          );
        }

        const batchOpts: BatchSamplerOptions = {
          sampler,
          sampleN: s.sample_N,
          odeTol,
          sigmaVar,
          noiseScale: s.init_noise_scale,
          orientation: score.orientation,
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
        const context = encodePrompts(models, captions);
        let result;
        try {
          result = await sampleBatch(gpu, score.unet, context, z0, shape, batchOpts);
        } finally {
          context.dispose();
        }
        samplerSeconds += result.seconds;
        nfePerBatch.push(result.nfe);

        const images = await decodeToImages(gpu, vae, result.x, shape, s.batch_size);
        images.forEach((im, k) =>
          saveImage(join(evalFolder, "samples", `sample_${start + k}.png`), im)
        );
        if (result.trajectory) {
          const states = result.trajectory.map((st) => splitBatch(st, n));
          for (let k = 0; k < B; k++) {
            const path = new Float32Array(states.length * n);
            states.forEach((st, j) => path.set(st[k], j * n));
            const frames: ImageTensor[] = await decodeToImages(gpu, vae, path, shape, s.batch_size);
            saveImage(
              join(evalFolder, "traj", `traj_${start + k}.png`),
              makeGrid(frames, frames.length, 2),
            );
          }
        }

        const mse = z1 ? perSampleMse(result.x, z1, B, n) : null;
        captions.forEach((caption, k) => {
          records.push({
            index: start + k,
            caption,
            source_index: sources[k],
            nfe: result.nfe,
            straightness: result.straightness[k],
            mse_to_z1: mse ? mse[k] : null,
          });
        });
        captionsOut.push(...captions);
        await writeFileAtomic(
          join(evalFolder, own("caption", "txt")),
          new TextEncoder().encode(captionsOut.map((c) => c + "\n").join("")),
        );
        const meanS = result.straightness.reduce((a, b) => a + b, 0) / B;
        log.info(
          `samples ${start}..${start + B - 1} | NFE ${result.nfe} | straightness ${
            meanS.toExponential(4)
          }` +
            (mse ? ` | mse_to_z1 ${(mse.reduce((a, b) => a + b, 0) / B).toExponential(4)}` : "") +
            ` | ${result.seconds.toFixed(2)} s`,
        );
        bar.increment(B, { nfe: result.nfe });
      }
    } finally {
      bar.stop();
    }
    const loopSeconds = (performance.now() - t0) / 1000;

    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const mses = records.map((r) => r.mse_to_z1).filter((v): v is number => v !== null);
    const summary: SampleSummary = {
      sampler,
      sample_N: sampler === "euler" ? s.sample_N : null,
      ode_tol: sampler === "rk45" ? odeTol : null,
      sigma_var: sigmaVar,
      timestep_orientation: score.orientation,
      score_model: { format: score.format, weights: score.weightsPath, config: score.configPath },
      inputs: prompts ? "prompts" : "eval_data",
      randz0: prompts ? "random" : s.randz0,
      num_samples: total,
      batch_size: s.batch_size,
      latent_shape: shape,
      nfe: mean(nfePerBatch),
      nfe_per_batch: nfePerBatch,
      seconds_per_image: loopSeconds / Math.max(1, hi - lo),
      sampler_seconds_per_image: samplerSeconds / Math.max(1, hi - lo),
      mean_straightness: mean(records.map((r) => r.straightness)),
      mean_mse_to_z1: mses.length ? mean(mses) : null,
      samples: records,
      adapter: adapter.description,
    };
    await writeFileAtomic(
      join(evalFolder, own("summary", "json")),
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
        details: { adapter: adapter.description, seconds: loopSeconds },
      });
    }
    log.info(
      `done: ${total} samples, NFE ${summary.nfe}, ${
        summary.seconds_per_image.toFixed(3)
      } s/image, ` +
        `mean straightness ${summary.mean_straightness.toExponential(4)}` +
        (summary.mean_mse_to_z1 !== null
          ? `, mean mse_to_z1 ${summary.mean_mse_to_z1.toExponential(4)}`
          : ""),
    );
    return summary;
  } catch (e) {
    log.error((e as Error).message);
    throw e;
  } finally {
    await data?.close();
    if (ownModels) disposeSampleModels(ownModels);
    log.close();
  }
}

/** Releases the GPU memory of models loaded by {@link loadSampleModels}. */
export function disposeSampleModels(m: SampleModels): void {
  m.score.unet.dispose();
  m.textEncoder.dispose();
  m.vae?.dispose();
}

/** Reads a prompts file: one prompt a line; blank lines are skipped. */
export async function readPromptsFile(path: string): Promise<string[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`--prompts_file: cannot read ${path}: ${(e as Error).message}`);
  }
  const prompts = text.split("\n").map((l) => l.replace(/\r$/, "")).filter((l) => l.trim() !== "");
  if (prompts.length === 0) throw new Error(`--prompts_file: ${path} holds no prompt`);
  return prompts;
}
