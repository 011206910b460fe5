/**
 * Conversions between float32 and the 16-bit float formats found in weight files: IEEE binary16
 * ("half", numpy's float16) and bfloat16. Values travel as their raw 16-bit patterns in Uint16Arrays.
 *
 * @module
 */

/**
 * Converts float32 values to IEEE half bit patterns, rounding to nearest with ties to even (as numpy's
 * `astype(np.float16)` and the GPU do). Out-of-range values become ±Infinity, tiny ones subnormals or
 * ±0; NaN stays NaN (quiet, payload's top bits kept).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * const bits = f32ToF16Bits(new Float32Array([1, -2, 65520])); // 65520 rounds up to +Infinity
 * assert.deepEqual([...bits], [0x3c00, 0xc000, 0x7c00]);
 * ```
 */
export function f32ToF16Bits(src: Float32Array, out = new Uint16Array(src.length)): Uint16Array {
  if (out.length < src.length) throw new Error("f32ToF16Bits: output shorter than input");
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) out[i] = f32BitsToF16Bits(bits[i]);
  return out;
}

/** Converts one float32 bit pattern to a half bit pattern (round to nearest even). */
export function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) {
    if (mant === 0) return sign | 0x7c00;
    // Keep the quiet bit and the payload's top bits; never let a NaN collapse into infinity.
    const payload = mant >>> 13;
    return sign | 0x7c00 | (payload === 0 ? 0x200 : payload);
  }
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Half subnormal (or zero): value = m * 2^(exp-150) expressed in units of 2^-24.
    if (e < -10) return sign; // below half the smallest subnormal: rounds to ±0
    const m = mant | 0x800000;
    const shift = 14 - e;
    let r = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (r & 1) === 1)) r++;
    return sign | r; // a carry into bit 10 correctly yields the smallest normal
  }
  let r = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1) === 1)) r++; // may carry up to 0x7c00 = inf
  return sign | r;
}

let halfTable: Float32Array | null = null;

/** All 65536 half values as float32, built once on first use (256 KiB). */
function halfToF32Table(): Float32Array {
  if (halfTable !== null) return halfTable;
  const bits = new Uint32Array(65536);
  const table = new Float32Array(bits.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) {
      table[h] = mant * 2 ** -24; // exact in float32
      bits[h] |= sign;
    } else if (exp === 31) {
      bits[h] = sign | 0x7f800000 | (mant << 13);
    } else {
      bits[h] = sign | ((exp + 112) << 23) | (mant << 13);
    }
  }
  halfTable = table;
  return table;
}

/**
 * Converts half bit patterns to float32 (exact: every half value is a float32 value).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * const values = f16BitsToF32(new Uint16Array([0x3c00, 0x0001])); // 1 and the smallest subnormal
 * assert.deepEqual([...values], [1, 2 ** -24]); // 2^-24 = 5.960464477539063e-8
 * ```
 */
export function f16BitsToF32(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  if (out.length < src.length) throw new Error("f16BitsToF32: output shorter than input");
  const table = halfToF32Table();
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]];
  return out;
}

/** Converts bfloat16 bit patterns to float32 (exact: bfloat16 is float32's top half). */
export function bf16BitsToF32(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  if (out.length < src.length) throw new Error("bf16BitsToF32: output shorter than input");
  const bits = new Uint32Array(out.buffer, out.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  return out;
}

/** Converts float32 values to bfloat16 bit patterns, rounding to nearest even (as torch does). */
export function f32ToBf16Bits(src: Float32Array, out = new Uint16Array(src.length)): Uint16Array {
  if (out.length < src.length) throw new Error("f32ToBf16Bits: output shorter than input");
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) {
    const x = bits[i];
    if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) {
      out[i] = (x >>> 16) | 0x40; // quiet NaN
      continue;
    }
    out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return out;
}
