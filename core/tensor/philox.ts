/**
 * Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC11) on the host,
 * bit-identical to the WGSL generator in core/kernels/random.ts. Counter-based: element i of a draw
 * is a pure function of (seed, offset + i), so noise is reproducible across adapters and processes.
 *
 * Conventions shared with the GPU: key = [seed mod 2^32, floor(seed / 2^32)], counter =
 * [c mod 2^32, floor(c / 2^32), 0, 0] with c = offset + i. Uniforms use output word 0; normals use
 * words 0 and 1 through Box-Muller (one normal per element, the cosine branch).
 */

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;
const TWO32 = 4294967296;
/** 2^-24: uniforms keep the top 24 bits, so the u32 -> f32 map is exact. */
const INV24 = 1 / 16777216;

/** High 32 bits of the 64-bit product a * b (both u32), via 16-bit halves like the WGSL version. */
export function mulhi32(a: number, b: number): number {
  const al = a & 0xffff, ah = a >>> 16, bl = b & 0xffff, bh = b >>> 16;
  // Each partial product is below 2^32, so doubles hold them exactly.
  const ll = al * bl, lh = al * bh, hl = ah * bl, hh = ah * bh;
  const mid = Math.floor(ll / 65536) + (lh & 0xffff) + (hl & 0xffff);
  return (hh + Math.floor(lh / 65536) + Math.floor(hl / 65536) + Math.floor(mid / 65536)) >>> 0;
}

/** One Philox-4x32-10 block: 4 u32 outputs from a 4-word counter and a 2-word key. */
export function philox4x32(
  ctr: readonly [number, number, number, number],
  key: readonly [number, number],
): [number, number, number, number] {
  let [c0, c1, c2, c3] = ctr.map((v) => v >>> 0);
  let k0 = key[0] >>> 0, k1 = key[1] >>> 0;
  for (let r = 0; r < 10; r++) {
    if (r > 0) {
      k0 = (k0 + W0) >>> 0;
      k1 = (k1 + W1) >>> 0;
    }
    const hi0 = mulhi32(M0, c0), lo0 = Math.imul(M0, c0) >>> 0;
    const hi1 = mulhi32(M1, c2), lo1 = Math.imul(M1, c2) >>> 0;
    [c0, c1, c2, c3] = [(hi1 ^ c1 ^ k0) >>> 0, lo1, (hi0 ^ c3 ^ k1) >>> 0, lo0];
  }
  return [c0, c1, c2, c3];
}

/** Splits a non-negative integer below 2^53 into [low, high] u32 words. */
export function splitU53(v: number, what = "value"): [number, number] {
  if (!Number.isSafeInteger(v) || v < 0) {
    throw new RangeError(`philox: ${what} ${v} must be an integer in [0, 2^53)`);
  }
  const hi = Math.floor(v / TWO32);
  return [v - hi * TWO32, hi];
}

/** The u32 -> [0, 1) map: the top 24 bits times 2^-24 (exact in f32). */
export function u32ToUniform(x: number): number {
  return (x >>> 8) * INV24;
}

function words(seed: number, offset: number, n: number, fn: (w: number[], i: number) => void) {
  const key = splitU53(seed, "seed");
  splitU53(offset + Math.max(n - 1, 0), "offset + n");
  for (let i = 0; i < n; i++) {
    const [lo, hi] = splitU53(offset + i);
    fn(philox4x32([lo, hi, 0, 0], key), i);
  }
}

/** n uniforms in [0, 1): element i from counter offset + i. */
export function philoxUniform(seed: number, offset: number, n: number): Float32Array {
  const out = new Float32Array(n);
  words(seed, offset, n, (w, i) => (out[i] = u32ToUniform(w[0])));
  return out;
}

/** n standard normals (Box-Muller on words 0 and 1 of counter offset + i), rounded to f32. */
export function philoxNormal(seed: number, offset: number, n: number): Float32Array {
  const out = new Float32Array(n);
  words(seed, offset, n, (w, i) => {
    // u1 in (0, 1] keeps log finite; u2 in [0, 1).
    const u1 = ((w[0] >>> 8) + 1) * INV24;
    const u2 = (w[1] >>> 8) * INV24;
    out[i] = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  });
  return out;
}
