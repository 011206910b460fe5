/**
 * Bit-exact float32 `torch.linspace` as computed by PyTorch's AVX2 CPU kernel (the build that made
 * the project's golden references): step = (end - start) / (steps - 1) in float32; elements are
 * produced in 8-lane vectors whose first lane is fma(step, idx, start) (or fma(-step, steps-1-idx,
 * end) past the halfway point) and whose other lanes add j * step; a tail shorter than 16 elements
 * is computed element by element. Rounding differences against a float64 linspace are 1 ulp, but
 * they propagate into diffusers' alphas_cumprod, so matching them makes schedules bit-identical.
 *
 * @module
 */

const f32 = Math.fround;
const scratchF = new Float32Array(1);
const scratchI = new Int32Array(scratchF.buffer);

/** The float32 next to `x` (a float32 value) in the direction of `toward`. */
function nextFloat32(x: number, toward: number): number {
  if (x === toward) return x;
  if (x === 0) return toward > 0 ? 1.401298464324817e-45 : -1.401298464324817e-45;
  scratchF[0] = x;
  scratchI[0] += (toward > x) === (x > 0) ? 1 : -1;
  return scratchF[0];
}

/** Single-rounding float32 fused multiply-add a*b + c for float32 inputs. */
export function fmaF32(a: number, b: number, c: number): number {
  const p = a * b; // exact: two 24-bit significands fit in 53 bits
  const s = p + c;
  const bb = s - p;
  const e = (p - (s - bb)) + (c - bb); // s + e == p + c exactly
  const r = f32(s);
  if (e === 0 || s === r) return r;
  const other = nextFloat32(r, s);
  // Only a double-rounded tie can differ from the single rounding of the exact sum.
  if (s === (r + other) / 2 && (e > 0) === (other > r)) return other;
  return r;
}

/** float32 values of `torch.linspace(start, end, steps, dtype=torch.float32)` on an AVX2 CPU. */
export function torchLinspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 0) return out;
  const a = f32(start);
  const b = f32(end);
  if (steps === 1) {
    out[0] = a;
    return out;
  }
  const step = f32(f32(b - a) / (steps - 1));
  const half = Math.floor(steps / 2);
  const lanes = 8;
  const vectorEnd = steps - (steps % (2 * lanes));
  let idx = 0;
  for (; idx < vectorEnd; idx += lanes) {
    const base = idx < half ? fmaF32(step, idx, a) : fmaF32(-step, steps - idx - 1, b);
    for (let j = 0; j < lanes; j++) out[idx + j] = f32(base + f32(j * step));
  }
  for (let i = idx; i < steps; i++) {
    out[i] = i < half ? fmaF32(step, i, a) : fmaF32(-step, steps - i - 1, b);
  }
  return out;
}
