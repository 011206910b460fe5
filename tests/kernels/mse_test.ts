import assert from "node:assert/strict";
import { checkOp, lacks, testGpu } from "../helpers/gpu.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { mse, type MseReduction } from "../../core/kernels/mse.ts";

function ref(p: Float64Array, t: Float64Array, shape: number[], red: MseReduction): Float64Array {
  const rows = red === "mean" ? 1 : shape[0];
  const cols = p.length / rows;
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let j = 0; j < cols; j++) s += (p[r * cols + j] - t[r * cols + j]) ** 2;
    out[r] = red === "half_sum" ? 0.5 * s : s / cols;
  }
  return out;
}

const SHAPES = [[1], [3, 4, 5, 7], [2, 4, 16, 17], [5, 300]];
for (const red of ["mean", "per_sample_mean", "half_sum"] as const) {
  for (const shape of SHAPES) {
    for (const dtype of ["f32", "f16"] as const) {
      Deno.test(`mse ${red} [${shape}] ${dtype}`, { ignore: lacks({ dtype }) }, async () => {
        await checkOp({
          shapes: [shape, shape],
          gpu: ([p, t]) => {
            const y = mse(p, t, { reduction: red });
            assert.equal(y.dtype, "f32");
            assert.deepEqual(y.shape, [red === "mean" ? 1 : shape[0]]);
            return y;
          },
          ref: ([p, t]) => ref(p, t, shape, red),
          dtype,
          tol: dtype === "f16" ? 3e-3 : 1e-5,
          gradTol: dtype === "f16" ? 5e-3 : 1e-3,
        });
      });
    }
  }
}

Deno.test("mse: errors name the op and the shapes", async () => {
  const gpu = await testGpu();
  const a = Tensor.from(gpu, [1, 2, 3, 4], [2, 2]);
  const b = Tensor.from(gpu, [1, 2, 3, 4], [4]);
  assert.throws(() => mse(a, b), /mse: pred \[2,2\] and target \[4\] differ in shape/);
  assert.throws(
    () => mse(a, a, { reduction: "sum" as MseReduction }),
    /mse: unknown reduction 'sum'/,
  );
  const c = Tensor.from(gpu, [0, 1, 2, 3], [2, 2], "i32");
  assert.throws(() => mse(c, c), /mse: dtype i32/);
  for (const t of [a, b, c]) t.dispose();
});
