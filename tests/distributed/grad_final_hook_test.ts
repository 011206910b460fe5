/**
 * The autograd hook the gradient buckets rely on: each leaf is reported once, and only when its
 * gradient is final — a GPU copy of `.grad` taken at the moment of the report equals the gradient
 * after backward — also for parameters used twice and inside a checkpointed block.
 */
import assert from "node:assert/strict";
import { testGpu } from "../helpers/gpu.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { keep, tidy } from "../../core/tensor/scope.ts";
import { backward, withGradFinalHook } from "../../core/tensor/autograd.ts";
import { checkpoint } from "../../core/tensor/checkpoint.ts";
import { mul } from "../../core/kernels/binary.ts";
import { linear } from "../../core/kernels/matmul.ts";
import { mean } from "../../core/kernels/reduce.ts";
import { readMany } from "../../core/tensor/readback.ts";
import { philoxNormal } from "../../core/tensor/philox.ts";

Deno.test("grad-final hook: once per leaf, after its last gradient", async () => {
  const gpu = await testGpu();
  let seed = 100;
  const param = (shape: number[]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const t = keep(Tensor.from(gpu, philoxNormal(seed++, 0, n), shape));
    t.requiresGrad = true;
    return t;
  };
  const w1 = param([6, 5]);
  const w2 = param([6, 6]); // used by two layers
  const w3 = param([4, 6]);
  const b3 = param([4]);
  const x = keep(Tensor.from(gpu, philoxNormal(7, 0, 3 * 5), [3, 5]));
  const reports: Tensor[] = [];
  const snapshots = new Map<Tensor, Tensor>();
  tidy(() => {
    const h1 = linear(x, w1);
    const h2 = linear(linear(h1, w2), w2);
    const h3 = checkpoint((a: Tensor) => linear(mul(a, a), w3, b3), [h2]);
    const loss = mean(mul(h3, h3));
    const seedGrad = Tensor.from(gpu, [1], [1]);
    withGradFinalHook((leaf) => {
      reports.push(leaf);
      if (!leaf.grad) return;
      // A copy recorded now holds the value the gradient has at this point of backward.
      const snap = keep(Tensor.empty(gpu, leaf.shape));
      gpu.copy(leaf.grad!.buffer, 0, snap.buffer, 0, leaf.grad!.bytes);
      snapshots.set(leaf, snap);
    }, () => backward([loss], [seedGrad]));
  });
  const params = [w1, w2, w3, b3];
  for (const p of params) {
    assert.equal(reports.filter((r) => r === p).length, 1, `reported once: ${p.shape}`);
  }
  const finals = await readMany(params.map((p) => p.grad!));
  const snaps = await readMany(params.map((p) => snapshots.get(p)!));
  params.forEach((p, i) => {
    assert.ok(finals[i].some((v) => v !== 0), `a real gradient for ${p.shape}`);
    assert.deepEqual(snaps[i], finals[i], `gradient of ${p.shape} changed after its report`);
  });
  // Inside the checkpointed block, w3 and b3 were reported before w2 and w1 (backward order).
  const order = params.map((p) => reports.indexOf(p));
  assert.ok(order[2] < order[1] && order[3] < order[1] && order[1] < order[0], `${order}`);
  for (const t of [...params, x, ...snapshots.values()]) {
    t.grad?.dispose();
    t.dispose();
  }
});
