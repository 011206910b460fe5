import assert from "node:assert/strict";
import { checkOp, NEEDS_F16, testGpu } from "../helpers/gpu.ts";
import { softmax } from "../../core/kernels/softmax.ts";
import { Tensor } from "../../core/tensor/tensor.ts";

/** float64 softmax over the last axis of a [rows, cols] array. */
function refSoftmax(x: Float64Array, cols: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / cols; r++) {
    let m = -Infinity;
    for (let j = 0; j < cols; j++) m = Math.max(m, x[r * cols + j]);
    let s = 0;
    for (let j = 0; j < cols; j++) s += Math.exp(x[r * cols + j] - m);
    for (let j = 0; j < cols; j++) out[r * cols + j] = Math.exp(x[r * cols + j] - m) / s;
  }
  return out;
}

const scaled = (k: number) => (_i: number, n: number) => {
  // Larger logits exercise the max subtraction; fresh values per shape.
  const out = new Float64Array(n);
  for (let j = 0; j < n; j++) out[j] = k * Math.sin(j * 1.7 + n) + 0.3 * Math.cos(j * 0.37);
  return out;
};

// Rows go to segments of 1..64 threads by length: one thread per row (64 rows per workgroup, the
// last workgroup partly empty), 2, 4 and 32 threads (two-level reductions), a partial last register,
// 64 registers of 64 threads ([2, 4096]) and longer rows that loop over memory ([3, 4100]).
for (
  const shape of [
    [5],
    [3, 7],
    [2, 3, 77],
    [4, 130],
    [1, 1],
    [2, 1025],
    [70, 9],
    [37, 100],
    [2, 4096],
    [3, 4100],
  ]
) {
  Deno.test(`softmax [${shape}]`, async () => {
    const cols = shape[shape.length - 1];
    await checkOp({
      shapes: [shape],
      gpu: ([x]) => softmax(x),
      ref: ([x]) => refSoftmax(x, cols),
      tol: 1e-5,
      gradTol: 2e-3,
    });
  });
}

Deno.test("softmax large logits stay finite", async () => {
  await checkOp({
    shapes: [[6, 50]],
    gpu: ([x]) => softmax(x),
    ref: ([x]) => refSoftmax(x, 50),
    init: scaled(60),
    tol: 1e-5,
    gradTol: 0,
  });
});

Deno.test("softmax f16", NEEDS_F16, async () => {
  await checkOp({
    shapes: [[3, 77]],
    dtype: "f16",
    gpu: ([x]) => softmax(x),
    ref: ([x]) => refSoftmax(x, 77),
    tol: 3e-3,
    gradTol: 2e-2,
  });
});

Deno.test("softmax rejects an empty last axis", async () => {
  const gpu = await testGpu();
  const x = Tensor.empty(gpu, [3, 0]);
  assert.throws(() => softmax(x), /softmax: .*\[3,0\]/);
  x.dispose();
});
