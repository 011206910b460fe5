/**
 * The diffusion teacher of the `generate` job: the original tool's `pipe_main` (diffusers'
 * text-to-image pipeline stopped before decoding). Captions and the negative prompt are encoded
 * with the frozen text encoder, the latents start at z0 · init_noise_sigma, and `inferSteps`
 * DPM-Solver multistep steps run with classifier-free guidance; the final latents z1 come back.
 *
 * Per step, in diffusers' order: scaleModelInput, one UNet pass on the batch [uncond; cond],
 * eps = eps_u + g (eps_c - eps_u), scheduler.step. The scheduler works on host float32 arrays,
 * so each step reads the UNet output back once; the UNet runs without the tape and inside a
 * `tidy` scope, so GPU memory is the same at every step.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu } from "../gpu/device.ts";
 * import { CounterRng } from "../train/rng.ts";
 * import { loadTeacher } from "./load_teacher.ts";
 *
 * const gpu = await Gpu.open();
 * // the demo's teacher (pixel space, 3x12x12); the demo and the original take 25 steps
 * const settings = { inferSteps: 5, guidanceScale: 4 };
 * const teacher = await loadTeacher(gpu, "models/tiny_teacher", settings);
 * assert.deepEqual(teacher.latentShape, [3, 12, 12]);
 * const z0 = new CounterRng(2333).normals(0, 3 * 12 * 12); // Float32Array of C*H*W
 * const z1 = await teacher.sample(["a red circle"], z0);
 * assert.equal(z1.length, z0.length);
 * assert.ok(z1.every((v) => Math.abs(v) < 2)); // a picture in about [-1, 1], no longer noise
 * teacher.dispose();
 * ```
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { keep, tidy } from "../tensor/scope.ts";
import { noGrad } from "../tensor/autograd.ts";
import * as ops from "../ops.ts";
import type { TextTokenizer } from "../models/tokenizers/types.ts";
import { encodeCaptions, type PromptEncoder } from "../flow/captions.ts";
import {
  DPMSolverMultistepScheduler,
  type ResolvedDPMSolverConfig,
} from "../schedulers/dpm_solver_multistep.ts";

/** What the pipeline needs of a UNet (UNet2DConditionModel, or a stand-in in tests). */
export interface NoiseModel {
  /** sample [B, C, H, W], timesteps f32 [B], context [B, L, D] -> [B, C, H, W]. */
  forward(sample: Tensor, timesteps: Tensor, context: Tensor): Tensor;
  readonly config: { in_channels: number; out_channels?: number; sample_size: number | null };
}

/** A teacher: maps captions and their noise z0 to the final latents z1 (host float32). */
export interface Teacher {
  /** Latent shape [C, H, W] of one sample. */
  readonly latentShape: readonly [number, number, number];
  /** z1 for `captions` (B of them) from z0 (B·C·H·W values, sample-major). */
  sample(captions: readonly string[], z0: Float32Array): Promise<Float32Array>;
  /** What index.json records about the teacher and its sampler. */
  describe(): Record<string, unknown>;
  /** Releases the models' GPU memory. */
  dispose(): void;
}

/** Refuses noise that does not hold B latents of `shape`, naming both counts. */
export function checkNoise(
  z0: Float32Array,
  B: number,
  [C, H, W]: readonly [number, number, number],
): void {
  if (z0.length !== B * C * H * W) {
    throw new Error(`teacher: z0 holds ${z0.length} values, expected ${B} x ${C}x${H}x${W}`);
  }
}

/** The sample size [C, H, W] of a UNet's latents (its config's in_channels and sample_size). */
export function latentShapeOf(model: NoiseModel, source = "unet/config.json"): [
  number,
  number,
  number,
] {
  const s = model.config.sample_size;
  if (typeof s !== "number" || !Number.isInteger(s) || s <= 0) {
    throw new Error(`${source}: sample_size must be a positive integer, got ${JSON.stringify(s)}`);
  }
  return [model.config.in_channels, s, s];
}

/** Settings of {@link DiffusionTeacher}. */
export interface DiffusionTeacherOptions {
  gpu: Gpu;
  tokenizer: TextTokenizer;
  textEncoder: PromptEncoder;
  unet: NoiseModel;
  /** The diffusers `scheduler_config.json` contents (any scheduler's: DPM-Solver reads its fields). */
  schedulerConfig: Record<string, unknown>;
  /** DPM-Solver steps (the original's `infer_steps`, 25). */
  inferSteps: number;
  /** Classifier-free guidance scale (7.5); at <= 1 there is no unconditional pass. */
  guidanceScale?: number;
  /** The unconditional prompt (default ""). */
  negativePrompt?: string;
  /** Latent [C, H, W] (default: the UNet's in_channels and sample_size). */
  latentShape?: readonly [number, number, number];
  /** Models the teacher owns and releases in dispose(). */
  owned?: { dispose(): void }[];
}

