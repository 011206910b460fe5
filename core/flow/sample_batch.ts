/**
 * One batch of rectified-flow samples (the sample job, the trainer's sample grids, the demo and
 * the web page): the student UNet as the velocity model (velocity.ts) integrated from z0 with
 * Euler (`sample_N` steps, optionally the stochastic `sigma_var` variant) or adaptive RK45
 * (rtol = atol = `ode_tol`).
 *
 * As the original's student sampling: the UNet gets the captions' hidden states and no
 * classifier-free guidance; the whole batch is one state vector (RK45 picks one step size for the
 * batch and reports one NFE for it, as scipy's `solve_ivp` on the flattened batch does). The
 * timestep is floor(999 t) ("original" orientation) for Euler and RK45 alike (the original's RK45
 * passes the raw t, a bug not copied), or 999 (1 - t) for a model trained "pretrained".
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { eulerSample, type FlowSampleResult, rk45Sample } from "../schedulers/flow_samplers.ts";
import { FLOW_EPS, type TimestepOrientation } from "./time.ts";
import { unetVelocity, type VelocityNet } from "./velocity.ts";
import { PathStats } from "./straightness.ts";

export type { VelocityNet } from "./velocity.ts";

/** The original's RK45 tolerance (`ode_tol` of its RectifiedFlow, which its configs do not expose). */
export const DEFAULT_ODE_TOL = 1e-5;

/** The ODE solvers of the original (`sampling.use_ode_sampler`). */
export const SAMPLERS = ["euler", "rk45"] as const;
/** A solver name. */
export type SamplerName = (typeof SAMPLERS)[number];

/** Settings of {@link sampleBatch}. */
export interface BatchSamplerOptions {
  sampler: SamplerName;
  /** Euler steps (`sampling.sample_N`). */
  sampleN: number;
  /** RK45 tolerance (the original's `ode_tol`, 1e-5). */
  odeTol: number;
  /** Euler SDE variance (the original's `sigma_var`, 0 = plain ODE). */
  sigmaVar: number;
  /** `sampling.init_noise_scale` (the SDE drift correction uses it). */
  noiseScale: number;
  /** Map from flow time to the UNet timestep. */
  orientation: TimestepOrientation;
  /** Keep the states along the path (Euler: every step; RK45: accepted steps). */
  returnTrajectory: boolean;
  /** Standard normal noise of the whole batch for SDE step `step` (needed when sigmaVar > 0). */
  stepNoise?: (step: number, length: number) => Float32Array;
  /** Start time (1e-3). */
  eps?: number;
}

/** What a batch's sampling produced. */
export interface BatchSampleResult {
  /** x(1), sample-major [B, C, H, W]. */
  x: Float32Array;
  /** Velocity evaluations (shared by the batch). */
  nfe: number;
  /** States along the path (each the whole batch), when asked for. */
  trajectory?: Float32Array[];
  /** Straightness of each sample's path (see straightness.ts). */
  straightness: number[];
  /** Wall time of the integration, seconds. */
  seconds: number;
}

/**
 * Samples one batch: z0 [B, C, H, W] (host) and the captions' hidden states `context`
 * [B, L, D] (GPU) -> x(1).
 */
export async function sampleBatch(
  gpu: Gpu,
  unet: VelocityNet,
  context: Tensor,
  z0: Float32Array,
  shape: readonly [number, number, number],
  opts: BatchSamplerOptions,
): Promise<BatchSampleResult> {
  const [C, H, W] = shape;
  const n = C * H * W;
  const B = z0.length / n;
  if (!Number.isInteger(B) || B < 1) {
    throw new Error(`sample: z0 holds ${z0.length} values, not a batch of ${C}x${H}x${W} latents`);
  }
  if (context.shape[0] !== B) {
    throw new Error(`sample: ${context.shape[0]} caption states for a batch of ${B}`);
  }
  const stats = new PathStats(B, n);
  const model = unetVelocity(gpu, unet, context, shape, opts.orientation, (v) => stats.add(v));
  const t0 = performance.now();
  const result = await integrate(model, z0, opts);
  const seconds = (performance.now() - t0) / 1000;
  return {
    x: result.x,
    nfe: result.nfe,
    trajectory: result.trajectory,
    straightness: stats.straightness(z0, result.x),
    seconds,
  };
}

/** Runs the solver `opts.sampler` on `model` from z0. */
async function integrate(
  model: ReturnType<typeof unetVelocity>,
  z0: Float32Array,
  opts: BatchSamplerOptions,
): Promise<FlowSampleResult> {
  const eps = opts.eps ?? FLOW_EPS;
  if (opts.sampler === "euler") {
    let step = 0;
    const randn = opts.sigmaVar > 0
      ? (length: number) => {
        if (!opts.stepNoise) throw new Error("sample: sigma_var > 0 needs a noise source");
        return opts.stepNoise(step++, length);
      }
      : undefined;
    return await eulerSample(model, z0, {
      steps: opts.sampleN,
      eps,
      returnTrajectory: opts.returnTrajectory,
      sigmaVar: opts.sigmaVar,
      noiseScale: opts.noiseScale,
      randn,
    });
  }
  if (opts.sampler === "rk45") {
    return await rk45Sample(model, z0, {
      tol: opts.odeTol,
      eps,
      returnTrajectory: opts.returnTrajectory,
    });
  }
  throw new Error(
    `config.sampling.use_ode_sampler: "${opts.sampler}" is not one of ${SAMPLERS.join(", ")}`,
  );
}
