import assert from "node:assert/strict";
import { checkOp, lacks, testGpu } from "../helpers/gpu.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { backward } from "../../core/tensor/autograd.ts";
import { maxPool2x2 } from "../../core/kernels/max_pool.ts";

/** Float64 reference: 2x2 windows, stride 2, floor mode, first maximum wins. */
function ref(x: Float64Array, shape: number[]): Float64Array {
  const [N, C, H, W] = shape;
  const oh = Math.floor(H / 2), ow = Math.floor(W / 2);
  const out = new Float64Array(N * C * oh * ow);
  for (let p = 0; p < N * C; p++) {
    for (let y = 0; y < oh; y++) {
      for (let xx = 0; xx < ow; xx++) {
        let m = -Infinity;
        for (const [dy, dx] of [[0, 0], [0, 1], [1, 0], [1, 1]]) {
          m = Math.max(m, x[(p * H + 2 * y + dy) * W + 2 * xx + dx]);
        }
        out[(p * oh + y) * ow + xx] = m;
      }
    }
  }
  return out;
}

for (const dtype of ["f32", "f16"] as const) {
  for (const shape of [[1, 1, 2, 2], [2, 3, 5, 7], [1, 4, 16, 9], [3, 2, 33, 18]]) {
    Deno.test(`maxPool2x2 [${shape}] ${dtype}`, { ignore: lacks({ dtype }) }, async () => {
      await checkOp({
        shapes: [shape],
        gpu: ([x]) => maxPool2x2(x),
        ref: ([x]) => ref(x, shape),
        dtype,
        tol: dtype === "f16" ? 2e-3 : 1e-7,
        gradTol: dtype === "f16" ? 3e-3 : 1e-4,
      });
    });
  }
}

Deno.test("maxPool2x2: ties send the gradient to the first maximum (as torch)", async () => {
  const gpu = await testGpu();
  // Window values: [1, 1 | 0, 1] -> the first 1; the odd last row and column are dropped.
  const x = Tensor.from(gpu, [1, 1, 5, 0, 1, 5, 7, 7, 7], [1, 1, 3, 3]);
  x.requiresGrad = true;
  const y = maxPool2x2(x);
  assert.deepEqual([...y.shape], [1, 1, 1, 1]);
  assert.deepEqual([...await y.toF32()], [1]);
  const g = Tensor.from(gpu, [3], [1, 1, 1, 1]);
  backward([y], [g]);
  assert.deepEqual([...await x.grad!.toF32()], [3, 0, 0, 0, 0, 0, 0, 0, 0]);
  for (const t of [x.grad!, x, y, g]) t.dispose();
});

Deno.test("maxPool2x2: errors name the op and the shape", async () => {
  const gpu = await testGpu();
  const x = Tensor.from(gpu, [1, 2, 3, 4], [2, 2]);
  assert.throws(() => maxPool2x2(x), /max_pool2x2: expects \[N, C, H, W\], got \[2,2\]/);
  const y = x.alias([1, 1, 1, 4]);
  assert.throws(() => maxPool2x2(y), /max_pool2x2: input \[1,1,1,4\] is smaller than the 2x2/);
  x.dispose();
  y.dispose();
  assert.throws(() => maxPool2x2(y), /used after release/);
});
