import assert from "node:assert/strict";
import { checkOp, NEEDS_F16, testGpu } from "../helpers/gpu.ts";
import { layerNorm } from "../../core/kernels/layer_norm.ts";
import { Tensor } from "../../core/tensor/tensor.ts";

/** float64 LayerNorm over the last axis (biased variance). */
function refLayerNorm(
  x: Float64Array,
  cols: number,
  w: Float64Array | null,
  b: Float64Array | null,
  eps: number,
): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / cols; r++) {
    let m = 0;
    for (let j = 0; j < cols; j++) m += x[r * cols + j];
    m /= cols;
    let v = 0;
    for (let j = 0; j < cols; j++) v += (x[r * cols + j] - m) ** 2;
    const rs = 1 / Math.sqrt(v / cols + eps);
    for (let j = 0; j < cols; j++) {
      out[r * cols + j] = (x[r * cols + j] - m) * rs * (w ? w[j] : 1) + (b ? b[j] : 0);
    }
  }
  return out;
}

// Segments of 1..64 threads per row by length (several rows per workgroup with a partial last one,
// a partial last register, two-level reductions), and rows too long for registers ([2, 4100]).
for (
  const shape of [[4, 8], [3, 5, 37], [2, 320], [3, 1280], [1, 1, 129], [70, 100], [37, 3], [
    2,
    4100,
  ]]
) {
  const cols = shape[shape.length - 1];
  Deno.test(`layer_norm affine [${shape}]`, async () => {
    await checkOp({
      shapes: [shape, [cols], [cols]],
      gpu: ([x, w, b]) => layerNorm(x, w, b, 1e-5),
      ref: ([x, w, b]) => refLayerNorm(x, cols, w, b, 1e-5),
      tol: 1e-5,
      gradTol: 3e-3,
    });
  });
}

Deno.test("layer_norm without affine, eps 1e-6", async () => {
  await checkOp({
    shapes: [[6, 40]],
    gpu: ([x]) => layerNorm(x, null, null, 1e-6),
    ref: ([x]) => refLayerNorm(x, 40, null, null, 1e-6),
    tol: 1e-5,
    gradTol: 3e-3,
  });
});

Deno.test("layer_norm weight only, many rows", async () => {
  await checkOp({
    shapes: [[300, 24], [24]],
    gpu: ([x, w]) => layerNorm(x, w, null),
    ref: ([x, w]) => refLayerNorm(x, 24, w, null, 1e-5),
    tol: 1e-5,
    gradTol: 3e-3,
  });
});

Deno.test("layer_norm with an offset mean", async () => {
  // A large common offset checks that the variance is taken about the mean (no E[x^2] - E[x]^2).
  await checkOp({
    shapes: [[5, 64], [64], [64]],
    init: (i, n) =>
      Float64Array.from({ length: n }, (_, j) => (i === 0 ? 100 : 0) + Math.sin(j * 0.7 + i)),
    gpu: ([x, w, b]) => layerNorm(x, w, b),
    ref: ([x, w, b]) => refLayerNorm(x, 64, w, b, 1e-5),
    tol: 1e-4,
    gradTol: 0,
  });
});

Deno.test("layer_norm f16", NEEDS_F16, async () => {
  await checkOp({
    shapes: [[7, 96], [96], [96]],
    dtype: "f16",
    gpu: ([x, w, b]) => layerNorm(x, w, b),
    ref: ([x, w, b]) => refLayerNorm(x, 96, w, b, 1e-5),
    tol: 3e-3,
    gradTol: 2e-2,
  });
});

Deno.test("layer_norm rejects a weight of the wrong size", async () => {
  const gpu = await testGpu();
  const x = Tensor.empty(gpu, [2, 8]);
  const w = Tensor.empty(gpu, [7]);
  assert.throws(() => layerNorm(x, w, null), /layer_norm: .*\[8\].*x \[2,8\], weight \[7\]/);
  x.dispose();
  w.dispose();
});
