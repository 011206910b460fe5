/**
 * LPIPS v0.1 with the VGG16 trunk (the `lpips` package's `LPIPS(net='vgg')`, lpips=True,
 * spatial average), as the original reflow tool's LPIPS losses use it:
 *
 *   x -> 2 x - 1 (normalize=true: images in [0, 1]);  x -> (x - shift) / scale per channel
 *   f_k = VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of each image
 *   n_k = f_k / (sqrt(sum_c f_k^2) + 1e-10)
 *   d   = sum_k mean_hw( lin_k · (n_k(x0) - n_k(x1))^2 )      one value per sample, [B]
 *
 * Weights come from the files users have: torchvision's `vgg16-397923af.pth` (keys `features.N.*`)
 * and the lpips package's `weights/v0.1/vgg.pth` (keys `lin{k}.model.1.weight`, [1, C_k, 1, 1]),
 * read by the restricted unpickler, or the same tensors as safetensors.
 *
 * Gradient detail: where a feature vector is exactly zero across channels (a pixel every ReLU cut),
 * torch's sqrt backward gives 0 * inf = NaN; here the norm is sqrt(s + 1e-30), whose forward differs
 * from sqrt(s) by less than 1e-15 absolute (far below the 1e-10 epsilon) and whose gradient there is 0.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readNpy } from "../data/npy.ts";
 * import { Gpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 *
 * const gpu = await Gpu.open();
 * // A narrow VGG16 and heads as torch files, in the layout of "vgg16-397923af.pth" and the lpips
 * // package's "weights/v0.1/vgg.pth", with the lpips package's result for two image pairs.
 * const dir = "tests/fixtures/lpips";
 * const lp = await Lpips.fromFiles(gpu, `${dir}/vgg16_narrow.pth`, `${dir}/heads.pth`);
 * const load = (name: string) => readNpy(`${dir}/${name}.npy`);
 * const [in0, in1, want] = await Promise.all(["in0", "in1", "out"].map(load));
 * const img0 = Tensor.from(gpu, in0.data as Float32Array, in0.shape); // [2, 3, 36, 44] in [0, 1]
 * const img1 = Tensor.from(gpu, in1.data as Float32Array, in1.shape);
 * const d = await lp.forward(img0, img1, { normalize: true }).toF32(); // [B]
 * const ref = want.data as Float32Array;
 * assert.ok(d.every((v, b) => Math.abs(v - ref[b]) < 1e-4 * ref[b]));
 * lp.dispose();
 * ```
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { keep, tidy } from "../tensor/scope.ts";
import { Tensor } from "../tensor/tensor.ts";
import { Module, newInit } from "../nn/module.ts";
import { Conv2d } from "../nn/layers.ts";
import * as ops from "../ops.ts";
import { loadModuleFile } from "./load.ts";
import { runBlock } from "./unet_blocks.ts";
import { Vgg16Features } from "./vgg16.ts";

/** The lpips package's ScalingLayer constants (ImageNet statistics in [-1, 1] units). */
export const LPIPS_SHIFT: readonly number[] = [-0.030, -0.088, -0.188];
export const LPIPS_SCALE: readonly number[] = [0.458, 0.448, 0.450];
/** The epsilon of lpips' `normalize_tensor`. */
export const LPIPS_NORM_EPS = 1e-10;

/** One `NetLinLayer`: Dropout (model.0, inactive at evaluation) then a bias-free 1x1 conv (model.1). */
export class LpipsLinLayer extends Module {
  model: [null, Conv2d];
  constructor(gpu: Gpu, channels: number) {
    super();
    this.model = [null, new Conv2d(newInit(gpu, 1), channels, 1, 1, 1, 0, false)];
  }
}

/** The five linear heads with the lpips package's key names (`lin0.model.1.weight`, ...). */
export class LpipsHeads extends Module {
  lin0: LpipsLinLayer;
  lin1: LpipsLinLayer;
  lin2: LpipsLinLayer;
  lin3: LpipsLinLayer;
  lin4: LpipsLinLayer;
  constructor(gpu: Gpu, widths: readonly number[]) {
    super();
    [this.lin0, this.lin1, this.lin2, this.lin3, this.lin4] = widths.map((w) =>
      new LpipsLinLayer(gpu, w)
    );
  }
  get layers(): LpipsLinLayer[] {
    return [this.lin0, this.lin1, this.lin2, this.lin3, this.lin4];
  }
}

/** Options of {@link Lpips.forward}. */
export interface LpipsForwardOptions {
  /** Inputs are in [0, 1] and are mapped to [-1, 1] first (the lpips package's normalize=True). */
  normalize?: boolean;
}

