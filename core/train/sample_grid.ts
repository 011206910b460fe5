/**
 * The trainer's sample grids: the student's samples for a batch of captions, drawn as the sample
 * job draws them (the flow of core/flow/sample_batch.ts; under the diffusion objective the student
 * as a DPM-Solver teacher with guidance), and written as one PNG grid.
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";
import type { Tensor } from "../tensor/tensor.ts";
import type { TrainConfig } from "../../configs/train.ts";
import type { UNet2DConditionModel } from "../models/unet2d_condition.ts";
import type { AutoencoderKL } from "../models/autoencoder_kl.ts";
import type { TextEncoder } from "../models/text_encoders.ts";
import type { TextTokenizer } from "../models/tokenizers/types.ts";
import { makeGrid, saveImage } from "../io/png.ts";
import { DEFAULT_ODE_TOL, sampleBatch } from "../flow/sample_batch.ts";
import { decodeToImages } from "../flow/images.ts";
import { DiffusionTeacher } from "../generate/teacher.ts";
import { type DiffusionObjective, SAMPLE_GRID } from "./diffusion_loss.ts";

/** What a grid is drawn with. */
export interface GridModels {
  gpu: Gpu;
  unet: UNet2DConditionModel;
  tokenizer: TextTokenizer;
  textEncoder: TextEncoder;
  /** null: the identity codec (core/flow/images.ts). */
  vae: AutoencoderKL | null;
  /** The diffusion objective's schedule, or null for the flow student. */
  diffusion: DiffusionObjective | null;
}

/**
 * The student's samples x(1) from z0 for `captions` (their hidden states `context`) with the
 * current weights: `sampling.use_ode_sampler` (Euler: `sample_N` steps) under the reflow
 * objective, DPM-Solver with guidance under the diffusion one.
 */
export async function gridSamples(
  m: GridModels,
  config: TrainConfig,
  captions: string[],
  context: Tensor,
  z0: Float32Array,
  shape: readonly [number, number, number],
): Promise<Float32Array> {
  if (m.diffusion) {
    const teacher = new DiffusionTeacher({
      gpu: m.gpu,
      tokenizer: m.tokenizer,
      textEncoder: m.textEncoder,
      unet: m.unet,
      schedulerConfig: m.diffusion.schedulerConfig,
      ...SAMPLE_GRID,
    });
    try {
      return await teacher.sample(captions, z0);
    } finally {
      teacher.dispose();
    }
  }
  const r = await sampleBatch(m.gpu, m.unet, context, z0, shape, {
    sampler: config.sampling.use_ode_sampler,
    sampleN: config.sampling.sample_N,
    odeTol: DEFAULT_ODE_TOL,
    sigmaVar: 0,
    noiseScale: 1,
    orientation: config.training.timestep_orientation,
    returnTrajectory: false,
  });
  return r.x;
}

/** Decodes latents [B, C, H, W] (the whole batch at once) and writes them as a square-ish grid. */
export async function writeGrid(
  m: Pick<GridModels, "gpu" | "vae">,
  latents: Float32Array,
  shape: readonly [number, number, number],
  path: string,
): Promise<void> {
  const B = latents.length / (shape[0] * shape[1] * shape[2]);
  const images = await decodeToImages(m.gpu, m.vae, latents, shape, B);
  saveImage(path, makeGrid(images, Math.max(1, Math.floor(Math.sqrt(B))), 2));
}
