/**
 * DPM-Solver / DPM-Solver++ multistep scheduler with diffusers 0.26.x semantics, on flat host
 * arrays. The model is called by the caller; this class only turns (model output, timestep,
 * sample) into the next sample, exactly as diffusers' `DPMSolverMultistepScheduler.step` does.
 *
 * Precision: diffusers keeps its schedule tables and step coefficients as float32 scalars, so the
 * scalars here are rounded to float32 at the same points; the vector arithmetic is float64 and the
 * returned sample is float32 (or float64 from {@link DPMSolverMultistepScheduler.stepFloat64}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * const text = await Deno.readTextFile("models/tiny_teacher/scheduler/scheduler_config.json");
 * const s = DPMSolverMultistepScheduler.fromConfig(JSON.parse(text));
 * s.setTimesteps(25);
 * // The model is the caller's (the UNet, in the generate job). Here it is the exact noise
 * // prediction for data that is one point, so the solver must end on that point.
 * const point = Float32Array.from([0.5, -1, 0.25, 2]);
 * const unet = (x: Float32Array, t: number) => {
 *   const alpha = Math.sqrt(s.alphasCumprod[t]), sigma = Math.sqrt(1 - s.alphasCumprod[t]);
 *   return Promise.resolve(x.map((v, i) => (v - alpha * point[i]) / sigma));
 * };
 * const noise = Float32Array.from([0.3, -1.2, 0.8, 0.1]);
 * let x: Float32Array = noise.map((v) => v * s.initNoiseSigma);
 * for (const t of s.timesteps) x = s.step(await unet(s.scaleModelInput(x, t), t), t, x);
 * assert.ok(x.every((v, i) => Math.abs(v - point[i]) < 1e-4));
 * ```
 *
 * @module
 */

import {
  type DPMSolverConfig,
  type ResolvedDPMSolverConfig,
  resolveDPMSolverConfig,
} from "./dpm_solver_config.ts";
import {
  alphasCumprod,
  karrasSigmas,
  lambdasFromAlphasCumprod,
  luLogSigmas,
  makeBetas,
  sigmasFromAlphasCumprod,
  sigmaToAlphaSigmaT,
  sigmaToT,
} from "./noise_schedule.ts";
import { arange, linspace, roundHalfEven } from "./numpy_like.ts";
import { assertSameLength, type Vec } from "./vec.ts";

const f32 = Math.fround;

/** float32 log-SNR lambda = log(alpha) - log(sigma) of a VP state with the given float32 sigma. */
function lambdaOf(alphaT: number, sigmaT: number): number {
  return f32(f32(Math.log(alphaT)) - f32(Math.log(sigmaT)));
}

/** Per-step options of {@link DPMSolverMultistepScheduler.step}. */
export interface DPMStepOptions {
  /** Number of samples in the flat arrays; only dynamic thresholding needs it (per-sample quantile). */
  batchSize?: number;
}

/** diffusers' DPMSolverMultistepScheduler (0.26.x), deterministic algorithm types only. */
export class DPMSolverMultistepScheduler {
  /** The resolved configuration (all fields, diffusers' defaults filled in). */
  readonly config: Readonly<ResolvedDPMSolverConfig>;
  /** float32 betas, one per training timestep. */
  readonly betas: Float32Array;
  /** float32 cumulative product of (1 - beta). */
  readonly alphasCumprod: Float32Array;
  /** Standard deviation of the initial noise (1 for this VP scheduler). */
  readonly initNoiseSigma = 1.0;
  /** Integer model timesteps of the current schedule, from noisy to clean. */
  timesteps: number[] = [];
  /** float32 sigmas of the schedule: one per timestep plus the final sigma. */
  sigmas: Float32Array = new Float32Array(0);
  /** Number of steps of the current schedule (null before {@link setTimesteps}). */
  numInferenceSteps: number | null = null;

  private readonly trainSigmas: Float32Array;
  private readonly trainLambdas: Float32Array;
  private modelOutputs: (Float64Array | null)[];
  private lowerOrderNums = 0;
  private stepIndexValue: number | null = null;

