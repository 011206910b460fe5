/**
 * The reflow loss against a float64 reference for every t schedule (value and gradient of a small
 * differentiable student), the t schedules' ranges, and — when the UNet kernels and the golden
 * case are present — the loss and parameter gradients of diffusers' tiny SD-1.x UNet.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { assertClose, rand, testGpu } from "../helpers/gpu.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { parameter } from "../../core/nn/module.ts";
import { backward } from "../../core/tensor/autograd.ts";
import * as ops from "../../core/ops.ts";
import { CounterRng } from "../../core/train/rng.ts";
import {
  checkLossKind,
  drawT,
  interpolate,
  parseTSchedule,
  REFLOW_EPS,
  reflowLoss,
  reflowLossReference,
  unetTimestep,
} from "../../core/train/reflow_loss.ts";
import { readNpy } from "../../core/data/npy.ts";

Deno.test("t schedules: t0, t1, uniform, k; parsing errors name the setting", () => {
  const rng = new CounterRng(5, 1);
  assert.deepEqual([...drawT(parseTSchedule("t0"), rng, 3)], [REFLOW_EPS, REFLOW_EPS, REFLOW_EPS]);
  assert.deepEqual([...drawT(parseTSchedule("t1"), rng, 2)], [1, 1]);
  const u = drawT(parseTSchedule("uniform"), rng, 2000);
  assert.ok(u.every((x) => x >= REFLOW_EPS && x < 1));
  const mean = u.reduce((a, b) => a + b, 0) / u.length;
  assert.ok(Math.abs(mean - (1 + REFLOW_EPS) / 2) < 0.02, `uniform mean ${mean}`);
  for (const k of ["4", 4]) {
    const tk = drawT(parseTSchedule(k), rng, 400);
    const grid = [0, 1, 2, 3].map((i) => i / 4 * (1 - REFLOW_EPS) + REFLOW_EPS);
    assert.ok(tk.every((x) => grid.includes(x)), "k schedule stays on its grid");
    assert.equal(new Set(tk).size, 4, "all k points drawn");
  }
  assert.throws(() => parseTSchedule("1"), /reflow_t_schedule/);
  assert.throws(() => parseTSchedule("linear"), /reflow_t_schedule/);
  checkLossKind("lpips");
  checkLossKind("lpips+l2");
  assert.throws(() => checkLossKind("huber"), /unknown loss/);
  // Same seed and counter: same draws (what resume relies on).
  const a = new CounterRng(9, 1), b = new CounterRng(9, 1);
  a.advance(10);
  b.load(a.state());
  assert.deepEqual([...drawT(parseTSchedule("uniform"), a, 5)], [
    ...drawT(parseTSchedule("uniform"), b, 5),
  ]);
  assert.equal(unetTimestep(0.5, "original"), 499);
  assert.equal(unetTimestep(1, "original"), 999);
  assert.ok(Math.abs(unetTimestep(0.25, "pretrained") - 749.25) < 1e-4);
});

/**
 * Student: pred = zt * w[c] + ts * s (w per channel is the parameter; s a constant), simple enough
 * for an exact float64 gradient.
 */
