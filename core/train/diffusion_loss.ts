/**
 * The diffusion objective of the train job (`training.objective = "diffusion"`): the UNet learns
 * Stable Diffusion's epsilon prediction, as diffusers' text-to-image fine-tuning does. For each
 * pair the clean latent is z1 and the noise is z0 (fresh noise with `training.randz0 = "random"`,
 * the usual choice); a training timestep t is drawn uniformly from [0, num_train_timesteps), and
 *
 *   x_t = sqrt(alphā_t) z1 + sqrt(1 - alphā_t) z0,   loss = mean((eps_theta(x_t, t, c) - z0)²)
 *
 * with alphā from the model folder's `scheduler/scheduler_config.json` (betas, beta schedule) —
 * the same table DPM-Solver samples with. Captions are replaced by the empty caption with
 * probability `captionDropout` (10% by default) so that classifier-free guidance has an
 * unconditional model to push away from.
 *
 * Sample grids drawn during training use the teacher pipeline of `generate` (DPM-Solver++ with
 * classifier-free guidance), so they show what `generate` will draw with these weights.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { shapeSample } from "../demo/shapes.ts";
 * import { Gpu } from "../gpu/device.ts";
 * import { loadDiffusersPipeline } from "../models/diffusers_folder.ts";
 * import { encodeCaptions } from "../flow/captions.ts";
 * import { noGrad } from "../tensor/autograd.ts";
 * import { CounterRng } from "./rng.ts";
 *
 * // the demo's teacher, trained with this objective on the shapes data set (3x12x12 pixels)
 * const gpu = await Gpu.open();
 * const pipe = await loadDiffusersPipeline(gpu, "models/tiny_teacher", { vae: false });
 * const { tokenizer, textEncoder, unet } = pipe;
 * const obj = await DiffusionObjective.fromModelDir("models/tiny_teacher");
 * const rng = new CounterRng(2333);
 * const B = 4, n = 3 * 12 * 12;
 * const pictures = [0, 1, 2, 3].map((i) => shapeSample(1, i));
 * const batch = {
 *   z0: rng.normals(rng.advance(B * n), B * n), // the noise
 *   z1: Float32Array.from(pictures.flatMap((p) => [...p.pixels])), // clean pictures
 *   shape: [B, 3, 12, 12] as const,
 *   context: encodeCaptions(tokenizer, textEncoder, pictures.map((p) => p.caption)),
 * };
 * const t = obj.timestepsAt(rng, rng.advance(B), B);
 * const loss = noGrad(() =>
 *   obj.loss(gpu, (x, ts, ctx) => unet.forward(x, ts, ctx), batch, t, true)
 * );
 * const [value] = await loss.toF32();
 * console.log(`timesteps ${t}: loss ${value}`);
 * assert.ok(value < 0.5); // predicting no noise at all would score about 1
 * ```
 *
 * @module
 */

import { join } from "node:path";
import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { tidy } from "../tensor/scope.ts";
import * as ops from "../ops.ts";
import { readJson } from "../models/diffusers_folder.ts";
import { alphasCumprod, type BetaSchedule, makeBetas } from "../schedulers/noise_schedule.ts";
import type { CounterRng } from "./rng.ts";
import type { LossBatch, VelocityFn } from "./reflow_loss.ts";

/** Default probability of training on the empty caption. */
export const DEFAULT_CAPTION_DROPOUT = 0.1;

/** The noise schedule and settings of the diffusion objective. */
export class DiffusionObjective {
  /** alphā_t for t = 0 .. num_train_timesteps - 1 (float32, as diffusers keeps it). */
  readonly alphasCumprod: Float32Array;

  constructor(
    alphasCumprod: Float32Array,
    /** Probability of replacing a caption with "". */
    readonly captionDropout = DEFAULT_CAPTION_DROPOUT,
    /** The scheduler config (sample grids run DPM-Solver with it). */
    readonly schedulerConfig: Record<string, unknown> = {},
  ) {
    if (!(captionDropout >= 0 && captionDropout <= 1)) {
      throw new Error(`caption dropout must be in [0, 1], got ${captionDropout}`);
    }
    this.alphasCumprod = alphasCumprod;
  }

