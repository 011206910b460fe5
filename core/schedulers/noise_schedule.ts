/**
 * The variance-preserving noise schedule tables that diffusers' DPM-Solver builds: betas,
 * cumulative alphas, sigmas = sqrt((1 - alphā) / alphā), and the Karras / Lu sigma spacings.
 *
 * diffusers keeps these tables in float32 (torch), so values are rounded to float32 at the same
 * points with `Math.fround`; the cumulative product is accumulated in float64 like torch's CPU
 * `cumprod`, then rounded.
 *
 * @module
 */

import { linspace } from "./numpy_like.ts";
import { torchLinspaceF32 } from "./torch_linspace.ts";

const f32 = Math.fround;

/** Beta schedules understood by {@link makeBetas}. */
export type BetaSchedule = "linear" | "scaled_linear" | "squaredcos_cap_v2";

/** Betas of the Glide cosine schedule ("squaredcos_cap_v2"), capped at `maxBeta`. */
export function cosineBetas(numTrainTimesteps: number, maxBeta = 0.999): number[] {
  const alphaBar = (t: number) => Math.cos((t + 0.008) / 1.008 * Math.PI / 2) ** 2;
  const out: number[] = [];
  for (let i = 0; i < numTrainTimesteps; i++) {
    const t1 = i / numTrainTimesteps;
    const t2 = (i + 1) / numTrainTimesteps;
    out.push(f32(Math.min(1 - alphaBar(t2) / alphaBar(t1), maxBeta)));
  }
  return out;
}

/**
 * float32 betas for a schedule. `trainedBetas`, when given, wins over the named schedule
 * (as in diffusers).
 */
export function makeBetas(
  schedule: BetaSchedule,
  numTrainTimesteps: number,
  betaStart: number,
  betaEnd: number,
  trainedBetas: readonly number[] | null,
): Float32Array {
  if (trainedBetas !== null) return Float32Array.from(trainedBetas);
  switch (schedule) {
    case "linear":
      return torchLinspaceF32(betaStart, betaEnd, numTrainTimesteps);
    case "scaled_linear": {
      // torch.linspace over sqrt(beta) in float32, then squared in float32.
      const roots = torchLinspaceF32(Math.sqrt(betaStart), Math.sqrt(betaEnd), numTrainTimesteps);
      return roots.map((r) => f32(r * r));
    }
    case "squaredcos_cap_v2":
      return Float32Array.from(cosineBetas(numTrainTimesteps));
  }
}

/** float32 cumulative product of (1 - beta), accumulated in float64 as torch does on the CPU. */
export function alphasCumprod(betas: Float32Array): Float32Array {
  const out = new Float32Array(betas.length);
  let acc = 1;
  for (let i = 0; i < betas.length; i++) {
    acc *= f32(1 - betas[i]);
    out[i] = acc;
  }
  return out;
}

/** float32 sigma table sqrt((1 - alphā) / alphā), one per training timestep. */
export function sigmasFromAlphasCumprod(ac: Float32Array): Float32Array {
  return Float32Array.from(ac, (a) => f32(Math.sqrt(f32(f32(1 - a) / a))));
}

/** float32 lambda table log(alpha_t) - log(sigma_t) with alpha_t = sqrt(alphā), sigma_t = sqrt(1 - alphā). */
export function lambdasFromAlphasCumprod(ac: Float32Array): Float32Array {
  return Float32Array.from(ac, (a) => {
    const alpha = f32(Math.sqrt(a));
    const sigma = f32(Math.sqrt(f32(1 - a)));
    return f32(f32(Math.log(alpha)) - f32(Math.log(sigma)));
  });
}

/**
 * Karras et al. (2022) spacing with rho = 7 between the largest and the smallest of `inSigmas`
 * (`inSigmas` descending: [0] is the largest). float64, as diffusers computes it in numpy.
 */
export function karrasSigmas(inSigmas: ArrayLike<number>, n: number): number[] {
  const sigmaMin = inSigmas[inSigmas.length - 1];
  const sigmaMax = inSigmas[0];
  const rho = 7.0;
  const minInvRho = sigmaMin ** (1 / rho);
  const maxInvRho = sigmaMax ** (1 / rho);
  return linspace(0, 1, n).map((r) => (maxInvRho + r * (minInvRho - maxInvRho)) ** rho);
}

/**
 * Lu et al. (2022) spacing: uniform in log-sigma between the ends of `inLogSigmas`
 * (descending). Returns the log-sigmas.
 */
export function luLogSigmas(inLogSigmas: ArrayLike<number>, n: number): number[] {
  const lo = inLogSigmas[inLogSigmas.length - 1];
  const hi = inLogSigmas[0];
  return linspace(0, 1, n).map((r) => hi + r * (lo - hi));
}

/**
 * Continuous training-timestep index for a sigma, by linear interpolation in log-sigma over the
 * (ascending) float32 `logSigmas` table; diffusers' `_sigma_to_t`. The comparison that picks the
 * bracket happens in float32 (numpy's scalar-with-float32-array casting), the weight in float64.
 */
export function sigmaToT(sigma: number, logSigmas: Float32Array): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  const logSigma32 = f32(logSigma);
  let count = 0;
  for (let i = 0; i < logSigmas.length; i++) if (logSigma32 - logSigmas[i] >= 0) count++;
  // cumsum(dists >= 0).argmax(): the first index holding the maximal running count.
  let lowIdx = 0;
  if (count > 0) {
    let running = 0;
    for (let i = 0; i < logSigmas.length; i++) {
      if (logSigma32 - logSigmas[i] >= 0) running++;
      if (running === count) {
        lowIdx = i;
        break;
      }
    }
  }
  lowIdx = Math.min(lowIdx, logSigmas.length - 2);
  const highIdx = lowIdx + 1;
  const low = logSigmas[lowIdx];
  const high = logSigmas[highIdx];
  let w = (low - logSigma) / (low - high);
  w = Math.min(Math.max(w, 0), 1);
  return (1 - w) * lowIdx + w * highIdx;
}

/** diffusers' `_sigma_to_alpha_sigma_t` in float32: alpha = 1/sqrt(sigma²+1), sigma_t = sigma·alpha. */
export function sigmaToAlphaSigmaT(sigma: number): { alphaT: number; sigmaT: number } {
  const s = f32(sigma);
  const alphaT = f32(1 / f32(Math.sqrt(f32(f32(s * s) + 1))));
  return { alphaT, sigmaT: f32(s * alphaT) };
}
