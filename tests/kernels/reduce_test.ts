import assert from "node:assert/strict";
import { checkOp, testGpu } from "../helpers/gpu.ts";
import * as ops from "../../core/ops.ts";
import { Tensor } from "../../core/tensor/tensor.ts";

/** float64 sum of x (shape) over axes, keeping reduced axes as size 1. */
function refSum(x: Float64Array, shape: number[], axes: number[], scale = 1): Float64Array {
  const out = shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const n = out.reduce((a, b) => a * b, 1);
  const y = new Float64Array(n);
  const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const ostr = out.map((_, i) => out.slice(i + 1).reduce((a, b) => a * b, 1));
  for (let i = 0; i < x.length; i++) {
    let o = 0;
    shape.forEach((d, k) => {
      const c = Math.floor(i / strides[k]) % d;
      if (!axes.includes(k)) o += c * ostr[k];
    });
    y[o] += x[i] * scale;
  }
  return y;
}

for (
  const [shape, axes] of [
    [[7], [0]],
    [[3, 5], [1]],
    [[3, 5], [0]],
    [[2, 3, 4, 5], [1, 3]],
    [[2, 300, 3], [1]], // long reductions take the workgroup-per-output kernel
    [[4, 6], [0, 1]],
  ] as [number[], number[]][]
) {
  Deno.test(`sum and mean over [${axes}] of [${shape}]`, async () => {
    await checkOp({
      shapes: [shape],
      gpu: ([x]) => ops.sum(x, axes),
      ref: ([x]) => refSum(x, shape, axes),
      tol: 1e-5,
    });
    const count = axes.reduce((a, k) => a * shape[k], 1);
    await checkOp({
      shapes: [shape],
      gpu: ([x]) => ops.mean(x, axes, true),
      ref: ([x]) => refSum(x, shape, axes, 1 / count),
      tol: 1e-5,
    });
  });
}

Deno.test("sum: a bad axis names the op", async () => {
  const gpu = await testGpu();
  const x = Tensor.from(gpu, [1, 2, 3], [3]);
  assert.throws(() => ops.sum(x, 2), /sum: axis 2 out of range/);
  x.dispose();
});
