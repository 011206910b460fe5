/**
 * The reflow (rectified-flow distillation) loss, as the original's rectified-flow loss function:
 * t drawn by `reflow.reflow_t_schedule` in [eps, 1], zt = t z1 + (1 - t) z0, target z1 - z0, the
 * student sees zt with its UNet timestep and the caption's hidden states, and the L2 loss is the
 * mean over elements per sample then over the batch (`training.reduce_mean`), or half the sum per
 * sample averaged over the batch.
 *
 * zt and the target are formed on the host in float32 (the batch comes from the host anyway), so
 * the GPU only runs the model and the squared error.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { getConfig } from "../../configs/train.ts";
 * import { TINY_BENCH_UNET } from "../bench/tiny_setup.ts";
 * import { Gpu } from "../gpu/device.ts";
 * import { UNet2DConditionModel } from "../models/unet2d_condition.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { CounterRng, STREAM_TRAIN } from "./rng.ts";
 *
 * const gpu = await Gpu.open();
 * const config = getConfig();
 * const unet = UNet2DConditionModel.create(gpu, TINY_BENCH_UNET, 0); // a fresh student, 4x8x8
 * const rng = new CounterRng(config.seed, STREAM_TRAIN);
 * const B = 2, n = 4 * 8 * 8;
 * const batch = {
 *   z0: rng.normals(rng.advance(B * n), B * n), // the noise of two pairs
 *   z1: rng.normals(rng.advance(B * n), B * n), // the teacher's latents (random here)
 *   shape: [B, 4, 8, 8] as const,
 *   context: Tensor.from(gpu, new Float32Array(B * 8 * 32), [B, 8, 32]), // caption states
 * };
 * const schedule = parseTSchedule(config.reflow.reflow_t_schedule);
 * const t = drawT(schedule, rng, B);
 * const opts = {
 *   loss: config.reflow.reflow_loss,
 *   reduceMean: config.training.reduce_mean,
 *   orientation: config.training.timestep_orientation,
 * };
 * const loss = reflowLoss(gpu, (zt, ts, ctx) => unet.forward(zt, ts, ctx), batch, t, opts);
 * assert.ok(loss.requiresGrad); // the trainer's backward reaches the UNet's parameters from here
 * const [value] = await loss.toF32();
 * assert.ok(Number.isFinite(value) && value > 0);
 * ```
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { tidy } from "../tensor/scope.ts";
import * as ops from "../ops.ts";
import { FLOW_EPS, type TimestepOrientation, unetTimestep } from "../flow/time.ts";
import type { CounterRng } from "./rng.ts";

// The timestep mapping lives in core/flow/time.ts; re-exported for the loss's users.
export { unetTimestep };

/** The original's eps: t lives in [eps, 1] (the flow's eps, core/flow/time.ts). */
export const REFLOW_EPS = FLOW_EPS;

/** A parsed `reflow.reflow_t_schedule`. */
export type TSchedule =
  | { kind: "t0" }
  | { kind: "t1" }
  | { kind: "uniform" }
  | { kind: "k"; k: number };

/** Parses `reflow.reflow_t_schedule`: "t0", "t1", "uniform" or an integer k > 1 (text or number). */
export function parseTSchedule(value: string | number): TSchedule {
  if (value === "t0" || value === "t1" || value === "uniform") return { kind: value };
  const k = typeof value === "number" ? value : /^\s*\d+\s*$/.test(value) ? Number(value) : NaN;
  if (Number.isInteger(k) && k > 1) return { kind: "k", k };
  throw new Error(
    `config.reflow.reflow_t_schedule: "${value}" is not "t0", "t1", "uniform" or an integer k > 1`,
  );
}

/**
 * Times for `n` samples starting at draw `base` of `rng` (the caller reserves the draws, so a worker
 * can take its shard of a global batch): t0 -> eps, t1 -> 1, uniform -> U[eps, 1),
 * k -> randint(0, k) / k * (1 - eps) + eps.
 */
export function timesAt(
  s: TSchedule,
  rng: CounterRng,
  base: number,
  n: number,
  eps = REFLOW_EPS,
): Float64Array {
  const t = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    switch (s.kind) {
      case "t0":
        t[i] = eps;
        break;
      case "t1":
        t[i] = 1;
        break;
      case "uniform":
        t[i] = rng.uniformAt(base + i) * (1 - eps) + eps;
        break;
      case "k":
        t[i] = rng.intAt(base + i, s.k) / s.k * (1 - eps) + eps;
        break;
    }
  }
  return t;
}

/** Draws times for `n` samples, advancing `rng` by n. */
export function drawT(s: TSchedule, rng: CounterRng, n: number, eps = REFLOW_EPS): Float64Array {
  return timesAt(s, rng, rng.advance(n), n, eps);
}