  /** Builds the scheduler from a diffusers `scheduler_config.json` object (see {@link resolveDPMSolverConfig}). */
  constructor(config: Record<string, unknown> = {}) {
    this.config = Object.freeze(resolveDPMSolverConfig(config));
    const c = this.config;
    this.betas = makeBetas(
      c.beta_schedule,
      c.num_train_timesteps,
      c.beta_start,
      c.beta_end,
      c.trained_betas,
    );
    this.alphasCumprod = alphasCumprod(this.betas);
    this.trainSigmas = sigmasFromAlphasCumprod(this.alphasCumprod);
    this.trainLambdas = lambdasFromAlphasCumprod(this.alphasCumprod);
    this.modelOutputs = new Array(c.solver_order).fill(null);
  }

  /** Same as `new DPMSolverMultistepScheduler(config)`. */
  static fromConfig(config: Record<string, unknown>): DPMSolverMultistepScheduler {
    return new DPMSolverMultistepScheduler(config);
  }

  /** The full resolved config as a plain object (for index.json); unknown given keys are kept. */
  resolvedConfig(): ResolvedDPMSolverConfig {
    return structuredClone(this.config) as ResolvedDPMSolverConfig;
  }

  /** Index of the next step within {@link timesteps}, or null before the first step. */
  get stepIndex(): number | null {
    return this.stepIndexValue;
  }

  /** Computes the timesteps and sigmas for `numInferenceSteps` steps and resets the solver state. */
  setTimesteps(numInferenceSteps: number): void {
    if (!Number.isInteger(numInferenceSteps) || numInferenceSteps <= 0) {
      throw new Error(
        `DPMSolverMultistepScheduler.setTimesteps: numInferenceSteps=${numInferenceSteps} must be a positive integer`,
      );
    }
    const c = this.config;
    const n = numInferenceSteps;
    const nTrain = c.num_train_timesteps;

    // Timesteps whose lambda falls below lambda_min_clipped are cut from the top of the range.
    const clip = f32(c.lambda_min_clipped);
    let clippedIdx = 0;
    for (let i = this.trainLambdas.length - 1; i >= 0; i--) {
      if (this.trainLambdas[i] < clip) clippedIdx++;
      else break;
    }
    const lastTimestep = nTrain - clippedIdx;

    let timesteps: number[];
    switch (c.timestep_spacing) {
      case "linspace":
        timesteps = linspace(0, lastTimestep - 1, n + 1).map(roundHalfEven).reverse().slice(0, -1);
        break;
      case "leading": {
        const ratio = Math.floor(lastTimestep / (n + 1));
        timesteps = Array.from({ length: n + 1 }, (_, i) => i * ratio).reverse().slice(0, -1)
          .map((t) => t + c.steps_offset);
        break;
      }
      case "trailing": {
        const ratio = nTrain / n;
        timesteps = arange(lastTimestep, 0, -ratio).map((t) => roundHalfEven(t) - 1);
        break;
      }
    }

    const logSigmas = Float32Array.from(this.trainSigmas, (s) => f32(Math.log(s)));
    let sigmas: number[];
    if (c.use_karras_sigmas) {
      sigmas = karrasSigmas(this.trainSigmas.slice().reverse(), n);
      timesteps = sigmas.map((s) => roundHalfEven(sigmaToT(s, logSigmas)));
    } else if (c.use_lu_lambdas) {
      sigmas = luLogSigmas(logSigmas.slice().reverse(), n).map(Math.exp);
      timesteps = sigmas.map((s) => roundHalfEven(sigmaToT(s, logSigmas)));
    } else {
      // np.interp at integer points: the table value, clamped at the ends.
      sigmas = timesteps.map((t) => this.trainSigmas[Math.min(Math.max(t, 0), nTrain - 1)]);
    }
    const ac0 = this.alphasCumprod[0];
    const sigmaLast = c.final_sigmas_type === "sigma_min"
      ? f32(Math.sqrt(f32(f32(1 - ac0) / ac0)))
      : 0;
    this.sigmas = Float32Array.from([...sigmas, sigmaLast]);
    this.timesteps = timesteps;
    this.numInferenceSteps = timesteps.length;
    this.modelOutputs = new Array(c.solver_order).fill(null);
    this.lowerOrderNums = 0;
    this.stepIndexValue = null;
  }

