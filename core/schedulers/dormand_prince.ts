/**
 * Adaptive Dormand-Prince 5(4) integrator reproducing `scipy.integrate.solve_ivp(method="RK45")`
 * (scipy 1.10) step for step: the same initial step selection (Hairer, Nørsett & Wanner II.4), RMS
 * error norm against atol + rtol·max(|y|, |y_new|), step factors (safety 0.9, within [0.2, 10]),
 * first-same-as-last reuse of f, no growth right after a rejection, max_step = ∞, and clipping of
 * the last step at t_bound. The right-hand side is async so a GPU model can be plugged in.
 *
 * @module
 */

import { addScaledCombination, rmsScaled, type Vec } from "./vec.ts";

/** Right-hand side f(t, y) of the ODE; returns dy/dt with the length of `y`. */
export type OdeRhs = (t: number, y: Float64Array) => Promise<Vec> | Vec;

/** Options of {@link solveRK45}. */
export interface RK45Options {
  /** Relative tolerance (default 1e-3, scipy's default). */
  rtol?: number;
  /** Absolute tolerance (default 1e-6, scipy's default). */
  atol?: number;
  /** Keep every accepted state (memory: one state per accepted step). */
  keepStates?: boolean;
}

/** Result of {@link solveRK45}. */
export interface RK45Result {
  /** "finished" when t_bound was reached; otherwise the integration stopped early. */
  status: "finished" | "step_too_small";
  /** Times: t0 then each accepted step's end (scipy's `sol.t`). */
  t: number[];
  /** Final state y(t_bound). */
  y: Float64Array;
  /** States at every entry of `t` when `keepStates` was set. */
  states?: Float64Array[];
  /** Number of right-hand side evaluations (scipy's `nfev`). */
  nfev: number;
  /** Accepted and rejected step counts. */
  accepted: number;
  rejected: number;
}

