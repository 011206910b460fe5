/**
 * The settings, models and inputs of the `sample` job (run_sample.ts): its options and summary
 * record types, the settings check, model loading, seeded noise and the prompts file.
 *
 * @module
 */

import { join } from "node:path";
import type { Gpu } from "../gpu/device.ts";
import type { SampleConfig } from "../../configs/sample.ts";
import { loadTextEncoder, loadVae } from "../models/diffusers_folder.ts";
import type { AutoencoderKL } from "../models/autoencoder_kl.ts";
import type { TextEncoder } from "../models/text_encoders.ts";
import type { TextTokenizer } from "../models/tokenizers/types.ts";
import { loadTokenizer } from "../models/tokenizers/load.ts";
import { philoxNormal } from "../tensor/philox.ts";
import type { Progress } from "../util/progress.ts";
import { loadScoreModel, type ScoreModel } from "./score_model.ts";
import { DEFAULT_ODE_TOL, type SamplerName, SAMPLERS } from "../flow/sample_batch.ts";
import type { Shard } from "../distributed/shard.ts";

/** The original's RectifiedFlow defaults, which its sample config does not expose. */
export { DEFAULT_ODE_TOL };
export const DEFAULT_SIGMA_VAR = 0;

/** The frozen models of a sampling run. */
export interface SampleModels {
  tokenizer: TextTokenizer;
  textEncoder: TextEncoder;
  /** null: the model folder has no VAE; images come from the identity codec (core/flow/images.ts). */
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
export async function prepareEvalFolder(folder: string, subdirs: string[]): Promise<void> {
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

/** A progress display that shows nothing. */
export function noProgress(): Progress {
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
