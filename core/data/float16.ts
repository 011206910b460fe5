/**
 * IEEE 754 half-precision conversion for pair data (stored as raw bits in `Uint16Array`).
 *
 * @module
 */

let table: Float32Array | undefined;

/** All 65536 half values as float32, built once (256 KiB) so conversion is one lookup each. */
function halfTable(): Float32Array {
  if (table) return table;
  table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    let v: number;
    if (exp === 0) v = frac * 2 ** -24; // subnormal
    else if (exp === 31) v = frac ? NaN : Infinity;
    else v = (1 + frac / 1024) * 2 ** (exp - 15);
    table[h] = sign * v;
  }
  return table;
}

/** Converts half-precision bits to float32 values (exact). */
export function halfBitsToFloat32(bits: Uint16Array, out?: Float32Array): Float32Array {
  const t = halfTable();
  const dst = out ?? new Float32Array(bits.length);
  if (dst.length < bits.length) throw new Error("halfBitsToFloat32: output too short");
  for (let i = 0; i < bits.length; i++) dst[i] = t[bits[i]];
  return dst;
}
