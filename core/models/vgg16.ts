/**
 * VGG16's convolutional trunk (`torchvision.models.vgg16().features`) as LPIPS uses it: thirteen 3x3
 * convolutions with ReLU and four 2x2 max pools, returning the activations after relu1_2, relu2_2,
 * relu3_3, relu4_3 and relu5_3 (`features` indices 3, 8, 15, 22, 29; the final pool, index 30, is
 * never needed). Parameter names are torchvision's (`features.0.weight`, `features.2.bias`, ...), so
 * `vgg16-397923af.pth` loads by a walk; its `classifier.*` tensors are ignored.
 *
 * The channel widths default to VGG16's [64, 128, 256, 512, 512]; narrower trunks with the same
 * layout (test fixtures) are built from the widths found in a weight file.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 *
 * const gpu = await Gpu.open();
 * // torchvision's layout with narrow widths (a test fixture); "vgg16-397923af.pth" loads alike
 * const vgg = await Vgg16Features.fromFile(gpu, "tests/fixtures/lpips/vgg16_narrow.pth");
 * assert.deepEqual(vgg.widths, [6, 8, 12, 16, 16]); // read from the file (VGG16: 64 ... 512)
 * const x = Tensor.from(gpu, new Float32Array(3 * 16 * 16).fill(0.5), [1, 3, 16, 16]);
 * const [r12, r22, r33, r43, r53] = vgg.forward(x); // x: [B, 3, H, W], H and W >= 16
 * const want = [[1, 6, 16, 16], [1, 8, 8, 8], [1, 12, 4, 4], [1, 16, 2, 2], [1, 16, 1, 1]];
 * assert.deepEqual([r12, r22, r33, r43, r53].map((r) => r.shape), want);
 * vgg.dispose();
 * ```
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { Module, newInit } from "../nn/module.ts";
import { Conv2d } from "../nn/layers.ts";
import * as ops from "../ops.ts";
import { openWeights, type WeightReader } from "../io/weights.ts";
import { loadModule } from "./load.ts";
import { runBlock } from "./unet_blocks.ts";

/** VGG16's widths per stage. */
export const VGG16_WIDTHS: readonly number[] = [64, 128, 256, 512, 512];
/** Convolutions per stage (VGG16 "D" configuration). */
const CONVS_PER_STAGE = [2, 2, 3, 3, 3];
/** `features` index of the first convolution of each stage. */
export const VGG16_STAGE_START: readonly number[] = [0, 5, 10, 17, 24];
/** `features` index of the ReLU whose output each stage returns (relu1_2 ... relu5_3). */
export const VGG16_TAPS: readonly number[] = [3, 8, 15, 22, 29];

export class Vgg16Features extends Module {
  /** torchvision's `features` Sequential: convolutions at their indices, null for ReLU/pool. */
  features: (Conv2d | null)[];
  /** Recompute each stage's forward during backward instead of keeping its activations. */
  readonly checkpointing = { on: false };

  constructor(gpu: Gpu, readonly widths: readonly number[] = VGG16_WIDTHS, seed = 0) {
    super();
    if (widths.length !== 5 || widths.some((w) => !Number.isInteger(w) || w < 1)) {
      throw new Error(`vgg16: widths must be five positive integers, got [${widths}]`);
    }
    const init = newInit(gpu, seed);
    this.features = new Array(VGG16_TAPS[4] + 1).fill(null);
    let cin = 3;
    for (let s = 0; s < 5; s++) {
      for (let j = 0; j < CONVS_PER_STAGE[s]; j++) {
        this.features[VGG16_STAGE_START[s] + 2 * j] = new Conv2d(init, cin, widths[s], 3, 1, 1);
        cin = widths[s];
      }
    }
  }

  /** Reads the stage widths from a torchvision-style weight file (`features.{0,5,10,17,24}.weight`). */
  static widthsOf(reader: WeightReader): number[] {
    return VGG16_STAGE_START.map((i) => {
      const key = `features.${i}.weight`;
      if (!reader.has(key)) {
        throw new Error(
          `${reader.path}: no "${key}"; expected torchvision's vgg16 state dict ` +
            `(features.0.weight, features.2.weight, ...), e.g. vgg16-397923af.pth`,
        );
      }
      return reader.info(key).shape[0];
    });
  }

  /**
   * Builds the trunk with the widths in `path` and loads it (torch `.pth`/`.bin` through the
   * restricted unpickler, or safetensors). Keys other than `features.*` must be `classifier.*`.
   * The parameters are frozen (no gradient).
   */
  static async fromFile(gpu: Gpu, path: string): Promise<Vgg16Features> {
    const reader = await openWeights(path);
    try {
      const vgg = new Vgg16Features(gpu, Vgg16Features.widthsOf(reader));
      try {
        const r = await loadModule(vgg, reader, { allowUnexpected: true });
        const odd = r.unexpected.filter((k) => !k.startsWith("classifier."));
        if (odd.length) {
          throw new Error(
            `${path}: unexpected key(s) in a vgg16 state dict: ${odd.slice(0, 10).join(", ")}`,
          );
        }
      } catch (e) {
        vgg.dispose();
        throw e;
      }
      vgg.requiresGrad(false);
      return vgg;
    } finally {
      reader.close();
    }
  }

  private stage(s: number, x: Tensor): Tensor {
    let h = s > 0 ? ops.maxPool2x2(x) : x;
    for (let j = 0; j < CONVS_PER_STAGE[s]; j++) {
      h = ops.relu(this.features[VGG16_STAGE_START[s] + 2 * j]!.forward(h));
    }
    return h;
  }

  /**
   * The five tapped activations of `x` [B, 3, H, W] (H, W >= 16 so that relu5_3 is not empty).
   * Stages are checkpointed when `checkpointing.on` and `x` carries a gradient.
   */
  forward(x: Tensor): Tensor[] {
    const [, c, H, W] = x.shape;
    if (x.shape.length !== 4 || c !== 3) {
      throw new Error(`vgg16: expects images [B, 3, H, W], got [${x.shape}]`);
    }
    if (H < 16 || W < 16) {
      throw new Error(`vgg16: images of ${H}x${W} are too small for four 2x2 pools (need >= 16)`);
    }
    const ck = this.checkpointing.on && x.requiresGrad;
    const outs: Tensor[] = [];
    let h = x;
    for (let s = 0; s < 5; s++) {
      h = runBlock(ck, (t) => this.stage(s, t), [h]);
      outs.push(h);
    }
    return outs;
  }
}
