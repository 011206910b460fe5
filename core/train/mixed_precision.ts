/**
 * fp16 mixed precision (`training.mixed_precision = "fp16"`), as torch.cuda.amp with GradScaler:
 * the forward and backward run on f16 copies of the f32 master weights (the casts are on the tape,
 * so gradients arrive in f32 in the masters' `.grad`), the loss gradient is scaled by a dynamic
 * factor so small f16 gradients do not flush to zero, and a step whose gradients overflowed is
 * skipped while the factor halves. The factor doubles after `growthInterval` clean steps.
 */
import type { Module } from "../nn/module.ts";
import { markParameter } from "../nn/module.ts";
import { cast } from "../ops.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { keep } from "../tensor/scope.ts";

/** torch.cuda.amp.GradScaler's defaults. */
export const INIT_SCALE = 2 ** 16;
export const GROWTH_INTERVAL = 2000;

export interface LossScaleState {
  scale: number;
  goodSteps: number;
}

export class LossScaler {
  scale: number;
  goodSteps = 0;
  constructor(init = INIT_SCALE, readonly growthInterval = GROWTH_INTERVAL) {
    this.scale = init;
  }

  /** Records whether this step's gradients were finite; returns whether to apply the step. */
  update(finite: boolean): boolean {
    if (!finite) {
      this.scale /= 2;
      this.goodSteps = 0;
      return false;
    }
    if (++this.goodSteps >= this.growthInterval) {
      this.scale *= 2;
      this.goodSteps = 0;
    }
    return true;
  }

  state(): LossScaleState {
    return { scale: this.scale, goodSteps: this.goodSteps };
  }

  load(s: LossScaleState): void {
    if (!(s.scale > 0) || !Number.isInteger(s.goodSteps)) {
      throw new Error(`loss scale state ${JSON.stringify(s)} is invalid`);
    }
    this.scale = s.scale;
    this.goodSteps = s.goodSteps;
  }
}

/**
 * The loss scaler of `training.mixed_precision` (null for "no"), restored from a resumed run's
 * state; fp16 needs the adapter feature shader-f16.
 */
export function lossScalerFor(
  mixedPrecision: string,
  gpu: { hasF16: boolean },
  resumed?: LossScaleState,
): LossScaler | null {
  if (mixedPrecision !== "fp16") return null;
  if (!gpu.hasF16) {
    throw new Error(
      'config.training.mixed_precision = "fp16" needs the adapter feature shader-f16; use "no"',
    );
  }
  const scaler = new LossScaler();
  if (resumed) scaler.load(resumed);
  return scaler;
}

/**
 * Runs `fn` (forward and backward) with `module`'s parameters replaced by f16 casts of the f32
 * masters; the masters are put back afterwards and the casts released.
 */
export function withHalfWeights<T>(module: Module, fn: () => T): T {
  const restore = useHalfWeights(module);
  try {
    return fn();
  } finally {
    restore();
  }
}

/** {@link withHalfWeights} for a `fn` that awaits (a backward that pauses for the exchange). */
export async function withHalfWeightsAsync<T>(module: Module, fn: () => Promise<T>): Promise<T> {
  const restore = useHalfWeights(module);
  try {
    return await fn();
  } finally {
    restore();
  }
}

/** Swaps in f16 casts of the parameters; returns what puts the masters back. */
function useHalfWeights(module: Module): () => void {
  const masters = new Map<string, Tensor>(module.namedParameters());
  module.mapParameters((_, p) => markParameter(keep(cast(p, "f16"))));
  return () =>
    module.mapParameters((name, h) => {
      h.dispose();
      return masters.get(name)!;
    });
}
