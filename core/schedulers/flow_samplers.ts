/**
 * Rectified-flow samplers (the original tool's `euler_sampler` and `rk45_sampler`): integrate
 * dx/dt = v(x, t) from t = eps (noise) to t = 1 (data). The velocity model is an async callback on
 * float32 states; the caller maps t to the UNet timestep (the original uses floor(999·t)).
 *
 * @module
 */

import { solveRK45 } from "./dormand_prince.ts";
import { axpy, toF32, type Vec } from "./vec.ts";
import { FLOW_EPS } from "../flow/time.ts";
import { PathStats } from "../flow/straightness.ts";

export { FLOW_EPS };

/** Velocity model v(x, t): returns dx/dt with the length of `x`. */
export type VelocityModel = (x: Float32Array, t: number) => Promise<Float32Array>;

/** Options of {@link eulerSample}. */
export interface EulerOptions {
  /** Number of Euler steps N (the original's `sample_N`). */
  steps: number;
  /** Start time eps (default 1e-3). */
  eps?: number;
  /** Keep x after every step (N + 1 states including the start). */
  returnTrajectory?: boolean;
  /**
   * SDE variant (the original's `sigma_var`, default 0 = plain ODE): sigma_t = (1 - t)·sigmaVar,
   * the drift is corrected so the marginals are preserved and Gaussian noise is added each step.
   */
  sigmaVar?: number;
  /** Scale of the initial noise (the original's `noise_scale`, default 1); used by the SDE variant. */
  noiseScale?: number;
  /** Standard normal noise of the state's length, drawn once per step; required when sigmaVar > 0. */
  randn?: (length: number) => Float32Array;
}

/** Result of a flow sampler. */
export interface FlowSampleResult {
  /** Final state x(1). */
  x: Float32Array;
  /** Number of velocity-model evaluations. */
  nfe: number;
  /** Euler: every state; RK45: the accepted states (only when asked for). */
  trajectory?: Float32Array[];
  /** Times of the trajectory states. */
  times?: number[];
}

/**
 * Euler sampler: for i = 0..N-1, t_i = i/N·(1 - eps) + eps and x ← x + v(x, t_i)·dt with dt = 1/N
 * (as the original: dt is 1/N although the covered span is 1 - eps).
 */
export async function eulerSample(
  model: VelocityModel,
  z0: Vec,
  options: EulerOptions,
): Promise<FlowSampleResult> {
  const n = options.steps;
  if (!Number.isInteger(n) || n <= 0) {
    throw new Error(`eulerSample: steps=${n} must be a positive integer`);
  }
  const eps = options.eps ?? FLOW_EPS;
  if (!(eps >= 0 && eps < 1)) throw new Error(`eulerSample: eps=${eps} must be in [0, 1)`);
  const sigmaVar = options.sigmaVar ?? 0;
  if (!(sigmaVar >= 0)) throw new Error(`eulerSample: sigmaVar=${sigmaVar} must be >= 0`);
  const noiseScale = options.noiseScale ?? 1;
  if (!(noiseScale > 0)) throw new Error(`eulerSample: noiseScale=${noiseScale} must be > 0`);
  if (sigmaVar > 0 && !options.randn) {
    throw new Error(`eulerSample: sigmaVar=${sigmaVar} needs a randn noise source`);
  }

  const dt = 1 / n;
  let x: Float32Array = toF32(z0);
  const trajectory = options.returnTrajectory ? [x.slice()] : undefined;
  const times = options.returnTrajectory ? [eps] : undefined;
  for (let i = 0; i < n; i++) {
    const t = i / n * (1 - eps) + eps;
    const v = await model(x, t);
    if (v.length !== x.length) {
      throw new Error(`eulerSample: model returned ${v.length} values, expected ${x.length}`);
    }
    const sigmaT = (1 - t) * sigmaVar;
    if (sigmaT > 0) {
      // Drift correction that keeps the marginals of the ODE (rectified-flow paper's SDE sampler).
      const k = sigmaT ** 2 / (2 * noiseScale ** 2 * (1 - t) ** 2);
      const noise = options.randn!(x.length);
      const sq = Math.sqrt(dt);
      const next = new Float32Array(x.length);
      for (let j = 0; j < x.length; j++) {
        const drift = v[j] + k * (0.5 * t * (1 - t) * v[j] - 0.5 * (2 - t) * x[j]);
        next[j] = x[j] + drift * dt + sigmaT * sq * noise[j];
      }
      x = next;
    } else {
      x = axpy(dt, v, x, new Float32Array(x.length));
    }
    trajectory?.push(x.slice());
    times?.push((i + 1) / n * (1 - eps) + eps);
  }
  return { x, nfe: n, trajectory, times };
}

