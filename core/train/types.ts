/**
 * What a training run is given and what it returns (`runTraining` in trainer.ts).
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";
import type { TrainConfig } from "../../configs/train.ts";
import type { UNet2DConditionModel } from "../models/unet2d_condition.ts";
import type { AutoencoderKL } from "../models/autoencoder_kl.ts";
import type { TextEncoder } from "../models/text_encoders.ts";
import type { TextTokenizer } from "../models/tokenizers/types.ts";
import type { PairDataset } from "../data/dataset.ts";
import type { GradientExchange } from "../distributed/allreduce.ts";
import type { BucketOptions } from "../distributed/grad_buckets.ts";

/** The models a run uses: the student and the frozen text side (and VAE for sample grids). */
export interface TrainModels {
  unet: UNet2DConditionModel;
  textEncoder: TextEncoder;
  tokenizer: TextTokenizer;
  /** null: sample grids show the latents through the identity codec (core/flow/images.ts). */
  vae: AutoencoderKL | null;
}
/** Everything {@link runTraining} needs. */
export interface TrainerInit {
  gpu: Gpu;
  config: TrainConfig;
  workdir: string;
  comment?: string;
  models: TrainModels;
  trainData: PairDataset;
  evalData: PairDataset;
  /** Gradient averaging with the other workers (default: a single worker). */
  exchange?: GradientExchange;
  /** How gradients are exchanged: bucket size, f16 transport, overlap with backward. */
  dist?: BucketOptions;
  /** Echo log lines to stderr (default true). */
  console?: boolean;
  /** Draw a progress bar / progress lines on stderr (default true). */
  progress?: boolean;
  /** Stop after this step with a checkpoint, as Ctrl-C does (tests). */
  stopAtStep?: number;
  /** Save a checkpoint and stop on SIGINT (default true). */
  handleSignals?: boolean;
  /** Called after every optimizer step (benchmarks time steps with it). */
  onStep?: (step: number) => void;
}

/** What a run did. */
export interface TrainResult {
  /** Optimizer steps completed. */
  step: number;
  /** Stopped early by SIGINT or `stopAtStep` (a checkpoint was saved). */
  interrupted: boolean;
  /** Training loss of every step whose loss was read back (mean over the global batch). */
  losses: Map<number, number>;
  evalLosses: Map<number, number>;
  /** The last checkpoint folder written, if any. */
  lastCheckpoint: string | null;
  /** Seconds spent in the loop, and steps in it. */
  seconds: number;
  stepsRun: number;
}

/** The result of a run before its first step. */
export function newTrainResult(): TrainResult {
  return {
    step: 0,
    interrupted: false,
    losses: new Map(),
    evalLosses: new Map(),
    lastCheckpoint: null,
    seconds: 0,
    stepsRun: 0,
  };
}
