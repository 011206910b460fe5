/**
 * Host-side vector helpers for the schedulers and flow samplers.
 *
 * Every piece of vector arithmetic the samplers do goes through these few functions so that they
 * can later be swapped for GPU kernels without touching the solver logic. All arithmetic is done
 * in float64 (JavaScript numbers); the destination's type decides the storage precision.
 *
 * @module
 */

/** A flat numeric state vector (float32 for models, float64 for internal accumulators). */
export type Vec = Float32Array | Float64Array;

/** Throws unless `a` and `b` have the same length; `what` names the caller for the message. */
export function assertSameLength(a: Vec, b: Vec, what: string): void {
  if (a.length !== b.length) {
    throw new Error(`${what}: length mismatch (${a.length} vs ${b.length})`);
  }
}

/** Returns a float64 copy of `x`. */
export function toF64(x: Vec): Float64Array {
  return Float64Array.from(x);
}

/** Returns a float32 copy of `x` (rounding to nearest). */
export function toF32(x: Vec): Float32Array {
  return Float32Array.from(x);
}

/** out[i] = a * x[i] + y[i]; returns `out` (which may alias `x` or `y`). */
export function axpy<T extends Vec>(a: number, x: Vec, y: Vec, out: T): T {
  assertSameLength(x, y, "axpy");
  for (let i = 0; i < x.length; i++) out[i] = a * x[i] + y[i];
  return out;
}

/** out[i] = a * x[i] + b * y[i]; returns `out`. */
export function axpby<T extends Vec>(a: number, x: Vec, b: number, y: Vec, out: T): T {
  assertSameLength(x, y, "axpby");
  for (let i = 0; i < x.length; i++) out[i] = a * x[i] + b * y[i];
  return out;
}

/**
 * out[i] = base[i] + h * sum_j coeffs[j] * terms[j][i]. The weighted sum is formed first and
 * multiplied by `h` afterwards (scipy's Runge-Kutta order of operations). Zero coefficients are
 * skipped, which does not change the result.
 */
export function addScaledCombination<T extends Vec>(
  base: Vec,
  h: number,
  coeffs: readonly number[],
  terms: readonly Vec[],
  out: T,
): T {
  for (const t of terms) assertSameLength(base, t, "addScaledCombination");
  for (let i = 0; i < base.length; i++) {
    let s = 0;
    for (let j = 0; j < coeffs.length; j++) if (coeffs[j] !== 0) s += coeffs[j] * terms[j][i];
    out[i] = base[i] + h * s;
  }
  return out;
}

/** out[i] = sum_j coeffs[j] * terms[j][i]; returns `out`. */
export function linearCombination<T extends Vec>(
  coeffs: readonly number[],
  terms: readonly Vec[],
  out: T,
): T {
  if (coeffs.length !== terms.length) throw new Error("linearCombination: coeffs/terms mismatch");
  for (const t of terms) assertSameLength(out, t, "linearCombination");
  for (let i = 0; i < out.length; i++) {
    let s = 0;
    for (let j = 0; j < coeffs.length; j++) s += coeffs[j] * terms[j][i];
    out[i] = s;
  }
  return out;
}

/** Mean of squared entries of (a - b), accumulated in float64. */
export function meanSquaredDifference(a: Vec, b: Vec): number {
  assertSameLength(a, b, "meanSquaredDifference");
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    s += d * d;
  }
  return a.length === 0 ? 0 : s / a.length;
}

/** Root-mean-square of x[i] / scale[i] (scipy's `norm(x / scale)` for solve_ivp). */
export function rmsScaled(x: Vec, scale: Vec): number {
  assertSameLength(x, scale, "rmsScaled");
  let s = 0;
  for (let i = 0; i < x.length; i++) {
    const v = x[i] / scale[i];
    s += v * v;
  }
  return Math.sqrt(s) / Math.sqrt(x.length);
}

/** Relative L2 error ||a - b|| / ||b||, in float64 (b is the reference). */
export function relativeL2(a: Vec, b: Vec): number {
  assertSameLength(a, b, "relativeL2");
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    num += d * d;
    den += b[i] * b[i];
  }
  return Math.sqrt(num) / Math.sqrt(den);
}
