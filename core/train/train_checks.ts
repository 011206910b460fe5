/**
 * Checks made before and during training: the settings this implementation has, the data against
 * the models, and every batch for non-finite values (so bad data is told apart from divergence).
 *
 * @module
 */

import type { TrainConfig } from "../../configs/train.ts";
import { schema as trainSchema } from "../../configs/train.ts";
import { validateConfig } from "../config/overrides.ts";
import type { PairBatch, PairDataset } from "../data/dataset.ts";
import { checkLossKind, parseTSchedule, type TSchedule } from "./reflow_loss.ts";
import { checkLpipsConfig } from "./lpips_loss.ts";
import { firstNonFinite } from "./train_state.ts";
import type { TrainModels } from "./types.ts";

/** Refuses settings this implementation does not have, naming them. */
export function checkTrainConfig(config: TrainConfig): TSchedule {
  // Types, choices, tuple lengths and ranges, as for a config given on the command line.
  validateConfig(config, trainSchema, "config");
  const t = config.training;
  if (t.mixed_precision !== "no" && t.mixed_precision !== "fp16") {
    throw new Error(
      `config.training.mixed_precision = "${t.mixed_precision}": supported are "no" and "fp16"`,
    );
  }
  if (config.optim.use_8bit_adam) {
    throw new Error("config.optim.use_8bit_adam: 8-bit Adam is not available; set it to false");
  }
  if (config.sampling.method !== "rectified_flow") {
    throw new Error(
      `config.sampling.method: "${config.sampling.method}" is unknown (only "rectified_flow")`,
    );
  }
  if (config.training.objective !== "reflow" && config.training.objective !== "diffusion") {
    throw new Error(
      `config.training.objective = "${config.training.objective}": not "reflow" or "diffusion"`,
    );
  }
  checkLossKind(config.reflow.reflow_loss);
  checkLpipsConfig(config.reflow); // t0 schedule and weight paths of the LPIPS losses
  for (
    const k of [
      "num_steps",
      "batch_size",
      "gradient_accumulation_steps",
      "log_freq",
      "eval_freq",
      "snapshot_freq",
      "sampling_freq",
    ] as const
  ) {
    const v = (t as unknown as Record<string, number>)[k];
    if (!Number.isInteger(v) || v < 1) {
      throw new Error(`config.training.${k} must be a positive integer, got ${v}`);
    }
  }
  return parseTSchedule(config.reflow.reflow_t_schedule);
}

/**
 * Checks the data against the models before training: latent channels, latent size, and the
 * cross-attention width against the text encoder's hidden size.
 */
export async function checkCompatibility(
  config: TrainConfig,
  models: TrainModels,
  data: PairDataset,
  what = "config.data.train_root",
): Promise<[number, number, number]> {
  const first = await data.get(0);
  const [C, H, W] = first.shape;
  const uc = models.unet.config;
  const root = data.root;
  if (C !== uc.in_channels || C !== uc.out_channels) {
    throw new Error(
      `${what} (${root}) holds ${C}-channel latents, the score model takes ${uc.in_channels} ` +
        `and gives ${uc.out_channels} (unet/config.json in_channels/out_channels)`,
    );
  }
  if (C !== config.data.num_channels) {
    throw new Error(
      `${what} (${root}) holds ${C}-channel latents, config.data.num_channels is ` +
        `${config.data.num_channels}`,
    );
  }
  if (H !== config.data.image_size || W !== config.data.image_size) {
    throw new Error(
      `${what} (${root}) holds ${H}x${W} latents, config.data.image_size is ` +
        `${config.data.image_size}`,
    );
  }
  const f = 2 ** (uc.block_out_channels.length - 1);
  if (H % f !== 0 || W % f !== 0) {
    throw new Error(
      `${what} (${root}): ${H}x${W} latents cannot pass the score model's ` +
        `${uc.block_out_channels.length} levels (need multiples of ${f})`,
    );
  }
  const cross = Array.isArray(uc.cross_attention_dim)
    ? uc.cross_attention_dim[0]
    : uc.cross_attention_dim;
  if (cross !== models.textEncoder.hiddenSize) {
    throw new Error(
      `score model cross_attention_dim ${cross} does not match the text encoder's hidden size ` +
        `${models.textEncoder.hiddenSize} (unet/config.json vs text_encoder/config.json)`,
    );
  }
  if (models.vae && models.vae.config.latent_channels !== C) {
    throw new Error(
      `${what} (${root}) holds ${C}-channel latents, the VAE has ` +
        `${models.vae.config.latent_channels} (vae/config.json latent_channels)`,
    );
  }
  return [C, H, W];
}

/**
 * Throws naming the data set and pair when a batch holds a NaN or an infinity, so that bad data is
 * told apart from a diverging model (a scan of host arrays already read; no GPU work).
 */
export function checkBatchFinite(batch: PairBatch, root: string, what: string): void {
  for (const [name, x] of [["z0 (noise)", batch.z0], ["z1 (latent)", batch.z1]] as const) {
    const at = firstNonFinite(x);
    if (at < 0) continue;
    const per = x.length / batch.indices.length;
    throw new Error(
      `${what} (${root}): pair ${batch.indices[Math.floor(at / per)]} holds a non-finite ` +
        `value (${x[at]}) in ${name}; regenerate or remove that pair`,
    );
  }
}
