/** The UNet as a velocity model, and one batch of samples through it (core/flow/). */
import assert from "node:assert/strict";
import * as ops from "../../core/ops.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { unetVelocity, type VelocityNet } from "../../core/flow/velocity.ts";
import { sampleBatch } from "../../core/flow/sample_batch.ts";
import { TIMESTEP_ORIENTATIONS, unetTimestep } from "../../core/flow/time.ts";
import { testGpu } from "../helpers/gpu.ts";

/** v = a·x + timestep (per sample), recording what the UNet was given. */
function fakeNet(a: number, seen: { shapes: number[][]; contexts: Tensor[] }): VelocityNet {
  return {
    forward(sample, timesteps, context) {
      seen.shapes.push([...sample.shape], [...timesteps.shape]);
      seen.contexts.push(context);
      const B = sample.shape[0];
      return ops.add(ops.scale(sample, a), ops.reshape(timesteps, [B, 1, 1, 1]));
    },
  };
}

const randn = (n: number) => Float32Array.from({ length: n }, () => Math.random() * 4 - 2);

Deno.test("unetVelocity: the UNet sees x as [B, C, H, W], unetTimestep(t) per sample, the context", async () => {
  const gpu = await testGpu();
  const [B, C, H, W] = [3, 2, 2, 4];
  const n = C * H * W;
  const context = Tensor.from(gpu, new Float32Array(B * 5 * 7), [B, 5, 7]);
  try {
    for (const orientation of TIMESTEP_ORIENTATIONS) {
      const seen = { shapes: [] as number[][], contexts: [] as Tensor[] };
      const a = Math.fround(Math.random() + 0.5);
      let got: Float32Array | null = null;
      const model = unetVelocity(gpu, fakeNet(a, seen), context, [C, H, W], orientation, (v) => {
        got = v;
      });
      for (let k = 0; k < 4; k++) {
        const t = Math.random();
        const x = randn(B * n);
        const v = await model(x, t);
        assert.equal(got, v, "onVelocity sees the velocity read back");
        const ts = unetTimestep(t, orientation);
        for (let j = 0; j < B * n; j++) {
          const want = Math.fround(Math.fround(a * x[j]) + ts);
          assert.ok(Math.abs(v[j] - want) <= 1e-6 * Math.max(1, Math.abs(want)), `${v[j]} ${want}`);
        }
      }
      assert.deepEqual(seen.shapes.slice(0, 2), [[B, C, H, W], [B]]);
      assert.ok(seen.contexts.every((c) => c === context));
      await assert.rejects(() => model(new Float32Array(n), 0.5), /not 3 x 2x2x4/);
    }
  } finally {
    context.dispose();
  }
});

Deno.test("sampleBatch: Euler on v = timestep moves z0 by dt Σ ts_i; straightness closed form", async () => {
  const gpu = await testGpu();
  const [B, C, H, W] = [2, 1, 2, 2];
  const n = C * H * W;
  const context = Tensor.from(gpu, new Float32Array(B * 3), [B, 1, 3]);
  try {
    const N = 3 + Math.floor(Math.random() * 4);
    const z0 = randn(B * n);
    const r = await sampleBatch(gpu, fakeNet(0, { shapes: [], contexts: [] }), context, z0, [
      C,
      H,
      W,
    ], {
      sampler: "euler",
      sampleN: N,
      odeTol: 1e-5,
      sigmaVar: 0,
      noiseScale: 1,
      orientation: "original",
      returnTrajectory: true,
    });
    assert.equal(r.nfe, N);
    assert.equal(r.trajectory!.length, N + 1);
    const ts = Array.from(
      { length: N },
      (_, i) => unetTimestep(i / N * (1 - 1e-3) + 1e-3, "original"),
    );
    const d = ts.reduce((p, q) => p + q, 0) / N;
    for (let j = 0; j < B * n; j++) {
      assert.ok(Math.abs(r.x[j] - (z0[j] + d)) <= 1e-4 * Math.max(1, Math.abs(d)), `${r.x[j]}`);
    }
    // S = mean_k (d - ts_k)^2 for every element (the field ignores x): the closed form.
    const want = ts.reduce((p, q) => p + (d - q) ** 2, 0) / N;
    for (const s of r.straightness) assert.ok(Math.abs(s - want) <= 1e-3 * want, `${s} vs ${want}`);
  } finally {
    context.dispose();
  }
});
