/**
 * Memory stays flat over a long loop of forward + backward, and misuse fails with clear messages.
 * The network is tiny on purpose: the point is bookkeeping (scopes, saved tensors, gradients), not
 * arithmetic.
 */
import assert from "node:assert/strict";
import { rand, testGpu } from "../helpers/gpu.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { backward } from "../../core/tensor/autograd.ts";
import { keep, tidy } from "../../core/tensor/scope.ts";
import * as ops from "../../core/ops.ts";
import { embedding, embeddingFromHost } from "../../core/kernels/embedding.ts";
import { geglu } from "../../core/kernels/geglu.ts";
import { upsampleNearest2x } from "../../core/kernels/upsample.ts";
import { randomNormal } from "../../core/kernels/random.ts";
import { timestepEmbedding } from "../../core/kernels/timestep_embedding.ts";
import { mse } from "../../core/kernels/mse.ts";
import { cast } from "../../core/kernels/cast.ts";

function param(gpu: Awaited<ReturnType<typeof testGpu>>, shape: number[], seed: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const t = keep(Tensor.from(gpu, Float32Array.from(rand(n, seed)), shape));
  t.requiresGrad = true;
  return t;
}

Deno.test("memory: 1000 steps of forward + backward keep liveBytes flat", async () => {
  const gpu = await testGpu();
  const table = param(gpu, [10, 8], 1);
  const gain = param(gpu, [8], 2);
  const bias = param(gpu, [8], 3);
  const params = [table, gain, bias];
  const one = keep(Tensor.from(gpu, [1], [1]));
  const ts = keep(Tensor.from(gpu, [10, 990], [2]));
  const ids = Int32Array.from([0, 3, 9, 3, 3, 7]);
  let after10 = 0;
  let lossValue = NaN;
  for (let step = 1; step <= 1000; step++) {
    const loss = tidy(() => {
      const e = embeddingFromHost(ids, [2, 3], table); // [2, 3, 8]
      const s = ops.silu(ops.add(ops.mul(e, gain), bias));
      const g = geglu(s); // [2, 3, 4]
      let up = upsampleNearest2x(ops.reshape(g, [2, 3, 2, 2])); // [2, 3, 4, 4]
      if (gpu.hasF16) up = cast(cast(up, "f16"), "f32");
      const temb = ops.reshape(timestepEmbedding(ts, 4, { flipSinToCos: true }), [2, 1, 1, 4]);
      const noise = randomNormal(gpu, [2, 3, 4, 4], { seed: 2333, offset: step * 96 });
      return mse(ops.add(up, temb), noise, { reduction: "mean" });
    });
    backward([loss], [one]);
    if (step === 1000) lossValue = (await loss.toF32())[0];
    loss.dispose();
    for (const p of params) {
      assert.ok(p.grad, `step ${step}: a parameter got no gradient`);
      p.grad.dispose();
      p.grad = null;
    }
    // Let the queue drain now and then; the test is about our bookkeeping, not queue depth.
    if (step % 200 === 0) await gpu.sync();
    if (step === 10) after10 = gpu.pool.liveBytes;
  }
  assert.ok(Number.isFinite(lossValue));
  assert.equal(gpu.pool.liveBytes, after10, "live bytes grew between step 10 and step 1000");
  for (const t of [...params, one, ts]) t.dispose();
});

Deno.test("errors: use after release and mismatched shapes name the op", async () => {
  const gpu = await testGpu();
  const a = Tensor.from(gpu, [1, 2, 3, 4, 5, 6], [2, 3]);
  const b = Tensor.from(gpu, [1, 2, 3, 4], [4]);
  assert.throws(() => ops.add(a, b), /add: shapes \[2,3\] and \[4\] do not broadcast/);
  assert.throws(() => ops.mul(a, b), /mul: shapes/);
  assert.throws(() => mse(a, b), /mse: pred \[2,3\] and target \[4\]/);
  assert.throws(() => geglu(a), /geglu: last dimension must be even.*\[2,3\]/);
  assert.throws(() => upsampleNearest2x(a), /upsample_nearest2x: expects/);
  const ids = Tensor.from(gpu, [0, 1], [2], "i32");
  assert.throws(() => embedding(ids, b), /embedding: weight must be \[V, D\]/);
  b.dispose();
  assert.throws(() => ops.silu(b), /used after release/);
  assert.throws(() => ops.add(a, b), /used after release/);
  assert.throws(() => geglu(b), /geglu.*used after release/);
  assert.throws(() => cast(b, "f32"), /cast.*used after release/);
  await assert.rejects(() => b.data(), /used after release/);
  a.dispose();
  ids.dispose();
});
