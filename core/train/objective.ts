/**
 * The loss the student trains on (`training.objective`): "reflow" is the original's rectified-flow
 * loss, L2 (reflow_loss.ts) or LPIPS through the frozen VAE (lpips_loss.ts) per
 * `reflow.reflow_loss`; "diffusion" trains epsilon prediction with caption dropout on (noise z0,
 * clean z1) pairs (diffusion_loss.ts).
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";
import type { Tensor } from "../tensor/tensor.ts";
import type { TrainConfig } from "../../configs/train.ts";
import type { AutoencoderKL } from "../models/autoencoder_kl.ts";
import type { CounterRng } from "./rng.ts";
import {
  type LossBatch,
  type ReflowLossOptions,
  timesAt,
  type TSchedule,
  type VelocityFn,
} from "./reflow_loss.ts";
import { type ReflowLossImpl, selectReflowLoss } from "./lpips_loss.ts";
import { DEFAULT_CAPTION_DROPOUT, DiffusionObjective } from "./diffusion_loss.ts";

/** The training loss of a run, with the random draws it takes per sample. */
export class TrainingObjective {
  private constructor(
    private readonly gpu: Gpu,
    private readonly reflow: ReflowLossImpl,
    /** The diffusion objective's schedule, or null under "reflow". */
    readonly diffusion: DiffusionObjective | null,
    private readonly schedule: TSchedule,
    private readonly opts: ReflowLossOptions,
  ) {}

  /** Loads what `config`'s objective needs (LPIPS weights, the teacher's noise schedule). */
  static async create(
    gpu: Gpu,
    config: TrainConfig,
    vae: AutoencoderKL | null,
    schedule: TSchedule,
  ): Promise<TrainingObjective> {
    const tc = config.training;
    const reflow = await selectReflowLoss(gpu, config, vae);
    const diffusion = tc.objective === "diffusion"
      ? await DiffusionObjective.fromModelDir(
        config.diffusers.ckpt_path,
        tc.caption_dropout ?? DEFAULT_CAPTION_DROPOUT,
      )
      : null;
    return new TrainingObjective(gpu, reflow, diffusion, schedule, {
      loss: config.reflow.reflow_loss,
      reduceMean: tc.reduce_mean,
      orientation: tc.timestep_orientation,
    });
  }

  /**
   * The loss of `model` on the B samples of `batch`, whose times come from draws [base, base + B)
   * of `rng`: a scalar tensor [1] carrying the graph back to the model's parameters.
   */
  lossAt(model: VelocityFn, rng: CounterRng, base: number, batch: LossBatch): Tensor {
    const B = batch.shape[0];
    return this.diffusion
      ? this.diffusion.loss(
        this.gpu,
        model,
        batch,
        this.diffusion.timestepsAt(rng, base, B),
        this.opts.reduceMean,
      )
      : this.reflow.loss(this.gpu, model, batch, timesAt(this.schedule, rng, base, B), this.opts);
  }

  /** Releases the LPIPS networks, if any. */
  dispose(): void {
    this.reflow.dispose();
  }
}
