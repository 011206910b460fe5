/**
 * Base settings shared by the train and sample configs, mirroring the original tool's
 * `reflow/configs/default.py` (same groups, names, defaults and meanings).
 *
 * @module
 */

import type { ConfigSchema } from "../core/config/overrides.ts";
import { TIMESTEP_ORIENTATIONS, type TimestepOrientation } from "../core/flow/time.ts";

/** Where a flow model's time t in [0, 1] is mapped onto the UNet's timestep input (flow/time.ts). */
export type { TimestepOrientation };
/** What the student is trained to predict. */
export type Objective = "reflow" | "diffusion";
/** Which WebGPU adapter runs the job. */
export type DeviceSetting = "auto" | "gpu" | "cpu";

/** Training-loop cadence (steps) plus how the model reads time. */
export interface DefaultTrainingConfig {
  /** Save `checkpoints/checkpoint_s{step}` and `score_model_s{step}` every this many steps. */
  snapshot_freq: number;
  /** Draw and save a sample grid `samples/sample_s{step}.png` every this many steps. */
  sampling_freq: number;
  /** Log the training loss (text log + TensorBoard) every this many steps. */
  log_freq: number;
  /** Compute and log the loss on one evaluation batch every this many steps. */
  eval_freq: number;
  /**
   * Map from flow time t to the UNet timestep: "original" = floor(999 t) as the original tool does;
   * "pretrained" = 999 (1 - t), which matches a diffusion teacher's convention (t = 0 is noise).
   * Shared by train and sample so that sampling reads the model the way it was trained.
   */
  timestep_orientation: TimestepOrientation;
  /**
   * "reflow": the UNet predicts the velocity z1 - z0 (the original tool);
   * "diffusion": the UNet keeps its pretrained noise-prediction meaning.
   */
  objective: Objective;
  /** With the diffusion objective: the share of captions replaced by "" (for guidance). */
  caption_dropout: number;
}

/** Latent data layout. */
export interface DefaultDataConfig {
  /** Latent height and width (64 for 512x512 images with an 8x VAE). */
  image_size: number;
  /** Flip training pairs horizontally at random. */
  random_flip: boolean;
  /** Latent channels (4 for Stable Diffusion's VAE). */
  num_channels: number;
}

/** AdamW optimiser and learning-rate warm-up. */
export interface DefaultOptimConfig {
  /** Peak learning rate. */
  lr: number;
  /** AdamW (beta1, beta2); a tuple of two numbers. */
  betas: [number, number];
  /** Decoupled weight decay. */
  weight_decay: number;
  /** AdamW epsilon. */
  eps: number;
  /** Linear warm-up steps (multiplied by gradient_accumulation_steps, as the original does). */
  warmup: number;
  /** Clip the global gradient norm to this value (<= 0: no clipping). */
  grad_clip: number;
}

/** The settings every job config has. */
export interface DefaultConfig {
  training: DefaultTrainingConfig;
  /** Sampler settings; the job configs fill this group. */
  sampling: Record<string, unknown>;
  data: DefaultDataConfig;
  optim: DefaultOptimConfig;
  /** Random seed for everything (data order, noise, initialisation). */
  seed: number;
  /**
   * WebGPU adapter: "auto" (whatever `navigator.gpu` offers first), "gpu" (refuse a software
   * adapter), "cpu" (ask for the fallback adapter, e.g. lavapipe). The original's "cuda:0" / "cpu".
   */
  device: DeviceSetting;
}

/** Settings here that must hold integers (JavaScript cannot tell 2000 from 2000.0). */
export const defaultSchema: ConfigSchema = {
  integers: [
    "training.snapshot_freq",
    "training.sampling_freq",
    "training.log_freq",
    "training.eval_freq",
    "data.image_size",
    "data.num_channels",
    "optim.warmup",
    "seed",
  ],
  choices: {
    "training.timestep_orientation": TIMESTEP_ORIENTATIONS,
    "training.objective": ["reflow", "diffusion"],
    "device": ["auto", "gpu", "cpu"],
  },
  lengths: { "optim.betas": 2 },
  // torch.optim.AdamW's own checks for lr, eps, betas and weight_decay.
  ranges: {
    "training.snapshot_freq": { min: 1 },
    "training.sampling_freq": { min: 1 },
    "training.log_freq": { min: 1 },
    "training.eval_freq": { min: 1 },
    "training.caption_dropout": { min: 0, max: 1 },
    "data.image_size": { min: 1 },
    "data.num_channels": { min: 1 },
    "optim.lr": { min: 0 },
    "optim.betas": { min: 0, max: 1, maxExclusive: true },
    "optim.weight_decay": { min: 0 },
    "optim.eps": { min: 0 },
    "optim.warmup": { min: 0 },
    // <= 0 turns clipping off; Infinity is the same as no clipping.
    "optim.grad_clip": { allowInfinite: true },
    "seed": {},
  },
};

/** Schema of the config module (read by `loadConfigModule`). */
export const schema: ConfigSchema = defaultSchema;

/** A fresh copy of the base settings. */
export function getConfig(): DefaultConfig {
  return {
    training: {
      snapshot_freq: 20000,
      sampling_freq: 2000,
      log_freq: 20,
      eval_freq: 20,
      timestep_orientation: "original",
      objective: "reflow",
      caption_dropout: 0.1,
    },
    sampling: {},
    data: {
      image_size: 64,
      random_flip: false,
      num_channels: 4,
    },
    optim: {
      lr: 1e-4,
      betas: [0.9, 0.999],
      weight_decay: 0,
      eps: 1e-8,
      warmup: 2000,
      grad_clip: 1,
    },
    seed: 2333,
    device: "auto",
  };
}
