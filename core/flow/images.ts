/**
 * Latents to images (sample, train grids, demo, web page): the VAE's `decodeLatents` (the original's
 * `decode_latents`: decode(z / 0.18215), then x / 2 + 0.5 clamped to [0, 1]), or, when the model
 * folder has no VAE, the original's identity codec (`DummyCodec`, whose decode returns its input)
 * run through the same formula: image = clamp(z / 0.18215 / 2 + 0.5, 0, 1) with every latent
 * channel kept, so 4-channel latents become RGBA images (as torchvision's `save_image` writes a
 * 4-channel tensor), 3 RGB and 1 gray; other channel counts keep the first three.
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { tidy } from "../tensor/scope.ts";
import { noGrad } from "../tensor/autograd.ts";
import type { AutoencoderKL } from "../models/autoencoder_kl.ts";
import type { ImageTensor } from "../io/png.ts";

/** The scaling factor the original's `decode_latents` divides by. */
export const LATENT_SCALE = 0.18215;

/**
 * A value in [-1, 1] (pixel-space model output, or a decoded image) as an image value in [0, 1]:
 * x / 2 + 0.5, clamped; the one rule behind every picture the tools write.
 */
export function toUnitRange(x: number): number {
  const v = Math.fround(x / 2 + 0.5);
  return v < 0 ? 0 : v > 1 ? 1 : v;
}

/** The identity codec's images (see the module note). */
export function identityDecode(
  z: Float32Array,
  B: number,
  C: number,
  H: number,
  W: number,
): ImageTensor[] {
  const ch = C === 1 || C === 3 || C === 4 ? C : Math.min(C, 3);
  const plane = H * W;
  const out: ImageTensor[] = [];
  for (let b = 0; b < B; b++) {
    const data = new Float32Array(ch * plane);
    const base = b * C * plane;
    for (let j = 0; j < ch * plane; j++) {
      data[j] = toUnitRange(Math.fround(z[base + j] / LATENT_SCALE));
    }
    out.push({ data, channels: ch, height: H, width: W });
  }
  return out;
}

/**
 * Decodes latents [B, C, H, W] (host, sample-major) into images, at most `chunk` at a time on the
 * GPU (a trajectory can hold many states).
 */
export async function decodeToImages(
  gpu: Gpu,
  vae: AutoencoderKL | null,
  z: Float32Array,
  shape: readonly [number, number, number],
  chunk = 8,
): Promise<ImageTensor[]> {
  const [C, H, W] = shape;
  const n = C * H * W;
  const B = z.length / n;
  if (!Number.isInteger(B)) {
    throw new Error(`decode: ${z.length} values are not a whole number of ${C}x${H}x${W} latents`);
  }
  if (vae === null) return identityDecode(z, B, C, H, W);
  const out: ImageTensor[] = [];
  for (let s = 0; s < B; s += chunk) {
    const m = Math.min(chunk, B - s);
    const img = noGrad(() =>
      tidy(() => vae.decodeLatents(Tensor.from(gpu, z.subarray(s * n, (s + m) * n), [m, C, H, W])))
    );
    let data: Float32Array;
    const [, c3, h3, w3] = img.shape;
    try {
      data = await img.toF32();
    } finally {
      img.dispose();
    }
    const k = c3 * h3 * w3;
    for (let b = 0; b < m; b++) {
      out.push({ data: data.slice(b * k, (b + 1) * k), channels: c3, height: h3, width: w3 });
    }
  }
  return out;
}
