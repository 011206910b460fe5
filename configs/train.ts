/**
 * Settings of the `train` job, mirroring the original tool's `reflow/configs/train.py`:
 * the base settings of `default.ts` plus the model, EMA, reflow and data settings.
 *
 * @module
 */

import type { ConfigSchema } from "../core/config/overrides.ts";
import {
  type DefaultConfig,
  type DefaultDataConfig,
  type DefaultOptimConfig,
  defaultSchema,
  type DefaultTrainingConfig,
  getConfig as getDefaultConfig,
} from "./default.ts";

/** Where the models come from and how they run. */
export interface DiffusersConfig {
  /** Diffusers-layout model folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/). */
  ckpt_path: string;
  /** Tokenizer kind: "xlm_roberta_tokenizer" (AltDiffusion) or "clip_tokenizer" (SD). */
  tokenizer: string;
  /** Text encoder kind: "xlm_roberta_text_model" (AltDiffusion) or "clip_text_model" (SD). */
  text_encoder: string;
  /** Autoencoder kind: "autoencoder_kl". */
  vae: string;
  /** Score model kind: "unet_2d_condition_model". */
  score_model: string;
  /** Start the score model from the folder's UNet weights (else fresh weights from its config). */
  load_score_model: boolean;
  /** Recompute each block's forward during backward to save memory. */
  gradient_checkpointing: boolean;
  /** The original's xformers switch; here attention is always tiled, so this only is recorded. */
  use_xformers: boolean;
}

/** Exponential moving average of the student's weights. */
export interface EmaConfig {
  /** Decay, with the warm-up min(decay, (1 + n) / (10 + n)). */
  decay: number;
}

/** Training settings. */
export interface TrainTrainingConfig extends DefaultTrainingConfig {
  /** Resume from a `checkpoint_s{step}` folder (its step is read from the name); null = fresh. */
  ckpt_path: string | null;
  /** Average the per-element loss (true) or sum it per sample (false). */
  reduce_mean: boolean;
  /** "fix": use the z0 stored with each pair; "random": draw fresh noise for each use. */
  randz0: "fix" | "random";
  /** Number of optimiser steps. */
  num_steps: number;
  /** Pairs per step per worker. */
  batch_size: number;
  /** Micro-batches accumulated per optimiser step. */
  gradient_accumulation_steps: number;
  /** "no" (f32), "fp16" or "bf16": storage type of the frozen VAE and text encoder. */
  mixed_precision: "no" | "fp16" | "bf16";
}

/** Settings of the samples drawn during training. */
export interface TrainSamplingConfig {
  /** Sampling method; only "rectified_flow". */
  method: string;
  /** Distribution of z0: "gaussian". */
  init_type: string;
  /** Scale of z0. */
  init_noise_scale: number;
  /** "fix": sample from the evaluation pair's stored z0; "random": fresh noise. */
  randz0: "fix" | "random";
  /** ODE solver: "euler" or "rk45". */
  use_ode_sampler: "euler" | "rk45";
  /** Euler steps (ignored by rk45). */
  sample_N: number;
}

/** Reflow loss settings. */
export interface ReflowConfig {
  /**
   * How t is drawn: "t0" (t = eps), "t1" (t = 1), "uniform" on [eps, 1], or an integer k > 1
   * (t on k evenly spaced points); overrides keep the text, so "3" arrives as the string "3".
   */
  reflow_t_schedule: string | number;
  /** "l2", "lpips" or "lpips+l2" (LPIPS variants need the t0 schedule). */
  reflow_loss: "l2" | "lpips" | "lpips+l2";
  /**
   * LPIPS losses only: torchvision's VGG16 weights (`vgg16-397923af.pth`, keys `features.N.*`) as a
   * torch file or safetensors; "" = not set (an error when an LPIPS loss is chosen).
   */
  lpips_vgg_path: string;
  /** LPIPS losses only: the lpips package's v0.1 heads (`lpips/weights/v0.1/vgg.pth`); "" = not set. */
  lpips_heads_path: string;
}

