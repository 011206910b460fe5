import assert from "node:assert/strict";
import { diffusionLossReference, DiffusionObjective } from "../../core/train/diffusion_loss.ts";
import { CounterRng } from "../../core/train/rng.ts";
import { TEACHER_SCHEDULER_CONFIG } from "../../core/demo/tiny_teacher.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import * as ops from "../../core/ops.ts";
import { rand, testGpu } from "../helpers/gpu.ts";

const obj = DiffusionObjective.fromSchedulerConfig(TEACHER_SCHEDULER_CONFIG, 0.25);

Deno.test("diffusion objective: SD's alphā table, x_t formula", () => {
  assert.deepStrictEqual(obj.numTrainTimesteps, 1000);
  // Stable Diffusion's scaled_linear schedule: alphā_0 = 1 - 0.00085, alphā_999 ≈ 0.0047.
  assert(Math.abs(obj.alphasCumprod[0] - 0.99915) < 1e-6);
  assert(Math.abs(obj.alphasCumprod[999] - 0.0046600) < 1e-4);
  const x0 = Float32Array.from(rand(8, 1));
  const eps = Float32Array.from(rand(8, 2));
  const xt = obj.noisy(x0, eps, [0, 999]);
  for (let j = 0; j < 8; j++) {
    const ac = obj.alphasCumprod[j < 4 ? 0 : 999];
    const want = Math.sqrt(ac) * x0[j] + Math.sqrt(1 - ac) * eps[j];
    assert(Math.abs(xt[j] - want) < 1e-6);
  }
  assert.throws(() => obj.noisy(x0, eps, [0, 1000]));
  assert.throws(() =>
    DiffusionObjective.fromSchedulerConfig({ ...TEACHER_SCHEDULER_CONFIG, prediction_type: "v" })
  );
});

Deno.test("diffusion objective: timesteps and caption dropout are seeded draws", () => {
  const rng = new CounterRng(7, 1);
  const t = obj.timestepsAt(rng, 0, 2000);
  assert(t.every((v) => v >= 0 && v < 1000));
  assert.deepStrictEqual(t, obj.timestepsAt(new CounterRng(7, 1), 0, 2000));
  const caps = Array.from({ length: 4000 }, (_, i) => `c${i}`);
  const dropped = obj.dropCaptionsAt(caps, rng, 0).filter((c) => c === "").length / caps.length;
  assert(Math.abs(dropped - 0.25) < 0.03, `dropout rate ${dropped}`);
});

Deno.test("diffusion objective: loss matches the float64 reference", async () => {
  const gpu = await testGpu();
  const B = 2, C = 3, H = 4, W = 4, n = B * C * H * W;
  const z0 = Float32Array.from(rand(n, 3));
  const z1 = Float32Array.from(rand(n, 4));
  const context = Tensor.from(gpu, Float32Array.from(rand(B * 2 * 5, 5)), [B, 2, 5]);
  const t = Int32Array.from([10, 900]);
  // A stand-in model: 0.5 * x.
  const model = (x: Tensor) => ops.scale(x, 0.5);
  for (const reduceMean of [true, false]) {
    const loss = obj.loss(gpu, model, { z0, z1, shape: [B, C, H, W], context }, t, reduceMean);
    const got = (await loss.toF32())[0];
    loss.dispose();
    const xt = obj.noisy(z1, z0, t);
    const pred = Array.from(xt, (v) => 0.5 * v);
    const want = diffusionLossReference(pred, z0, B, reduceMean);
    assert(Math.abs(got - want) / want < 1e-4, `${got} vs ${want}`);
  }
  context.dispose();
});