  /** Builds the objective from a scheduler config (diffusers' field names and defaults). */
  static fromSchedulerConfig(
    cfg: Record<string, unknown>,
    captionDropout = DEFAULT_CAPTION_DROPOUT,
    source = "scheduler_config.json",
  ): DiffusionObjective {
    const pred = cfg.prediction_type ?? "epsilon";
    if (pred !== "epsilon") {
      throw new Error(
        `${source}: prediction_type "${pred}": the diffusion objective trains "epsilon" only`,
      );
    }
    const schedule = String(cfg.beta_schedule ?? "linear") as BetaSchedule;
    if (!["linear", "scaled_linear", "squaredcos_cap_v2"].includes(schedule)) {
      throw new Error(`${source}: beta_schedule "${schedule}" is not supported`);
    }
    const T = Number(cfg.num_train_timesteps ?? 1000);
    if (!Number.isInteger(T) || T < 2) {
      throw new Error(`${source}: num_train_timesteps must be an integer > 1, got ${T}`);
    }
    const betas = makeBetas(
      schedule,
      T,
      Number(cfg.beta_start ?? 0.0001),
      Number(cfg.beta_end ?? 0.02),
      Array.isArray(cfg.trained_betas) ? cfg.trained_betas as number[] : null,
    );
    return new DiffusionObjective(alphasCumprod(betas), captionDropout, cfg);
  }

  /** Reads `<modelDir>/scheduler/scheduler_config.json`. */
  static async fromModelDir(
    modelDir: string,
    captionDropout = DEFAULT_CAPTION_DROPOUT,
  ): Promise<DiffusionObjective> {
    const path = join(modelDir, "scheduler", "scheduler_config.json");
    return DiffusionObjective.fromSchedulerConfig(await readJson(path), captionDropout, path);
  }

  /** Number of training timesteps. */
  get numTrainTimesteps(): number {
    return this.alphasCumprod.length;
  }

  /** Integer timesteps for `n` samples from draws [base, base + n) of `rng`, uniform in [0, T). */
  timestepsAt(rng: CounterRng, base: number, n: number): Int32Array {
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = rng.intAt(base + i, this.numTrainTimesteps);
    return out;
  }

  /** Captions with each replaced by "" when draw `base + i` falls under the dropout rate. */
  dropCaptionsAt(captions: readonly string[], rng: CounterRng, base: number): string[] {
    return captions.map((c, i) => rng.uniformAt(base + i) < this.captionDropout ? "" : c);
  }

  /** x_t = sqrt(alphā_t) x0 + sqrt(1 - alphā_t) noise per sample (float32). */
  noisy(x0: Float32Array, noise: Float32Array, t: ArrayLike<number>): Float32Array {
    const B = t.length;
    if (x0.length !== noise.length || x0.length % B !== 0) {
      throw new Error(`diffusion loss: x0 (${x0.length}) and noise (${noise.length}) vs ${B}`);
    }
    const n = x0.length / B;
    const out = new Float32Array(x0.length);
    const f = Math.fround;
    for (let b = 0; b < B; b++) {
      const ac = this.alphasCumprod[t[b]];
      if (ac === undefined) throw new Error(`diffusion loss: timestep ${t[b]} out of range`);
      const a = f(Math.sqrt(ac));
      const s = f(Math.sqrt(f(1 - ac)));
      for (let j = b * n; j < (b + 1) * n; j++) out[j] = f(f(a * x0[j]) + f(s * noise[j]));
    }
    return out;
  }

  /**
   * The epsilon-prediction loss: a scalar tensor [1] carrying the graph to the model. `batch.z1` is
   * the clean latent, `batch.z0` the noise. `reduceMean`: mean over all elements (else half the
   * per-sample sum, averaged over the batch, as the reflow loss does).
   */
  loss(
    gpu: Gpu,
    model: VelocityFn,
    batch: LossBatch,
    t: ArrayLike<number>,
    reduceMean: boolean,
  ): Tensor {
    const [B, C, H, W] = batch.shape;
    if (t.length !== B) throw new Error(`diffusion loss: ${t.length} timesteps for ${B} samples`);
    const xt = this.noisy(batch.z1, batch.z0, t);
    const n = C * H * W;
    return tidy(() => {
      const x = Tensor.from(gpu, xt, [B, C, H, W]);
      const eps = Tensor.from(gpu, batch.z0, [B, C, H, W]);
      const ts = Tensor.from(gpu, Float32Array.from(t), [B]);
      const pred = model(x, ts, batch.context);
      const sq = ops.square(ops.sub(pred, eps));
      return ops.scale(ops.reshape(ops.sum(sq), [1]), reduceMean ? 1 / (B * n) : 0.5 / B);
    });
  }
}

/** Float64 reference of the loss given the prediction (tests). */
export function diffusionLossReference(
  pred: ArrayLike<number>,
  noise: ArrayLike<number>,
  B: number,
  reduceMean: boolean,
): number {
  const n = pred.length / B;
  let total = 0;
  for (let b = 0; b < B; b++) {
    let s = 0;
    for (let j = b * n; j < (b + 1) * n; j++) s += (pred[j] - noise[j]) ** 2;
    total += reduceMean ? s / n : 0.5 * s;
  }
  return total / B;
}

/** How the train job draws its sample grids under the diffusion objective (generate's defaults). */
export const SAMPLE_GRID = { inferSteps: 25, guidanceScale: 7.5 } as const;
