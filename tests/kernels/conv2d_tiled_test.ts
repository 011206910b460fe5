/**
 * The workgroup-memory tiled convolutions (core/kernels/conv2d_tiled.ts), forced with
 * `path: "tiled"`: forward against a float64 reference, dx and dW (the tiled backward GEMMs) against
 * central differences of the reference, over 3x3 / 1x1 / strided / padded shapes, vec4 weight loads
 * (C*KH*KW a multiple of 4) and scalar ones, and f16 storage.
 */
import { checkOp, lacks } from "../helpers/gpu.ts";
import { conv2d, convOutSize } from "../../core/kernels/conv2d.ts";

/** float64 PyTorch conv2d (NCHW, zero padding). */
function ref(
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

const cases: {
  x: number[];
  w: number[];
  s: number;
  p: number;
  bias: boolean;
  dtype?: "f32" | "f16";
}[] = [
  { x: [1, 1, 1, 1], w: [1, 1, 1, 1], s: 1, p: 0, bias: false },
  { x: [2, 3, 7, 6], w: [5, 3, 3, 3], s: 1, p: 1, bias: true }, // K = 27: scalar weight loads
  { x: [2, 4, 9, 9], w: [6, 4, 3, 3], s: 2, p: 1, bias: true }, // K = 36: vec4, stride 2
  { x: [1, 8, 5, 7], w: [70, 8, 1, 1], s: 1, p: 0, bias: true }, // 1x1, two row blocks
  { x: [2, 5, 6, 5], w: [3, 5, 3, 3], s: 2, p: 0, bias: false }, // no padding, dx gaps
  { x: [2, 4, 6, 6], w: [8, 4, 3, 3], s: 1, p: 1, bias: true, dtype: "f16" },
];

for (const c of cases) {
  const dtype = c.dtype ?? "f32";
  const name = `conv2d (tiled, ${dtype}) x [${c.x}] w [${c.w}] s${c.s} p${c.p}${
    c.bias ? " +bias" : ""
  }`;
  Deno.test(name, { ignore: lacks({ dtype }) }, async () => {
    await checkOp({
      shapes: c.bias ? [c.x, c.w, [c.w[0]]] : [c.x, c.w],
      gpu: ([x, w, b]) => conv2d(x, w, b, { stride: c.s, padding: c.p, path: "tiled" }),
      ref: ([x, w, b]) => ref(x, c.x, w, c.w, c.s, c.p, b),
      tol: dtype === "f16" ? 2e-3 : 1e-5,
      gradTol: dtype === "f16" ? 0 : 1e-3,
      dtype,
    });
  });
}
