/** Straightness: one implementation (core/flow/straightness.ts) behind the samplers' measures. */
import assert from "node:assert/strict";
import { PathStats, perSampleMse } from "../../core/flow/straightness.ts";
import { straightness, type VelocityModel } from "../../core/schedulers/flow_samplers.ts";
import { FLOW_EPS } from "../../core/flow/time.ts";

const randn = (n: number) => Float64Array.from({ length: n }, () => Math.random() * 2 - 1);

Deno.test("PathStats: K|d|^2 - 2 d·Σv + Σ|v|^2 equals the direct mean of |d - v_k|^2", () => {
  const B = 1 + Math.floor(Math.random() * 4), n = 3 + Math.floor(Math.random() * 20);
  const K = 1 + Math.floor(Math.random() * 6);
  const vs = Array.from({ length: K }, () => randn(B * n));
  const x0 = randn(B * n), x1 = randn(B * n);
  const st = new PathStats(B, n);
  for (const v of vs) st.add(v);
  assert.equal(st.evaluations, K);
  const got = st.straightness(x0, x1);
  for (let b = 0; b < B; b++) {
    let want = 0;
    for (const v of vs) {
      let acc = 0;
      for (let j = b * n; j < (b + 1) * n; j++) acc += (x1[j] - x0[j] - v[j]) ** 2;
      want += acc / (n * K);
    }
    assert.ok(Math.abs(got[b] - want) < 1e-12 * Math.max(1, want), `${got[b]} vs ${want}`);
  }
});

Deno.test("PathStats: a straight constant-speed path has straightness 0", () => {
  const B = 2, n = 6;
  const v = randn(B * n);
  const x0 = randn(B * n);
  const x1 = x0.map((x, j) => x + v[j]);
  const st = new PathStats(B, n);
  for (let k = 0; k < 5; k++) st.add(v);
  for (const s of st.straightness(x0, x1)) assert.ok(s < 1e-15, String(s));
  assert.throws(() => st.add(new Float32Array(3)), /expected 2 x 6/);
  assert.throws(() => new PathStats(1, 2).straightness([0, 0], [0, 0]), /no velocity/);
});

Deno.test("perSampleMse", () => {
  assert.deepEqual(perSampleMse([1, 2, 3, 4], [1, 0, 0, 4], 2, 2), [2, 4.5]);
  assert.throws(() => perSampleMse([1], [1, 2], 1, 2), /expected 1 x 2/);
});

Deno.test("straightness: v = b t gives mean_j b_j^2 · Var(t_i); a constant field gives 0", async () => {
  const len = 4 + Math.floor(Math.random() * 8);
  const b = Float32Array.from(randn(len));
  const z0 = Float32Array.from(randn(len));
  const steps = 2 + Math.floor(Math.random() * 20);
  const field: VelocityModel = (x, t) => Promise.resolve(x.map((_, j) => b[j] * t));
  const r = await straightness(field, z0, { steps });
  const ts = Array.from({ length: steps }, (_, i) => i / steps * (1 - FLOW_EPS) + FLOW_EPS);
  const mean = ts.reduce((p, q) => p + q, 0) / steps;
  const variance = ts.reduce((p, q) => p + (q - mean) ** 2, 0) / steps;
  const want = b.reduce((p, q) => p + q * q, 0) / len * variance;
  assert.ok(Math.abs(r.straightness - want) < 1e-6, `${r.straightness} vs ${want}`);
  assert.equal(r.nfe, steps);
  const c = Float32Array.from(randn(len));
  const s0 = await straightness(() => Promise.resolve(c.slice()), z0, { steps });
  assert.ok(s0.straightness < 1e-12, `${s0.straightness}`);
});