/** The original's `pipe_main`: DPM-Solver multistep with classifier-free guidance. */
export class DiffusionTeacher implements Teacher {
  readonly latentShape: readonly [number, number, number];
  readonly guidanceScale: number;
  readonly negativePrompt: string;
  readonly inferSteps: number;
  private readonly schedulerConfig: Record<string, unknown>;
  private readonly resolved: ResolvedDPMSolverConfig;
  /** Hidden states of the negative prompt, [1, L, D], computed once. */
  private uncond: Tensor | null = null;

  constructor(private readonly opts: DiffusionTeacherOptions) {
    if (!Number.isInteger(opts.inferSteps) || opts.inferSteps <= 0) {
      throw new Error(`infer_steps must be a positive integer, got ${opts.inferSteps}`);
    }
    this.inferSteps = opts.inferSteps;
    this.guidanceScale = opts.guidanceScale ?? 7.5;
    if (!Number.isFinite(this.guidanceScale)) {
      throw new Error(`guidance_scale must be a finite number, got ${this.guidanceScale}`);
    }
    this.negativePrompt = opts.negativePrompt ?? "";
    this.latentShape = opts.latentShape ?? latentShapeOf(opts.unet);
    this.schedulerConfig = opts.schedulerConfig;
    // Validates the config now (a bad scheduler_config.json fails before any work).
    this.resolved = DPMSolverMultistepScheduler.fromConfig(opts.schedulerConfig).resolvedConfig();
  }

  /** Whether a step runs the unconditional pass too (diffusers: guidance_scale > 1). */
  get classifierFree(): boolean {
    return this.guidanceScale > 1;
  }

  describe(): Record<string, unknown> {
    return {
      teacher: "diffusion",
      scheduler: "DPMSolverMultistepScheduler",
      scheduler_config: this.resolved,
      infer_steps: this.inferSteps,
      guidance_scale: this.guidanceScale,
      negative_prompt: this.negativePrompt,
    };
  }

  /** Context rows for a batch: [uncond x B; cond] with guidance, else cond; kept (caller disposes). */
  private context(captions: readonly string[]): Tensor {
    const { tokenizer, textEncoder } = this.opts;
    if (!this.classifierFree) return keep(encodeCaptions(tokenizer, textEncoder, captions));
    if (!this.uncond) {
      this.uncond = keep(encodeCaptions(tokenizer, textEncoder, [this.negativePrompt]));
    }
    const u = this.uncond;
    return keep(tidy(() => {
      const cond = encodeCaptions(tokenizer, textEncoder, captions);
      if (cond.shape[1] !== u.shape[1] || cond.shape[2] !== u.shape[2]) {
        throw new Error(
          `text encoder: caption states [${cond.shape}] and negative prompt states [${u.shape}] differ`,
        );
      }
      return noGrad(() => ops.concat([...captions.map(() => u), cond], 0));
    }));
  }

  async sample(captions: readonly string[], z0: Float32Array): Promise<Float32Array> {
    const B = captions.length;
    const [C, H, W] = this.latentShape;
    const n = C * H * W;
    if (B === 0) return new Float32Array(0);
    checkNoise(z0, B, this.latentShape);
    const { gpu, unet } = this.opts;
    const g = this.guidanceScale;
    const cfg = this.classifierFree;
    const rows = cfg ? 2 * B : B;
    const scheduler = DPMSolverMultistepScheduler.fromConfig(this.schedulerConfig);
    scheduler.setTimesteps(this.inferSteps);
    const sigma0 = scheduler.initNoiseSigma;
    let latents: Float32Array = Float32Array.from(z0, (v) => v * sigma0);
    const ctx = this.context(captions);
    try {
      for (const t of scheduler.timesteps) {
        let input = latents;
        if (cfg) {
          input = new Float32Array(2 * B * n);
          input.set(latents, 0);
          input.set(latents, B * n);
        }
        input = scheduler.scaleModelInput(input, t);
        const out = noGrad(() =>
          tidy(() => {
            const x = Tensor.from(gpu, input, [rows, C, H, W]);
            const ts = Tensor.from(gpu, new Float32Array(rows).fill(t), [rows]);
            return unet.forward(x, ts, ctx);
          })
        );
        let pred: Float32Array;
        try {
          pred = await out.toF32();
        } finally {
          out.dispose();
        }
        if (pred.length !== rows * n) {
          throw new Error(`teacher: the UNet returned ${pred.length} values, expected ${rows * n}`);
        }
        let eps = pred;
        if (cfg) {
          eps = new Float32Array(B * n);
          for (let i = 0; i < B * n; i++) {
            const u = pred[i];
            eps[i] = u + g * (pred[B * n + i] - u);
          }
        }
        latents = scheduler.step(eps, t, latents, { batchSize: B });
      }
    } finally {
      ctx.dispose();
    }
    return latents;
  }

  dispose(): void {
    this.uncond?.dispose();
    this.uncond = null;
    for (const m of this.opts.owned ?? []) m.dispose();
  }
}
