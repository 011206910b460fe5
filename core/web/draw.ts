/**
 * One picture from a caption with a reflowed student, the way the `sample` job and the demo draw
 * it: the caption's hidden states from the teacher's tokenizer and text encoder (no guidance), noise
 * z0 from the host Philox generator, Euler steps of the student's velocity (flow/sample_batch.ts), then
 * the VAE's decoder, or for a pixel-space model (the tiny teacher) the latents themselves as the
 * picture in [-1, 1]. Runs the same in the browser and in Deno.
 *
 * Noise: z0 for seed s is `generate`'s noise of pair 0 of a run with seed s (pipeline/noise.ts:
 * Philox normals at offset 0, rounded to float16), so a seed means the same noise on every platform.
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";
import { noGrad } from "../tensor/autograd.ts";
import type { Tensor } from "../tensor/tensor.ts";
import type { TextTokenizer } from "../models/tokenizers/types.ts";
import type { TextEncoder } from "../models/text_encoders.ts";
import type { AutoencoderKL } from "../models/autoencoder_kl.ts";
import { sampleBatch, type VelocityNet } from "../flow/sample_batch.ts";
import { decodeToImages, toUnitRange } from "../flow/images.ts";
import { batchNoise } from "../generate/noise.ts";
import type { TimestepOrientation } from "../flow/time.ts";

/** A loaded student and what it needs to draw. */
export interface Student {
  gpu: Gpu;
  tokenizer: TextTokenizer;
  textEncoder: TextEncoder;
  unet: VelocityNet;
  /** The teacher's VAE, null for a pixel-space model. */
  vae: AutoencoderKL | null;
  /** How flow time maps to the UNet timestep. */
  orientation: TimestepOrientation;
  /** The latent's [C, H, W]. */
  shape: [number, number, number];
}

/** A picture: [channels, height, width] values in [0, 1]. */
export interface Picture {
  data: Float32Array;
  channels: number;
  height: number;
  width: number;
}

/** What {@link drawPicture} made. */
export interface Drawing {
  /** The sampled latents x(1), [C, H, W] (the picture in [-1, 1] for a pixel-space model). */
  latents: Float32Array;
  picture: Picture;
  /** Wall time from caption to picture (encoding, sampling, decoding, read-backs), seconds. */
  seconds: number;
  /** Velocity evaluations. */
  nfe: number;
}

/** The noise z0 of `seed` for a [C, H, W] latent (float16 values, as `generate` draws it). */
export function seedNoise(seed: number, shape: readonly [number, number, number]): Float32Array {
  const [C, H, W] = shape;
  return batchNoise(seed, [0], C * H * W).values;
}

/** A pixel-space latent ([-1, 1]) as a picture in [0, 1], as the demo's report shows it. */
export function latentsToPicture(
  x: Float32Array,
  shape: readonly [number, number, number],
): Picture {
  const [C, H, W] = shape;
  const data = Float32Array.from(x, toUnitRange);
  return { data, channels: C, height: H, width: W };
}

/** Draws one picture of `caption` in `steps` Euler steps from the noise of `seed`. */
export async function drawPicture(
  s: Student,
  caption: string,
  steps: number,
  seed: number,
): Promise<Drawing> {
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`draw: steps ${steps} must be >= 1`);
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new Error(`draw: seed ${seed} must be a whole number >= 0`);
  }
  const t0 = performance.now();
  const z0 = seedNoise(seed, s.shape);
  const tok = s.tokenizer.encode([caption]);
  const context: Tensor = noGrad(() => s.textEncoder.encode(tok.ids, tok.mask, 1, tok.length));
  let r;
  try {
    r = await sampleBatch(s.gpu, s.unet, context, z0, s.shape, {
      sampler: "euler",
      sampleN: steps,
      odeTol: 1e-5,
      sigmaVar: 0,
      noiseScale: 1,
      orientation: s.orientation,
      returnTrajectory: false,
    });
  } finally {
    context.dispose();
  }
  const picture = s.vae
    ? (await decodeToImages(s.gpu, s.vae, r.x, s.shape))[0]
    : latentsToPicture(r.x, s.shape);
  return { latents: r.x, picture, seconds: (performance.now() - t0) / 1000, nfe: r.nfe };
}
