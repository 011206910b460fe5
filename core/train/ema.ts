/**
 * Exponential moving average of parameters, as the original's ExponentialMovingAverage: with
 * warm-up the decay is min(decay, (1 + n) / (10 + n)), n counting updates from 1. `withAverage`
 * evaluates with the EMA weights and always restores the live ones.
 */
import type { Gpu } from "../gpu/device.ts";
import { keep } from "../tensor/scope.ts";
import { Tensor } from "../tensor/tensor.ts";
import { emaUpdate } from "../ops.ts";
import { readMany } from "../tensor/readback.ts";

export class Ema {
  numUpdates = 0;
  readonly shadow: Tensor[];

  constructor(
    readonly gpu: Gpu,
    readonly params: Tensor[],
    readonly decay: number,
    readonly warmup = true,
  ) {
    this.shadow = params.map((p) => {
      const s = keep(Tensor.empty(gpu, p.shape));
      gpu.copy(p.buffer, 0, s.buffer, 0, p.bytes);
      return s;
    });
  }

  /** The decay the next update uses. */
  nextDecay(): number {
    const n = this.numUpdates + 1;
    return this.warmup ? Math.min(this.decay, (1 + n) / (10 + n)) : this.decay;
  }

  update(): void {
    const d = this.nextDecay();
    this.numUpdates++;
    this.params.forEach((p, i) => emaUpdate(this.shadow[i], p, d));
  }

  /** Runs `fn` with the EMA weights in the parameters, then puts the live weights back. */
  async withAverage<T>(fn: () => Promise<T>): Promise<T> {
    const backup = this.params.map((p) => {
      const b = keep(Tensor.empty(this.gpu, p.shape));
      this.gpu.copy(p.buffer, 0, b.buffer, 0, p.bytes);
      return b;
    });
    this.params.forEach((p, i) => this.gpu.copy(this.shadow[i].buffer, 0, p.buffer, 0, p.bytes));
    try {
      return await fn();
    } finally {
      this.params.forEach((p, i) => this.gpu.copy(backup[i].buffer, 0, p.buffer, 0, p.bytes));
      for (const b of backup) b.dispose();
    }
  }

  async state(): Promise<{ numUpdates: number; shadow: Float32Array[] }> {
    return { numUpdates: this.numUpdates, shadow: await readMany(this.shadow) };
  }

  load(s: { numUpdates: number; shadow: Float32Array[] }): void {
    if (s.shadow.length !== this.shadow.length) {
      throw new Error(
        `EMA state holds ${s.shadow.length} tensors, the model has ${this.shadow.length}`,
      );
    }
    this.numUpdates = s.numUpdates;
    this.shadow.forEach((t, i) => this.gpu.write(t.buffer, 0, s.shadow[i]));
  }

  dispose(): void {
    for (const s of this.shadow) s.dispose();
  }
}
