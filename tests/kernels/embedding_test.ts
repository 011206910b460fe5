import assert from "node:assert/strict";
import { checkOp, lacks, testGpu } from "../helpers/gpu.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { embedding, embeddingFromHost } from "../../core/kernels/embedding.ts";

function ref(w: Float64Array, ids: Int32Array, D: number): Float64Array {
  const out = new Float64Array(ids.length * D);
  ids.forEach((id, p) => {
    for (let d = 0; d < D; d++) out[p * D + d] = w[id * D + d];
  });
  return out;
}

// Repeated ids check the gathered backward's accumulation; odd sizes check the grid edges.
const CASES: { V: number; D: number; ids: number[]; shape: number[] }[] = [
  { V: 5, D: 3, ids: [0, 4, 4, 2], shape: [4] },
  { V: 37, D: 19, ids: [3, 3, 3, 36, 0, 7, 3, 11, 0, 12, 30, 5], shape: [2, 6] },
  { V: 300, D: 260, ids: [299, 1, 1, 150, 299, 2, 1], shape: [7] },
  { V: 4, D: 5, ids: [2], shape: [1] }, // a single position: one pass of the backward's loop
];

for (const c of CASES) {
  for (const dtype of ["f32", "f16"] as const) {
    Deno.test(
      `embedding V ${c.V} D ${c.D} ids [${c.shape}] ${dtype}`,
      { ignore: lacks({ dtype }) },
      async () => {
        const ids = Int32Array.from(c.ids);
        await checkOp({
          shapes: [[c.V, c.D]],
          gpu: ([w]) => {
            const out = embeddingFromHost(ids, c.shape, w);
            assert.deepEqual(out.shape, [...c.shape, c.D]);
            return out;
          },
          ref: ([w]) => ref(w, ids, c.D),
          dtype,
          tol: dtype === "f16" ? 2e-3 : 1e-6,
          gradTol: dtype === "f16" ? 3e-3 : 1e-4,
        });
      },
    );
  }
}

Deno.test("embedding: errors name the op, the id and the vocabulary", async () => {
  const gpu = await testGpu();
  const w = Tensor.from(gpu, new Float32Array(12).fill(1), [4, 3]);
  assert.throws(
    () => embeddingFromHost(Int32Array.from([1, 4]), [2], w),
    /embedding: id 4 at position 1 is out of range for vocabulary size 4/,
  );
  assert.throws(() => embeddingFromHost(Int32Array.from([-1]), [1], w), /id -1/);
  const f = Tensor.from(gpu, [0, 1], [2]);
  assert.throws(() => embedding(f, w), /embedding: dtype f32/);
  const ids = Tensor.from(gpu, [0, 1], [2], "i32");
  assert.throws(() => embedding(ids, w.alias([12])), /embedding: weight must be \[V, D\]/);
  // Out-of-range ids that reach the GPU read as zero rows.
  const bad = Tensor.from(gpu, [7, 2], [2], "i32");
  const y = embedding(bad, w);
  assert.deepEqual([...await y.toF32()], [0, 0, 0, 1, 1, 1]);
  for (const t of [w, f, ids, bad, y]) t.dispose();
});