/** Options of {@link rk45Sample}. */
export interface RK45SampleOptions {
  /** rtol = atol (the original's `ode_tol`, default 1e-5). */
  tol?: number;
  /** Start time eps (default 1e-3). */
  eps?: number;
  /** Integrate from 1 back to eps (the original's `reverse`: data → noise). */
  reverse?: boolean;
  /** Keep the accepted states (the original's `return_traj`). */
  returnTrajectory?: boolean;
}

/**
 * Adaptive RK45 sampler: scipy-exact Dormand-Prince from eps to 1 with rtol = atol = tol. The
 * solver state is float64 (as scipy's); the model sees it rounded to float32.
 */
export async function rk45Sample(
  model: VelocityModel,
  z0: Vec,
  options: RK45SampleOptions = {},
): Promise<FlowSampleResult & { acceptedTimes: number[] }> {
  const tol = options.tol ?? 1e-5;
  const eps = options.eps ?? FLOW_EPS;
  if (!(tol > 0)) throw new Error(`rk45Sample: tol=${tol} must be > 0`);
  if (!(eps >= 0 && eps < 1)) throw new Error(`rk45Sample: eps=${eps} must be in [0, 1)`);
  const [t0, t1] = options.reverse ? [1, eps] : [eps, 1];
  const sol = await solveRK45((t, y) => model(toF32(y), t), t0, t1, z0, {
    rtol: tol,
    atol: tol,
    keepStates: options.returnTrajectory,
  });
  if (sol.status !== "finished") {
    throw new Error(`rk45Sample: integration stopped at t=${sol.t.at(-1)} (step size too small)`);
  }
  return {
    x: toF32(sol.y),
    nfe: sol.nfev,
    acceptedTimes: sol.t,
    trajectory: sol.states?.map(toF32),
    times: options.returnTrajectory ? sol.t : undefined,
  };
}

/** Options of {@link straightness}. */
export interface StraightnessOptions {
  /** Number of Euler steps along which the path is measured (default 100). */
  steps?: number;
  /** Start time eps (default 1e-3). */
  eps?: number;
}

/**
 * Straightness of the flow from `z0` (rectified-flow paper, Liu et al. 2022): the Euler path is
 * simulated and S = mean over the path points of mean((x_final - x_0) - v(x_t, t))². Zero means
 * the path is a straight line travelled at constant speed (computed by core/flow/straightness.ts).
 * Costs `steps` model calls (the velocities of the Euler pass are reused).
 */
export async function straightness(
  model: VelocityModel,
  z0: Vec,
  options: StraightnessOptions = {},
): Promise<{ straightness: number; x: Float32Array; nfe: number }> {
  const steps = options.steps ?? 100;
  const start = toF32(z0);
  const stats = new PathStats(1, start.length);
  const recording: VelocityModel = async (x, t) => {
    const v = await model(x, t);
    stats.add(v);
    return v;
  };
  const run = await eulerSample(recording, start, { steps, eps: options.eps });
  return { straightness: stats.straightness(start, run.x)[0], x: run.x, nfe: run.nfe };
}
