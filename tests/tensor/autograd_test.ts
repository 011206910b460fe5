import assert from "node:assert/strict";
import { assertClose, rand, testGpu } from "../helpers/gpu.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { keep, tidy } from "../../core/tensor/scope.ts";
import { backward, noGrad } from "../../core/tensor/autograd.ts";
import { checkpoint } from "../../core/tensor/checkpoint.ts";
import { fill } from "../../core/kernels/fill.ts";
import * as ops from "../../core/ops.ts";

async function setup() {
  const gpu = await testGpu();
  const w = keep(Tensor.from(gpu, Float32Array.from(rand(12, 3)), [3, 4]));
  w.requiresGrad = true;
  const x = keep(Tensor.from(gpu, Float32Array.from(rand(8, 4)), [2, 4]));
  return { gpu, w, x };
}

/** A block with several ops and a parameter: silu(x * w_row) summed with a reused input. */
const block = (w: Tensor) => (x: Tensor): Tensor => {
  const h = ops.silu(ops.mul(ops.reshape(x, [2, 1, 4]), w));
  return ops.add(ops.mean(h, 1), x);
};

async function gradOf(
  ckpt: boolean,
): Promise<{ w: Float32Array; x: Float32Array; y: Float32Array }> {
  const { gpu, w, x } = await setup();
  x.requiresGrad = true;
  const y = tidy(() => {
    const f = block(w);
    const h = ckpt ? checkpoint(f, [x]) : f(x);
    return ops.sum(ops.square(ckpt ? checkpoint(f, [h]) : f(h)));
  });
  const g = Tensor.empty(gpu, [1]);
  fill(g, 1);
  backward([y], [g]);
  const out = { w: await w.grad!.toF32(), x: await x.grad!.toF32(), y: await y.toF32() };
  for (const t of [g, y, w.grad!, x.grad!, w, x]) t.dispose();
  return out;
}

Deno.test("gradient checkpointing gives the same loss and gradients as plain backward", async () => {
  const plain = await gradOf(false);
  const ckpt = await gradOf(true);
  assertClose(ckpt.y, plain.y, 1e-6, "loss");
  assertClose(ckpt.w, plain.w, 1e-6, "parameter gradient");
  assertClose(ckpt.x, plain.x, 1e-6, "input gradient");
  assert.ok(plain.w.some((v) => v !== 0));
});

Deno.test("gradients accumulate into .grad over two backward passes", async () => {
  const { gpu, w, x } = await setup();
  const run = () => {
    const y = tidy(() => ops.sum(block(w)(x)));
    const g = Tensor.empty(gpu, [1]);
    fill(g, 1);
    backward([y], [g]);
    g.dispose();
    y.dispose();
  };
  run();
  const once = await w.grad!.toF32();
  run();
  assertClose(await w.grad!.toF32(), once.map((v) => 2 * v), 1e-6, "accumulated");
  w.grad!.dispose();
  w.dispose();
  x.dispose();
});

Deno.test("noGrad records nothing; backward releases saved activations", async () => {
  const { gpu, w, x } = await setup();
  const y0 = noGrad(() => tidy(() => ops.sum(block(w)(x))));
  assert.equal(y0.node, null);
  assert.equal(y0.requiresGrad, false);
  y0.dispose();
  const before = gpu.pool.liveBytes;
  const y = tidy(() => ops.sum(block(w)(x)));
  assert.ok(gpu.pool.liveBytes > before, "saved activations are held until backward");
  const g = Tensor.empty(gpu, [1]);
  fill(g, 1);
  backward([y], [g]);
  g.dispose();
  y.dispose();
  w.grad!.dispose();
  w.grad = null;
  assert.equal(gpu.pool.liveBytes, before, "everything but the inputs is released");
  w.dispose();
  x.dispose();
});
