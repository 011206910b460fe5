/**
 * Settings of the `sample` job, mirroring the original tool's `reflow/configs/sample.py`:
 * the base settings of `default.ts` plus the sampler, model and data settings.
 *
 * @module
 */

import type { ConfigSchema } from "../core/config/overrides.ts";
import {
  type DefaultConfig,
  type DefaultDataConfig,
  defaultSchema,
  getConfig as getDefaultConfig,
} from "./default.ts";
import type { DiffusersConfig, EmaConfig } from "./train.ts";

/** Sampler settings. */
export interface SampleSamplingConfig {
  /** "fix": start from each evaluation pair's stored z0; "random": fresh noise. */
  randz0: "fix" | "random";
  /** The score model to load (`score_model_s{step}.pth` or `.safetensors`); "" = none. */
  ckpt_path: string;
  /** Also decode the noise z0 and save it as `noise/noise_{i}.png`. */
  decode_noise: boolean;
  /** Also decode the teacher's latent z1 and save it as `latent/latent_{i}.png`. */
  decode_latent: boolean;
  /** Save each sample's trajectory as `traj/traj_{i}.png` (turn off for many steps). */
  return_traj: boolean;
  /** Sampling method; only "rectified_flow". */
  method: string;
  /** Distribution of z0: "gaussian". */
  init_type: string;
  /** Scale of z0. */
  init_noise_scale: number;
  /** Samples per batch. */
  batch_size: number;
  /** Total samples to draw. */
  num_samples: number;
  /** ODE solver: "euler" or "rk45". */
  use_ode_sampler: "euler" | "rk45";
  /** Euler steps (ignored by rk45). */
  sample_N: number;
  /**
   * Accept a checkpoint that lacks some of the model's weights (those keep their initial
   * values). The original loads with strict=False; here a missing key is an error unless set.
   */
  allow_missing_keys: boolean;
}

/** Data settings. */
export interface SampleDataConfig extends DefaultDataConfig {
  /** Evaluation data root (captions and pairs to sample from). */
  eval_root: string;
  /** Background loader workers. */
  dl_workers: number;
}

/** All settings of the sample job. */
export interface SampleConfig extends Omit<DefaultConfig, "sampling" | "data"> {
  sampling: SampleSamplingConfig;
  diffusers: DiffusersConfig;
  ema: EmaConfig;
  data: SampleDataConfig;
}

/** Integer settings and fixed choices of the sample config. */
export const schema: ConfigSchema = {
  integers: [
    ...defaultSchema.integers ?? [],
    "sampling.batch_size",
    "sampling.num_samples",
    "sampling.sample_N",
    "data.dl_workers",
  ],
  choices: {
    ...defaultSchema.choices,
    "sampling.randz0": ["fix", "random"],
    "sampling.use_ode_sampler": ["euler", "rk45"],
  },
  lengths: defaultSchema.lengths,
  ranges: {
    ...defaultSchema.ranges,
    "sampling.init_noise_scale": { min: 0, minExclusive: true },
    "sampling.batch_size": { min: 1 },
    "sampling.num_samples": { min: 1 },
    "sampling.sample_N": { min: 1 },
    "data.dl_workers": { min: 0 },
    "ema.decay": { min: 0, max: 1 },
  },
};

/** A fresh copy of the sample settings. */
export function getConfig(): SampleConfig {
  const base = getDefaultConfig();
  return {
    ...base,
    sampling: {
      randz0: "fix",
      ckpt_path: "logs/2_reflow_AltInit/checkpoints/score_model_s200009.pth",
      decode_noise: false,
      decode_latent: false,
      return_traj: false,
      method: "rectified_flow",
      init_type: "gaussian",
      init_noise_scale: 1.0,
      batch_size: 2,
      num_samples: 2,
      use_ode_sampler: "euler",
      sample_N: 1,
      allow_missing_keys: false,
    },
    diffusers: {
      ckpt_path: "checkpoints/AltDiffusion",
      tokenizer: "xlm_roberta_tokenizer",
      text_encoder: "xlm_roberta_text_model",
      vae: "autoencoder_kl",
      score_model: "unet_2d_condition_model",
      load_score_model: false,
      gradient_checkpointing: false,
      use_xformers: false,
    },
    ema: { decay: 0.999 },
    data: {
      ...base.data,
      eval_root: "data/coco2014_reflow/val10k",
      dl_workers: 1,
    },
    // The original pins sampling to "cpu"; every kernel here is WebGPU, so take any adapter.
    device: "auto",
  };
}