/** x / (sqrt(sum_c x^2) + eps) over the channel axis of [B, C, H, W]. */
export function normalizeChannels(x: Tensor): Tensor {
  const s = ops.sum(ops.square(x), 1, true);
  const norm = ops.sqrt(ops.scale(s, 1, 1e-30));
  return ops.div(x, ops.scale(norm, 1, LPIPS_NORM_EPS));
}

export class Lpips {
  /** Constant per-channel affine of the input: [1, 3, 1, 1] each, for normalize true / false. */
  private readonly affine: { [k in "raw" | "normalized"]: { a: Tensor; b: Tensor } };

  /**
   * `vgg` and `heads` must have matching widths; both are frozen. `checkpointing.on` recomputes the
   * VGG stages and the per-layer distances during backward (set it on `vgg.checkpointing` too).
   */
  constructor(readonly gpu: Gpu, readonly vgg: Vgg16Features, readonly heads: LpipsHeads) {
    heads.layers.forEach((l, k) => {
      const c = l.model[1].weight.shape[1];
      if (c !== vgg.widths[k]) {
        throw new Error(`lpips: lin${k} takes ${c} channels, the VGG stage gives ${vgg.widths[k]}`);
      }
    });
    vgg.requiresGrad(false);
    heads.requiresGrad(false);
    const make = (m: number, c: number) => {
      const a = LPIPS_SCALE.map((s) => m / s);
      const b = LPIPS_SCALE.map((s, i) => (c - LPIPS_SHIFT[i]) / s);
      return {
        a: keep(Tensor.from(gpu, a, [1, 3, 1, 1])),
        b: keep(Tensor.from(gpu, b, [1, 3, 1, 1])),
      };
    };
    this.affine = { raw: make(1, 0), normalized: make(2, -1) };
  }

  /** Checkpointing of the VGG stages and of the per-layer distances. */
  get checkpointing(): { on: boolean } {
    return this.vgg.checkpointing;
  }

  /**
   * Loads torchvision's vgg16 weights and the lpips v0.1 heads (torch `.pth` or safetensors). The
   * heads file may also be a whole lpips state dict (`net.*`, `scaling_layer.*`, `lins.*` ignored).
   */
  static async fromFiles(gpu: Gpu, vggPath: string, headsPath: string): Promise<Lpips> {
    const vgg = await Vgg16Features.fromFile(gpu, vggPath);
    const heads = new LpipsHeads(gpu, vgg.widths);
    try {
      const r = await loadModuleFile(heads, headsPath, { allowUnexpected: true });
      const odd = r.unexpected.filter((k) => !/^(net|scaling_layer|lins)\./.test(k));
      if (odd.length) {
        throw new Error(
          `${headsPath}: unexpected key(s) for the LPIPS heads (lin0.model.1.weight ...): ` +
            odd.slice(0, 10).join(", "),
        );
      }
      return new Lpips(gpu, vgg, heads);
    } catch (e) {
      vgg.dispose();
      heads.dispose();
      throw e;
    }
  }

  /** Per-layer distances [5] of [B] each (the lpips package's retPerLayer). */
  forwardLayers(in0: Tensor, in1: Tensor, opts: LpipsForwardOptions = {}): Tensor[] {
    if (
      in0.shape.length !== 4 || in0.shape.length !== in1.shape.length ||
      in0.shape.some((d, i) => d !== in1.shape[i])
    ) {
      throw new Error(`lpips: inputs [${in0.shape}] and [${in1.shape}] must be equal [B, 3, H, W]`);
    }
    const { a, b } = this.affine[opts.normalize ? "normalized" : "raw"];
    return tidy(() => {
      const f0 = this.vgg.forward(ops.add(ops.mul(in0, a), b));
      const f1 = this.vgg.forward(ops.add(ops.mul(in1, a), b));
      return this.heads.layers.map((lin, k) => {
        const ck = this.checkpointing.on && (f0[k].requiresGrad || f1[k].requiresGrad);
        return runBlock(ck, (x0, x1) => {
          const d = ops.square(ops.sub(normalizeChannels(x0), normalizeChannels(x1)));
          const l = lin.model[1].forward(d); // [B, 1, h, w]
          return ops.mean(l, [1, 2, 3]);
        }, [f0[k], f1[k]]);
      });
    });
  }

  /** LPIPS distance per sample, [B]. */
  forward(in0: Tensor, in1: Tensor, opts: LpipsForwardOptions = {}): Tensor {
    return tidy(() => {
      const per = this.forwardLayers(in0, in1, opts);
      return per.slice(1).reduce((s, t) => ops.add(s, t), per[0]);
    });
  }

  /** Releases the weights and constants. */
  dispose(): void {
    this.vgg.dispose();
    this.heads.dispose();
    for (const { a, b } of Object.values(this.affine)) {
      a.dispose();
      b.dispose();
    }
  }
}
