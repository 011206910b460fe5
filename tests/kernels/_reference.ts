/**
 * float64 references shared by the kernel tests of each op's paths (storage, texture, tiled).
 */
import { convOutSize } from "../../core/kernels/conv2d.ts";

/** The attention case fields the reference reads. */
export interface AttentionCase {
  b: number;
  lq: number;
  lk: number;
  h: number;
  d: number;
  scale?: number;
}

/** float64 reference of PyTorch's conv2d (NCHW, zero padding). */
export function refConv(
  x: Float64Array,
  [n, c, h, w]: number[],
  wt: Float64Array,
  [o, , kh, kw]: number[],
  s: number,
  p: number,
  bias?: Float64Array,
): Float64Array {
  const oh = convOutSize(h, kh, s, p), ow = convOutSize(w, kw, s, p);
  const out = new Float64Array(n * o * oh * ow);
  for (let b = 0; b < n; b++) {
    for (let oc = 0; oc < o; oc++) {
      for (let y = 0; y < oh; y++) {
        for (let xx = 0; xx < ow; xx++) {
          let acc = bias ? bias[oc] : 0;
          for (let ic = 0; ic < c; ic++) {
            for (let ky = 0; ky < kh; ky++) {
              const iy = y * s - p + ky;
              if (iy < 0 || iy >= h) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ix = xx * s - p + kx;
                if (ix < 0 || ix >= w) continue;
                acc += x[((b * c + ic) * h + iy) * w + ix] *
                  wt[((oc * c + ic) * kh + ky) * kw + kx];
              }
            }
          }
          out[((b * o + oc) * oh + y) * ow + xx] = acc;
        }
      }
    }
  }
  return out;
}

/** float64 reference of matmul with batch broadcasting, transposes and bias. */
export function refMatmul(
  a: Float64Array,
  sa: number[],
  b: Float64Array,
  sb: number[],
  ta: boolean,
  tb: boolean,
  bias?: Float64Array,
): Float64Array {
  const ra = sa.length, rb = sb.length;
  const m = ta ? sa[ra - 1] : sa[ra - 2], k = ta ? sa[ra - 2] : sa[ra - 1];
  const n = tb ? sb[rb - 2] : sb[rb - 1];
  const ba = sa.slice(0, -2), bb = sb.slice(0, -2);
  const r = Math.max(ba.length, bb.length);
  const pa = [...Array(r - ba.length).fill(1), ...ba],
    pb = [...Array(r - bb.length).fill(1), ...bb];
  const bs = pa.map((d, i) => Math.max(d, pb[i]));
  const nb = bs.reduce((x, y) => x * y, 1);
  const out = new Float64Array(nb * m * n);
  for (let z = 0; z < nb; z++) {
    let rem = z, ia = 0, ib = 0, sta = 1, stb = 1;
    for (let d = r - 1; d >= 0; d--) {
      const c = rem % bs[d];
      rem = Math.floor(rem / bs[d]);
      ia += (pa[d] === 1 ? 0 : c) * sta;
      ib += (pb[d] === 1 ? 0 : c) * stb;
      sta *= pa[d];
      stb *= pb[d];
    }
    const ao = ia * m * k, bo = ib * k * n;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = bias ? bias[j] : 0;
        for (let q = 0; q < k; q++) {
          const av = ta ? a[ao + q * m + i] : a[ao + i * k + q];
          const bv = tb ? b[bo + j * k + q] : b[bo + q * n + j];
          s += av * bv;
        }
        out[z * m * n + i * n + j] = s;
      }
    }
  }
  return out;
}

/** float64 attention on [B, L, H*D] layouts; `rows` limits which query rows are computed. */
export function refAttention(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  c: AttentionCase,
  rows?: number[],
): Float64Array {
  const { b: nb, lq, lk, h: nh, d } = c;
  const hd = nh * d;
  const scale = c.scale ?? 1 / Math.sqrt(d);
  const out = new Float64Array(nb * lq * hd);
  const s = new Float64Array(lk);
  for (let b = 0; b < nb; b++) {
    for (const i of rows ?? [...Array(lq).keys()]) {
      for (let h = 0; h < nh; h++) {
        const qo = (b * lq + i) * hd + h * d;
        let m = -Infinity;
        for (let j = 0; j < lk; j++) {
          const ko = (b * lk + j) * hd + h * d;
          let dot = 0;
          for (let e = 0; e < d; e++) dot += q[qo + e] * k[ko + e];
          s[j] = dot * scale;
          m = Math.max(m, s[j]);
        }
        let z = 0;
        for (let j = 0; j < lk; j++) z += s[j] = Math.exp(s[j] - m);
        for (let j = 0; j < lk; j++) {
          const p = s[j] / z, vo = (b * lk + j) * hd + h * d;
          for (let e = 0; e < d; e++) out[qo + e] += p * v[vo + e];
        }
      }
    }
  }
  return out;
}