  /** Identity: this scheduler does not scale the model input (kept for interchangeability). */
  scaleModelInput<T extends Vec>(sample: T, _timestep?: number): T {
    return sample;
  }

  /**
   * One multistep DPM-Solver update: returns the sample at the next (less noisy) timestep.
   * `timestep` must be the current entry of {@link timesteps}; the first call locates it in the
   * schedule (diffusers' rule: a repeated timestep resolves to its second occurrence).
   */
  step(
    modelOutput: Vec,
    timestep: number,
    sample: Vec,
    options: DPMStepOptions = {},
  ): Float32Array {
    return Float32Array.from(this.stepFloat64(modelOutput, timestep, sample, options));
  }

  /** {@link step} returning the float64 result (before rounding to float32). */
  stepFloat64(
    modelOutput: Vec,
    timestep: number,
    sample: Vec,
    options: DPMStepOptions = {},
  ): Float64Array {
    if (this.numInferenceSteps === null) {
      throw new Error("DPMSolverMultistepScheduler.step: call setTimesteps() first");
    }
    assertSameLength(modelOutput, sample, "DPMSolverMultistepScheduler.step");
    if (this.stepIndexValue === null) this.stepIndexValue = this.indexForTimestep(timestep);
    const i = this.stepIndexValue;
    const len = this.timesteps.length;
    if (i >= len) {
      throw new Error(
        `DPMSolverMultistepScheduler.step: all ${len} steps are done; call setTimesteps() again`,
      );
    }
    const c = this.config;
    const lowerOrderFinal = i === len - 1 &&
      (c.euler_at_final || (c.lower_order_final && len < 15) || c.final_sigmas_type === "zero");
    const lowerOrderSecond = i === len - 2 && c.lower_order_final && len < 15;

    const converted = this.convertModelOutput(modelOutput, sample, options.batchSize ?? 1);
    for (let k = 0; k < c.solver_order - 1; k++) this.modelOutputs[k] = this.modelOutputs[k + 1];
    this.modelOutputs[c.solver_order - 1] = converted;

    let prev: Float64Array;
    if (c.solver_order === 1 || this.lowerOrderNums < 1 || lowerOrderFinal) {
      prev = this.firstOrderUpdate(converted, sample);
    } else if (c.solver_order === 2 || this.lowerOrderNums < 2 || lowerOrderSecond) {
      prev = this.secondOrderUpdate(sample);
    } else {
      prev = this.thirdOrderUpdate(sample);
    }
    if (this.lowerOrderNums < c.solver_order) this.lowerOrderNums++;
    this.stepIndexValue = i + 1;
    return prev;
  }

  private indexForTimestep(timestep: number): number {
    const hits: number[] = [];
    this.timesteps.forEach((t, k) => {
      if (t === timestep) hits.push(k);
    });
    if (hits.length === 0) return this.timesteps.length - 1;
    return hits.length > 1 ? hits[1] : hits[0];
  }

  /** The alpha/sigma pair (float32) at position `k` of the schedule's sigmas. */
  private alphaSigmaAt(k: number): { alphaT: number; sigmaT: number } {
    return sigmaToAlphaSigmaT(this.sigmas[k]);
  }