/** Data settings. */
export interface TrainDataConfig extends DefaultDataConfig {
  /** Training data root (an LMDB, or `part*` folders that are concatenated). */
  train_root: string;
  /** Evaluation data root. */
  eval_root: string;
  /** Background loader workers. */
  dl_workers: number;
}

/** Optimiser settings. */
export interface TrainOptimConfig extends DefaultOptimConfig {
  /** The original's bitsandbytes switch; not available here (true is an error). */
  use_8bit_adam: boolean;
  /** Learning-rate schedule after warm-up: "linear", "constant", "cosine", ... (diffusers names). */
  lr_scheduler: string;
}

/** All settings of the train job. */
export interface TrainConfig
  extends Omit<DefaultConfig, "training" | "sampling" | "data" | "optim"> {
  diffusers: DiffusersConfig;
  ema: EmaConfig;
  training: TrainTrainingConfig;
  sampling: TrainSamplingConfig;
  reflow: ReflowConfig;
  data: TrainDataConfig;
  optim: TrainOptimConfig;
}

/** Integer settings and fixed choices of the train config. */
export const schema: ConfigSchema = {
  integers: [
    ...defaultSchema.integers ?? [],
    "training.num_steps",
    "training.batch_size",
    "training.gradient_accumulation_steps",
    "sampling.sample_N",
    "data.dl_workers",
  ],
  choices: {
    ...defaultSchema.choices,
    "training.randz0": ["fix", "random"],
    "training.mixed_precision": ["no", "fp16", "bf16"],
    "sampling.randz0": ["fix", "random"],
    "sampling.use_ode_sampler": ["euler", "rk45"],
    "reflow.reflow_loss": ["l2", "lpips", "lpips+l2"],
  },
  nullable: { "training.ckpt_path": "string" },
  lengths: defaultSchema.lengths,
  ranges: {
    ...defaultSchema.ranges,
    "training.num_steps": { min: 1 },
    "training.batch_size": { min: 1 },
    "training.gradient_accumulation_steps": { min: 1 },
    "sampling.init_noise_scale": { min: 0, minExclusive: true },
    "sampling.sample_N": { min: 1 },
    "data.dl_workers": { min: 0 },
    "ema.decay": { min: 0, max: 1 },
  },
};

/** A fresh copy of the train settings. */
export function getConfig(): TrainConfig {
  const base = getDefaultConfig();
  return {
    ...base,
    diffusers: {
      ckpt_path: "checkpoints/AltDiffusion",
      tokenizer: "xlm_roberta_tokenizer",
      text_encoder: "xlm_roberta_text_model",
      vae: "autoencoder_kl",
      score_model: "unet_2d_condition_model",
      load_score_model: true,
      gradient_checkpointing: true,
      use_xformers: false,
    },
    ema: { decay: 0.999 },
    training: {
      ...base.training,
      ckpt_path: null,
      reduce_mean: true,
      randz0: "fix",
      num_steps: 220000,
      batch_size: 3,
      gradient_accumulation_steps: 1,
      mixed_precision: "no",
    },
    sampling: {
      method: "rectified_flow",
      init_type: "gaussian",
      init_noise_scale: 1.0,
      randz0: "fix",
      use_ode_sampler: "euler",
      sample_N: 100,
    },
    reflow: {
      reflow_t_schedule: "uniform",
      reflow_loss: "l2",
      lpips_vgg_path: "",
      lpips_heads_path: "",
    },
    data: {
      ...base.data,
      train_root: "data/coco2014_reflow/train5M",
      eval_root: "data/coco2014_reflow/val10k",
      dl_workers: 4,
    },
    optim: {
      ...base.optim,
      use_8bit_adam: false,
      lr_scheduler: "linear",
    },
  };
}
