import assert from "node:assert/strict";
import { checkOp, testGpu } from "../helpers/gpu.ts";
import { conv2d, convOutSize } from "../../core/kernels/conv2d.ts";
import { Tensor } from "../../core/tensor/tensor.ts";

/** float64 reference of PyTorch's conv2d (NCHW, zero padding). */
function refConv(
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

const cases = [
  { x: [1, 1, 1, 1], w: [1, 1, 1, 1], s: 1, p: 0, bias: false },
  { x: [2, 3, 7, 6], w: [5, 3, 3, 3], s: 1, p: 1, bias: true },
  { x: [2, 4, 7, 9], w: [3, 4, 3, 3], s: 2, p: 1, bias: true },
  { x: [1, 6, 8, 8], w: [4, 6, 3, 3], s: 2, p: 1, bias: false },
  { x: [3, 5, 4, 3], w: [7, 5, 1, 1], s: 1, p: 0, bias: true },
  { x: [1, 9, 5, 5], w: [17, 9, 3, 3], s: 1, p: 1, bias: true },
];

for (const path of ["storage", "texture"] as const) {
  for (const c of cases) {
    Deno.test(`conv2d (${path}) x [${c.x}] w [${c.w}] stride ${c.s} pad ${c.p}${c.bias ? " +bias" : ""}`, async () => {
      await checkOp({
        shapes: c.bias ? [c.x, c.w, [c.w[0]]] : [c.x, c.w],
        gpu: ([x, w, b]) => conv2d(x, w, b, { stride: c.s, padding: c.p, path }),
        ref: ([x, w, b]) => refConv(x, c.x, w, c.w, c.s, c.p, b),
        tol: 1e-5,
        gradTol: 2e-3,
      });
    });
  }
}

Deno.test("conv2d f16 storage", async () => {
  const gpu = await testGpu();
  if (!gpu.hasF16) return;
  for (const path of ["storage", "texture"] as const) {
    await checkOp({
      shapes: [[2, 8, 6, 6], [6, 8, 3, 3], [6]],
      dtype: "f16",
      gpu: ([x, w, b]) => conv2d(x, w, b, { padding: 1, path }),
      ref: ([x, w, b]) => refConv(x, [2, 8, 6, 6], w, [6, 8, 3, 3], 1, 1, b),
      tol: 3e-3,
      gradTol: 0,
    });
  }
});

Deno.test("conv2d shape errors name the op and shapes", async () => {
  const gpu = await testGpu();
  const x = Tensor.from(gpu, new Float32Array(2 * 3 * 4 * 4), [2, 3, 4, 4]);
  const w = Tensor.from(gpu, new Float32Array(5 * 4 * 9), [5, 4, 3, 3]);
  const b = Tensor.from(gpu, new Float32Array(4), [4]);
  assert.throws(() => conv2d(x, w), /conv2d: x has 3 channels but weight expects 4.*\[2,3,4,4\]/);
  const w2 = Tensor.from(gpu, new Float32Array(5 * 3 * 9), [5, 3, 3, 3]);
  assert.throws(() => conv2d(x, w2, b), /conv2d: bias must have shape \[5\]/);
  for (const t of [x, w, b, w2]) t.dispose();
});