  /** Model output → data prediction (dpmsolver++) or noise prediction (dpmsolver), float64. */
  private convertModelOutput(m: Vec, x: Vec, batchSize: number): Float64Array {
    const c = this.config;
    const { alphaT: a, sigmaT: s } = this.alphaSigmaAt(this.stepIndexValue!);
    const n = x.length;
    const out = new Float64Array(n);
    if (c.algorithm_type === "dpmsolver++") {
      if (c.prediction_type === "epsilon") {
        for (let j = 0; j < n; j++) out[j] = (x[j] - s * m[j]) / a;
      } else if (c.prediction_type === "sample") out.set(m);
      else for (let j = 0; j < n; j++) out[j] = a * x[j] - s * m[j];
      if (c.thresholding) this.thresholdInPlace(out, batchSize);
      return out;
    }
    if (c.prediction_type === "epsilon") out.set(m);
    else if (c.prediction_type === "sample") {
      for (let j = 0; j < n; j++) out[j] = (x[j] - a * m[j]) / s;
    } else for (let j = 0; j < n; j++) out[j] = a * m[j] + s * x[j];
    if (c.thresholding) {
      const x0 = new Float64Array(n);
      for (let j = 0; j < n; j++) x0[j] = (x[j] - s * out[j]) / a;
      this.thresholdInPlace(x0, batchSize);
      for (let j = 0; j < n; j++) out[j] = (x[j] - a * x0[j]) / s;
    }
    return out;
  }

  /**
   * Dynamic thresholding (Imagen): per sample, s = quantile(|x0|, ratio) clamped to
   * [1, sample_max_value]; x0 ← clamp(x0, -s, s) / s.
   */
  private thresholdInPlace(x0: Float64Array, batchSize: number): void {
    if (!Number.isInteger(batchSize) || batchSize <= 0 || x0.length % batchSize !== 0) {
      throw new Error(
        `DPMSolverMultistepScheduler.step: batchSize=${batchSize} must divide the sample length ${x0.length}`,
      );
    }
    const per = x0.length / batchSize;
    for (let b = 0; b < batchSize; b++) {
      const part = x0.subarray(b * per, (b + 1) * per);
      let s = quantileLinear(
        Float64Array.from(part, Math.abs),
        this.config.dynamic_thresholding_ratio,
      );
      // torch.clamp(min=1, max=sample_max_value): the max wins when min > max.
      s = Math.min(Math.max(s, 1), this.config.sample_max_value);
      for (let j = 0; j < per; j++) part[j] = Math.min(Math.max(part[j], -s), s) / s;
    }
  }

  private firstOrderUpdate(m0: Float64Array, x: Vec): Float64Array {
    const i = this.stepIndexValue!;
    const { alphaT: at, sigmaT: st } = this.alphaSigmaAt(i + 1);
    const { alphaT: as, sigmaT: ss } = this.alphaSigmaAt(i);
    const h = f32(lambdaOf(at, st) - lambdaOf(as, ss));
    const out = new Float64Array(x.length);
    if (this.config.algorithm_type === "dpmsolver++") {
      const cx = f32(st / ss);
      const cm = f32(at * f32(f32(Math.exp(-h)) - 1));
      for (let j = 0; j < x.length; j++) out[j] = cx * x[j] - cm * m0[j];
    } else {
      const cx = f32(at / as);
      const cm = f32(st * f32(f32(Math.exp(h)) - 1));
      for (let j = 0; j < x.length; j++) out[j] = cx * x[j] - cm * m0[j];
    }
    return out;
  }

  private secondOrderUpdate(x: Vec): Float64Array {
    const c = this.config;
    const i = this.stepIndexValue!;
    const { alphaT: at, sigmaT: st } = this.alphaSigmaAt(i + 1);
    const { alphaT: a0, sigmaT: s0 } = this.alphaSigmaAt(i);
    const { alphaT: a1, sigmaT: s1 } = this.alphaSigmaAt(i - 1);
    const lt = lambdaOf(at, st);
    const l0 = lambdaOf(a0, s0);
    const l1 = lambdaOf(a1, s1);
    const m0 = this.modelOutputs[c.solver_order - 1]!;
    const m1 = this.modelOutputs[c.solver_order - 2]!;
    const h = f32(lt - l0);
    const h0 = f32(l0 - l1);
    const invR0 = f32(1 / f32(h0 / h));
    const out = new Float64Array(x.length);
    let cx: number, c0: number, c1: number;
    if (c.algorithm_type === "dpmsolver++") {
      const em1 = f32(f32(Math.exp(-h)) - 1);
      cx = f32(st / s0);
      c0 = f32(at * em1);
      // midpoint: x - c0 D0 - 0.5 c0 D1; heun: x - c0 D0 + at((e^-h - 1)/h + 1) D1
      c1 = c.solver_type === "midpoint" ? 0.5 * c0 : -f32(at * f32(f32(em1 / h) + 1));
    } else {
      const ep1 = f32(f32(Math.exp(h)) - 1);
      cx = f32(at / a0);
      c0 = f32(st * ep1);
      c1 = c.solver_type === "midpoint" ? 0.5 * c0 : f32(st * f32(f32(ep1 / h) - 1));
    }
    for (let j = 0; j < x.length; j++) {
      const d1 = invR0 * (m0[j] - m1[j]);
      out[j] = cx * x[j] - c0 * m0[j] - c1 * d1;
    }
    return out;
  }

