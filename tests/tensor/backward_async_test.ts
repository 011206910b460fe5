/**
 * `backwardAsync`, the pausing backward the gradient exchange runs: on a graph with a shared
 * weight and a checkpointed block it gives bit-identical gradients and the same grad-final reports
 * as `backward`, asks `pause` once per node and waits for the promises it returns.
 */
import assert from "node:assert/strict";
import { testGpu } from "../helpers/gpu.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { keep, tidy } from "../../core/tensor/scope.ts";
import { backward, backwardAsync, withGradFinalHook } from "../../core/tensor/autograd.ts";
import { checkpoint } from "../../core/tensor/checkpoint.ts";
import { mul } from "../../core/kernels/binary.ts";
import { linear } from "../../core/kernels/matmul.ts";
import { mean } from "../../core/kernels/reduce.ts";
import { readMany } from "../../core/tensor/readback.ts";
import { philoxNormal } from "../../core/tensor/philox.ts";

Deno.test("backwardAsync: the gradients and reports of backward, pausing where asked", async () => {
  const gpu = await testGpu();
  const param = (seed: number, shape: number[]) => {
    const t = keep(Tensor.from(gpu, philoxNormal(seed, 0, shape.reduce((a, b) => a * b)), shape));
    t.requiresGrad = true;
    return t;
  };
  const params = [param(11, [6, 5]), param(12, [6, 6]), param(13, [4, 6]), param(14, [4])];
  const [w1, w2, w3, b3] = params;
  const x = keep(Tensor.from(gpu, philoxNormal(15, 0, 3 * 5), [3, 5]));
  const seedGrad = keep(Tensor.from(gpu, [0.75], [1]));
  const loss = () =>
    tidy(() => {
      const h = linear(linear(linear(x, w1), w2), w2); // w2 used twice
      const y = checkpoint((a: Tensor) => linear(mul(a, a), w3, b3), [h]);
      return mean(mul(y, y));
    });
  const takeGrads = async () => {
    const g = await readMany(params.map((p) => p.grad!));
    for (const p of params) {
      p.grad!.dispose();
      p.grad = null;
    }
    return g;
  };

  const syncReports: Tensor[] = [];
  const l1 = loss();
  withGradFinalHook((leaf) => syncReports.push(leaf), () => backward([l1], [seedGrad]));
  l1.dispose();
  const expected = await takeGrads();

  const asyncReports: Tensor[] = [];
  let asked = 0;
  let waited = 0;
  const l2 = loss();
  await backwardAsync([l2], [seedGrad], {
    onFinal: (leaf) => asyncReports.push(leaf),
    pause: () => {
      asked++;
      // Every other node: a real wait on the event loop, as the exchange's read-backs are.
      if (asked % 2) return undefined;
      return new Promise<void>((resolve) => setTimeout(() => (waited++, resolve()), 1));
    },
  });
  l2.dispose();
  const got = await takeGrads();

  got.forEach((g, i) => {
    assert.ok(g.some((v) => v !== 0), `a real gradient for ${params[i].shape}`);
    assert.deepEqual(g, expected[i], `gradient of ${params[i].shape}`);
  });
  // The parameters, by identity, in the same order (the checkpointed block's activation leaf is
  // a new tensor each run, so it only counts).
  const ofParams = (r: Tensor[]) =>
    r.filter((t) => params.includes(t)).map((t) => params.indexOf(t));
  assert.equal(asyncReports.length, syncReports.length);
  assert.deepEqual(ofParams(asyncReports), ofParams(syncReports));
  assert.equal(new Set(ofParams(asyncReports)).size, params.length, "every parameter once");
  assert.ok(asked >= 8, `pause asked after every node (${asked})`);
  assert.equal(waited, Math.floor(asked / 2), "every returned promise awaited");
  for (const t of [...params, x, seedGrad]) t.dispose();
});
