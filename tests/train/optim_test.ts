import assert from "node:assert/strict";
import { assertClose, testGpu } from "../helpers/gpu.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { keep } from "../../core/tensor/scope.ts";
import { AdamW } from "../../core/train/adamw.ts";
import { Ema } from "../../core/train/ema.ts";
import { lrLambda } from "../../core/train/lr_schedule.ts";

interface Ref {
  shapes: number[][];
  init: number[][];
  steps: { grads: number[][]; norm: number; lr: number; params: number[][]; shadow: number[][] }[];
  schedules: Record<string, number[]>;
}
const ref: Ref = JSON.parse(
  await Deno.readTextFile(new URL("../fixtures/train/optim_ref.json", import.meta.url)),
);

Deno.test("AdamW + linear warm-up + clipping + EMA match torch", async () => {
  const gpu = await testGpu();
  const params = ref.shapes.map((s, i) => {
    const t = keep(Tensor.from(gpu, Float32Array.from(ref.init[i]), s));
    t.requiresGrad = true;
    return t;
  });
  const opt = new AdamW(gpu, params, {
    lr: 0.1,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    weightDecay: 0.01,
    gradClip: 1.0,
  });
  const ema = new Ema(gpu, params, 0.999);
  const lam = lrLambda({ name: "linear", warmup: 3, total: 10 });
  for (const [k, st] of ref.steps.entries()) {
    params.forEach((p, i) => {
      p.grad?.dispose();
      p.grad = keep(Tensor.from(gpu, Float32Array.from(st.grads[i]), p.shape));
    });
    const lr = 0.1 * lam(k);
    assert.ok(Math.abs(lr - st.lr) < 1e-12, `lr at step ${k}: ${lr} vs ${st.lr}`);
    const norm = opt.update(lr);
    ema.update();
    const n = (await norm.toF32())[0];
    norm.dispose();
    assert.ok(Math.abs(n - st.norm) / st.norm < 1e-5, `grad norm ${n} vs ${st.norm}`);
    for (const [i, p] of params.entries()) {
      assertClose(await p.toF32(), st.params[i], 1e-5, `param ${i} after step ${k}`);
      assertClose(await ema.shadow[i].toF32(), st.shadow[i], 1e-5, `ema ${i} after step ${k}`);
    }
  }
  // EMA evaluation restores the live weights.
  const live = await params[0].toF32();
  const inside = await ema.withAverage(() => params[0].toF32());
  assertClose(inside, await ema.shadow[0].toF32(), 0, "weights inside withAverage");
  assertClose(await params[0].toF32(), live, 0, "live weights restored");
  opt.dispose();
  ema.dispose();
  for (const p of params) {
    p.grad?.dispose();
    p.dispose();
  }
});

Deno.test("LR schedules follow diffusers' formulas", () => {
  for (const [name, vals] of Object.entries(ref.schedules)) {
    const lam = lrLambda({ name, warmup: 3, total: 10 });
    vals.forEach((v, s) => assert.ok(Math.abs(lam(s) - v) < 1e-12, `${name}(${s})`));
  }
  assert.throws(() => lrLambda({ name: "cosine_restarts", warmup: 0, total: 1 }), /optim.schedule/);
});