// Dormand-Prince 5(4) tableau (Dormand & Prince 1980).
const C = [0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1];
const A: number[][] = [
  [],
  [1 / 5],
  [3 / 40, 9 / 40],
  [44 / 45, -56 / 15, 32 / 9],
  [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
  [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
];
const B = [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84];
/** Difference between the 5th- and 4th-order weights (7 stages, the last is f(t+h, y_new)). */
const E = [-71 / 57600, 0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40];
const ERROR_ESTIMATOR_ORDER = 4;
const ERROR_EXPONENT = -1 / (ERROR_ESTIMATOR_ORDER + 1);
const SAFETY = 0.9;
const MIN_FACTOR = 0.2;
const MAX_FACTOR = 10;

function nextAfter(x: number, direction: number): number {
  if (x === 0) return direction > 0 ? Number.MIN_VALUE : -Number.MIN_VALUE;
  const buf = new Float64Array([x]);
  const bits = new BigInt64Array(buf.buffer);
  bits[0] += (direction > 0) === (x > 0) ? 1n : -1n;
  return buf[0];
}

function checkTolerance(name: string, v: number): number {
  if (!(typeof v === "number" && v > 0 && Number.isFinite(v))) {
    throw new Error(`solveRK45: ${name}=${v} must be a positive finite number`);
  }
  return v;
}

/**
 * Integrates y' = f(t, y) from t0 to tBound (either direction) like scipy's RK45.
 * `y0` is copied into float64; `fun` receives float64 states (do not keep references to them).
 */
export async function solveRK45(
  fun: OdeRhs,
  t0: number,
  tBound: number,
  y0: Vec,
  options: RK45Options = {},
): Promise<RK45Result> {
  const rtol = checkTolerance("rtol", options.rtol ?? 1e-3);
  const atol = checkTolerance("atol", options.atol ?? 1e-6);
  if (!Number.isFinite(t0) || !Number.isFinite(tBound)) {
    throw new Error(`solveRK45: t0=${t0}, tBound=${tBound} must be finite`);
  }
  const n = y0.length;
  let nfev = 0;
  const f = async (t: number, y: Float64Array): Promise<Float64Array> => {
    nfev++;
    const out = await fun(t, y);
    if (out.length !== n) {
      throw new Error(`solveRK45: right-hand side returned ${out.length} values, expected ${n}`);
    }
    return Float64Array.from(out);
  };
  const direction = tBound !== t0 ? Math.sign(tBound - t0) : 1;

  let t = t0;
  let y: Float64Array = Float64Array.from(y0);
  let fy: Float64Array = await f(t, y);
  const ts = [t];
  const states = options.keepStates ? [y.slice()] : undefined;
  let accepted = 0;
  let rejected = 0;
  if (n === 0 || t === tBound) {
    return { status: "finished", t: ts, y, states, nfev, accepted, rejected };
  }

  let hAbs = await initialStep(f, t, y, fy, direction, rtol, atol);
  const K: Float64Array[] = new Array(7);
  const scale = new Float64Array(n);
  const err = new Float64Array(n);
  while (true) {
    const minStep = 10 * Math.abs(nextAfter(t, direction) - t);
    if (hAbs < minStep) hAbs = minStep; // max_step is infinite
    let stepRejected = false;
    let yNew: Float64Array;
    let fNew: Float64Array;
    let tNew: number;
    while (true) {
      if (hAbs < minStep) {
        return { status: "step_too_small", t: ts, y, states, nfev, accepted, rejected };
      }
      let h = hAbs * direction;
      tNew = t + h;
      if (direction * (tNew - tBound) > 0) tNew = tBound;
      h = tNew - t;
      hAbs = Math.abs(h);

      K[0] = fy;
      for (let s = 1; s < 6; s++) {
        const yStage = addScaledCombination(y, h, A[s], K.slice(0, s), new Float64Array(n));
        K[s] = await f(t + C[s] * h, yStage);
      }
      yNew = addScaledCombination(y, h, B, K.slice(0, 6), new Float64Array(n));
      fNew = await f(t + h, yNew);
      K[6] = fNew;

      for (let i = 0; i < n; i++) {
        scale[i] = atol + Math.max(Math.abs(y[i]), Math.abs(yNew[i])) * rtol;
        let e = 0;
        for (let j = 0; j < 7; j++) if (E[j] !== 0) e += K[j][i] * E[j];
        err[i] = e * h;
      }
      const errorNorm = rmsScaled(err, scale);
      if (errorNorm < 1) {
        let factor = errorNorm === 0
          ? MAX_FACTOR
          : Math.min(MAX_FACTOR, SAFETY * errorNorm ** ERROR_EXPONENT);
        if (stepRejected) factor = Math.min(1, factor);
        hAbs *= factor;
        break;
      }
      hAbs *= Math.max(MIN_FACTOR, SAFETY * errorNorm ** ERROR_EXPONENT);
      stepRejected = true;
      rejected++;
    }
    accepted++;
    t = tNew;
    y = yNew;
    fy = fNew;
    ts.push(t);
    states?.push(y.slice());
    if (direction * (t - tBound) >= 0) {
      return { status: "finished", t: ts, y, states, nfev, accepted, rejected };
    }
  }
}

/** Hairer-Nørsett-Wanner initial step (scipy's select_initial_step, 1.10); one extra f call. */
async function initialStep(
  f: (t: number, y: Float64Array) => Promise<Float64Array>,
  t0: number,
  y0: Float64Array,
  f0: Float64Array,
  direction: number,
  rtol: number,
  atol: number,
): Promise<number> {
  const n = y0.length;
  const scale = Float64Array.from(y0, (v) => atol + Math.abs(v) * rtol);
  const d0 = rmsScaled(y0, scale);
  const d1 = rmsScaled(f0, scale);
  const h0 = d0 < 1e-5 || d1 < 1e-5 ? 1e-6 : 0.01 * d0 / d1;
  const y1 = new Float64Array(n);
  for (let i = 0; i < n; i++) y1[i] = y0[i] + h0 * direction * f0[i];
  const f1 = await f(t0 + h0 * direction, y1);
  const diff = new Float64Array(n);
  for (let i = 0; i < n; i++) diff[i] = f1[i] - f0[i];
  const d2 = rmsScaled(diff, scale) / h0;
  const h1 = d1 <= 1e-15 && d2 <= 1e-15
    ? Math.max(1e-6, h0 * 1e-3)
    : (0.01 / Math.max(d1, d2)) ** (1 / (ERROR_ESTIMATOR_ORDER + 1));
  return Math.min(100 * h0, h1);
}