Deno.test("reflow loss and its gradient match a float64 reference for every schedule", async () => {
  const gpu = await testGpu();
  const [B, C, H, W] = [3, 4, 5, 6];
  const n = C * H * W;
  const z0 = Float32Array.from(rand(B * n, 11));
  const z1 = Float32Array.from(rand(B * n, 12));
  const w0 = Float32Array.from(rand(C, 13, 0.5, 1.5));
  const s = 1e-3;
  const context = Tensor.from(gpu, new Float32Array(B * 2 * 3), [B, 2, 3]);
  for (const sched of ["t0", "t1", "uniform", "3"]) {
    for (const reduceMean of [true, false]) {
      for (const orientation of ["original", "pretrained"] as const) {
        const rng = new CounterRng(2333, 1);
        const t = drawT(parseTSchedule(sched), rng, B);
        const w = parameter(gpu, [1, C, 1, 1], w0);
        const sT = Tensor.from(gpu, [s], [1, 1, 1, 1]);
        const loss = reflowLoss(
          gpu,
          (zt, ts) => ops.add(ops.mul(zt, w), ops.mul(ops.reshape(ts, [B, 1, 1, 1]), sT)),
          {
            z0,
            z1,
            shape: [B, C, H, W],
            context,
          },
          t,
          { loss: "l2", reduceMean, orientation },
        );
        backward([loss], [Tensor.from(gpu, [1], [1])]);
        const got = (await loss.toF32())[0];
        const gw = await w.grad!.toF32();
        // float64 reference
        const pred = new Float64Array(B * n);
        const dw = new Float64Array(C);
        const coef = reduceMean ? 2 / (B * n) : 1 / B;
        for (let b = 0; b < B; b++) {
          const ts = orientation === "original" ? Math.floor(999 * t[b]) : 999 * (1 - t[b]);
          for (let c = 0; c < C; c++) {
            for (let j = 0; j < H * W; j++) {
              const i = b * n + c * H * W + j;
              const zt = t[b] * z1[i] + (1 - t[b]) * z0[i];
              pred[i] = zt * w0[c] + ts * s;
              dw[c] += coef * (pred[i] - (z1[i] - z0[i])) * zt;
            }
          }
        }
        const want = reflowLossReference(pred, z0, z1, B, reduceMean);
        const what = `${sched}/${reduceMean ? "mean" : "sum"}/${orientation}`;
        assert.ok(Math.abs(got - want) / want < 1e-5, `${what}: loss ${got} vs ${want}`);
        assertClose(gw, dw, 1e-4, `${what}: grad`);
        loss.dispose();
        w.grad?.dispose();
        w.dispose();
        sT.dispose();
      }
    }
  }
  context.dispose();
});

Deno.test("interpolate: zt = t z1 + (1 - t) z0, target z1 - z0", () => {
  const { zt, target } = interpolate(
    Float32Array.from([1, 2, 3, 4]),
    Float32Array.from([5, 6, 7, 8]),
    [0.25, 1],
  );
  assert.deepEqual([...zt], [2, 3, 7, 8]);
  assert.deepEqual([...target], [4, 4, 4, 4]);
});

const GOLDEN = "/work/shared/golden/unet_sd1_tiny";
function unetAvailable(): boolean {
  if (!existsSync(join(GOLDEN, "z0.npy"))) return false;
  for (const k of ["conv2d", "timestep_embedding", "attention", "upsample"]) {
    if (!existsSync(new URL(`../../core/kernels/${k}.ts`, import.meta.url))) return false;
  }
  return true;
}

Deno.test({
  name: "golden: reflow loss and gradients of diffusers' tiny SD-1.x UNet",
  ignore: !unetAvailable(),
  fn: async () => {
    const gpu = await testGpu();
    const { loadUNet } = await import("../../core/models/diffusers_folder.ts");
    const unet = await loadUNet(gpu, GOLDEN);
    const npy = async (name: string) => {
      const a = await readNpy(join(GOLDEN, name));
      return { shape: a.shape, data: Float32Array.from(a.data as Float32Array) };
    };
    const z0 = await npy("z0.npy"), z1 = await npy("z1.npy"), t = await npy("t.npy");
    const ehs = await npy("encoder_hidden_states.npy");
    const wantLoss = (await npy("loss.npy")).data[0];
    const context = Tensor.from(gpu, ehs.data, ehs.shape);
    const shape = z0.shape as [number, number, number, number];
    const loss = reflowLoss(
      gpu,
      (zt, ts, ctx) => unet.forward(zt, ts, ctx),
      { z0: z0.data, z1: z1.data, shape, context },
      t.data,
      { loss: "l2", reduceMean: true, orientation: "original" },
    );
    backward([loss], [Tensor.from(gpu, [1], [1])]);
    const got = (await loss.toF32())[0];
    assert.ok(Math.abs(got - wantLoss) / wantLoss < 1e-4, `loss ${got} vs golden ${wantLoss}`);
    const params = new Map(unet.namedParameters());
    let checked = 0;
    for await (const e of Deno.readDir(GOLDEN)) {
      const m = /^grad__(.+)\.npy$/.exec(e.name);
      if (!m) continue;
      const p = params.get(m[1]);
      assert.ok(p, `golden gradient for unknown parameter ${m[1]}`);
      assert.ok(p.grad, `${m[1]} got no gradient`);
      assertClose(await p.grad.toF32(), (await npy(e.name)).data, 1e-3, `grad of ${m[1]}`);
      checked++;
    }
    assert.equal(checked, 10);
    unet.dispose();
  },
});
