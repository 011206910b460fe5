/**
 * AdamW over a module's parameters with torch's semantics, global-norm gradient clipping on the GPU,
 * and state (moments, step) that checkpoints save and restore.
 */
import type { Gpu } from "../gpu/device.ts";
import { keep } from "../tensor/scope.ts";
import { Tensor } from "../tensor/tensor.ts";
import { adamwUpdate, fill, globalGradNorm } from "../ops.ts";
import { readMany } from "../tensor/readback.ts";

export interface AdamWOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Global-norm clip (<= 0 disables). */
  gradClip: number;
}

export class AdamW {
  /** Optimizer steps taken. */
  step = 0;
  private readonly m: Tensor[];
  private readonly v: Tensor[];

  constructor(
    readonly gpu: Gpu,
    readonly params: Tensor[],
    readonly opts: AdamWOptions,
  ) {
    this.m = params.map((p) => zeros(gpu, p.shape));
    this.v = params.map((p) => zeros(gpu, p.shape));
  }

  /**
   * Applies one update with learning rate `lr` to every parameter that has a gradient. Gradients are
   * multiplied by `gradScale` first. Returns the global norm of the raw (unscaled) gradients as a
   * 1-element tensor the caller may read back and must dispose.
   */
  update(lr: number, gradScale = 1, precomputedNorm?: Tensor): Tensor {
    const norm = precomputedNorm ?? this.gradNorm();
    this.step++;
    this.params.forEach((p, i) => {
      if (!p.grad) return;
      adamwUpdate(p, p.grad, this.m[i], this.v[i], norm, {
        lr,
        beta1: this.opts.beta1,
        beta2: this.opts.beta2,
        eps: this.opts.eps,
        weightDecay: this.opts.weightDecay,
        step: this.step,
        maxNorm: this.opts.gradClip,
        gradScale,
      });
    });
    return norm;
  }

  /** Global L2 norm of the current gradients (a 1-element GPU tensor; the caller disposes it). */
  gradNorm(): Tensor {
    const grads = this.params.map((p) => p.grad).filter((g): g is Tensor => g !== null);
    return globalGradNorm(this.gpu, grads);
  }

  /** Moments as host arrays (for checkpoints). */
  async state(): Promise<{ step: number; m: Float32Array[]; v: Float32Array[] }> {
    const all = await readMany([...this.m, ...this.v]);
    return { step: this.step, m: all.slice(0, this.m.length), v: all.slice(this.m.length) };
  }

  /** Restores moments saved by {@link state}. */
  load(s: { step: number; m: Float32Array[]; v: Float32Array[] }): void {
    if (s.m.length !== this.m.length || s.v.length !== this.v.length) {
      throw new Error(
        `optimizer state holds ${s.m.length} tensors, the model has ${this.m.length} parameters`,
      );
    }
    this.step = s.step;
    this.m.forEach((t, i) => this.gpu.write(t.buffer, 0, s.m[i]));
    this.v.forEach((t, i) => this.gpu.write(t.buffer, 0, s.v[i]));
  }

  dispose(): void {
    for (const t of [...this.m, ...this.v]) t.dispose();
  }
}

/** Sets every parameter's gradient to zero (keeping the buffers). */
export function zeroGrads(params: Tensor[]): void {
  for (const p of params) if (p.grad) fill(p.grad, 0);
}

function zeros(gpu: Gpu, shape: readonly number[]): Tensor {
  const t = keep(Tensor.empty(gpu, shape));
  fill(t, 0);
  return t;
}