/** zt = t z1 + (1 - t) z0 and target = z1 - z0 per sample, in float32 as torch computes them. */
export function interpolate(
  z0: Float32Array,
  z1: Float32Array,
  t: ArrayLike<number>,
): { zt: Float32Array; target: Float32Array } {
  const B = t.length;
  if (z0.length !== z1.length || z0.length % B !== 0) {
    throw new Error(`reflow loss: z0 (${z0.length}) and z1 (${z1.length}) do not split into ${B}`);
  }
  const n = z0.length / B;
  const zt = new Float32Array(z0.length);
  const target = new Float32Array(z0.length);
  const f = Math.fround;
  for (let b = 0; b < B; b++) {
    const tb = f(t[b]);
    const sb = f(1 - tb);
    for (let j = b * n; j < (b + 1) * n; j++) {
      zt[j] = f(f(tb * z1[j]) + f(sb * z0[j]));
      target[j] = f(z1[j] - z0[j]);
    }
  }
  return { zt, target };
}

/** The student: velocity for zt at UNet timesteps, given the caption hidden states. */
export type VelocityFn = (zt: Tensor, timesteps: Tensor, context: Tensor) => Tensor;

/** Loss settings (from `reflow.reflow_loss`, `training.reduce_mean`, timestep orientation). */
export interface ReflowLossOptions {
  loss: string;
  reduceMean: boolean;
  orientation: TimestepOrientation;
}

/**
 * Refuses unknown losses, naming the setting. "lpips" and "lpips+l2" are computed by
 * `lpipsReflowLoss` (core/train/lpips_loss.ts; `selectReflowLoss` picks the function, and
 * `checkLpipsConfig` checks their settings), not by {@link reflowLoss}.
 */
export function checkLossKind(loss: string): void {
  // The LPIPS losses live in lpips_loss.ts.
  if (loss === "l2" || loss === "lpips" || loss === "lpips+l2") return;
  throw new Error(
    `config.reflow.reflow_loss: unknown loss "${loss}" (expected "l2", "lpips" or "lpips+l2")`,
  );
}

/** A batch of pairs on the host plus the caption hidden states on the GPU. */
export interface LossBatch {
  /** [B, C, H, W] float32. */
  z0: Float32Array;
  z1: Float32Array;
  shape: readonly [number, number, number, number];
  /** [B, L, D] hidden states (no gradient). */
  context: Tensor;
}

/**
 * The reflow L2 loss of `model` on `batch` at times `t` (one per sample): a scalar tensor [1]
 * carrying the graph back to the model's parameters.
 */
export function reflowLoss(
  gpu: Gpu,
  model: VelocityFn,
  batch: LossBatch,
  t: ArrayLike<number>,
  opts: ReflowLossOptions,
): Tensor {
  checkLossKind(opts.loss);
  if (opts.loss !== "l2") {
    // LPIPS needs the VAE and LPIPS networks; see selectReflowLoss in lpips_loss.ts.
    throw new Error(`reflowLoss computes "l2"; "${opts.loss}" is lpipsReflowLoss (lpips_loss.ts)`);
  }
  const [B, C, H, W] = batch.shape;
  if (t.length !== B) throw new Error(`reflow loss: ${t.length} times for a batch of ${B}`);
  const { zt, target } = interpolate(batch.z0, batch.z1, t);
  const ts = Float32Array.from(t, (x) => unetTimestep(x, opts.orientation));
  const n = C * H * W;
  return tidy(() => {
    const ztT = Tensor.from(gpu, zt, [B, C, H, W]);
    const targetT = Tensor.from(gpu, target, [B, C, H, W]);
    const tsT = Tensor.from(gpu, ts, [B]);
    const pred = model(ztT, tsT, batch.context);
    const sq = ops.square(ops.sub(pred, targetT));
    // mean per sample then batch = mean of all; 0.5 * sum per sample then batch mean.
    return ops.scale(ops.reshape(ops.sum(sq), [1]), opts.reduceMean ? 1 / (B * n) : 0.5 / B);
  });
}

/** Float64 reference of the loss given the model's prediction (tests, checks). */
export function reflowLossReference(
  pred: ArrayLike<number>,
  z0: ArrayLike<number>,
  z1: ArrayLike<number>,
  B: number,
  reduceMean: boolean,
): number {
  const n = pred.length / B;
  let total = 0;
  for (let b = 0; b < B; b++) {
    let s = 0;
    for (let j = b * n; j < (b + 1) * n; j++) s += (pred[j] - (z1[j] - z0[j])) ** 2;
    total += reduceMean ? s / n : 0.5 * s;
  }
  return total / B;
}