  private thirdOrderUpdate(x: Vec): Float64Array {
    const c = this.config;
    const i = this.stepIndexValue!;
    const { alphaT: at, sigmaT: st } = this.alphaSigmaAt(i + 1);
    const { alphaT: a0, sigmaT: s0 } = this.alphaSigmaAt(i);
    const { alphaT: a1, sigmaT: s1 } = this.alphaSigmaAt(i - 1);
    const { alphaT: a2, sigmaT: s2 } = this.alphaSigmaAt(i - 2);
    const lt = lambdaOf(at, st);
    const l0 = lambdaOf(a0, s0);
    const l1 = lambdaOf(a1, s1);
    const l2 = lambdaOf(a2, s2);
    const m0 = this.modelOutputs[2]!;
    const m1 = this.modelOutputs[1]!;
    const m2 = this.modelOutputs[0]!;
    const h = f32(lt - l0);
    const r0 = f32(f32(l0 - l1) / h);
    const r1 = f32(f32(l1 - l2) / h);
    const invR0 = f32(1 / r0);
    const invR1 = f32(1 / r1);
    const w1 = f32(r0 / f32(r0 + r1));
    const w2 = f32(1 / f32(r0 + r1));
    const hh = f32(h * h);
    let cx: number, c0: number, c1: number, c2: number;
    if (c.algorithm_type === "dpmsolver++") {
      const em1 = f32(f32(Math.exp(-h)) - 1);
      cx = f32(st / s0);
      c0 = f32(at * em1); // subtracted
      c1 = -f32(at * f32(f32(em1 / h) + 1)); // added in diffusers, so subtracted with a minus
      c2 = f32(at * f32(f32(f32(em1 + h) / hh) - 0.5)); // subtracted
    } else {
      const ep1 = f32(f32(Math.exp(h)) - 1);
      cx = f32(at / a0);
      c0 = f32(st * ep1);
      c1 = f32(st * f32(f32(ep1 / h) - 1));
      c2 = f32(st * f32(f32(f32(ep1 - h) / hh) - 0.5));
    }
    const out = new Float64Array(x.length);
    for (let j = 0; j < x.length; j++) {
      const d10 = invR0 * (m0[j] - m1[j]);
      const d11 = invR1 * (m1[j] - m2[j]);
      const d1 = d10 + w1 * (d10 - d11);
      const d2 = w2 * (d10 - d11);
      out[j] = cx * x[j] - c0 * m0[j] - c1 * d1 - c2 * d2;
    }
    return out;
  }
}

/** torch.quantile's default ("linear") interpolation of the q-quantile of `values` (sorted in place). */
export function quantileLinear(values: Float64Array, q: number): number {
  if (values.length === 0) throw new Error("quantileLinear: empty input");
  values.sort();
  const pos = q * (values.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, values.length - 1);
  const w = pos - lo;
  const a = values[lo];
  const b = values[hi];
  // torch.lerp's two-sided formula.
  return w < 0.5 ? a + w * (b - a) : b - (b - a) * (1 - w);
}

export type { DPMSolverConfig, ResolvedDPMSolverConfig };
