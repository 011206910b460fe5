/** Euler / stochastic Euler / straightness / RK45 flow samplers on fields with closed forms. */
import assert from "node:assert/strict";
import {
  eulerSample,
  rk45Sample,
  straightness,
  type VelocityModel,
} from "../../core/schedulers/flow_samplers.ts";
import { relativeL2 } from "../../core/schedulers/vec.ts";

const z0 = Float32Array.from([0.5, -1.25, 2, 0.125, -0.75]);
const c = Float32Array.from([1, -0.5, 0.25, 2, -3]);
const constantField: VelocityModel = (x) => Promise.resolve(c.slice(0, x.length));

Deno.test("euler: constant field moves by exactly v (N·dt = 1), with N+1 trajectory states", async () => {
  const seen: number[] = [];
  const model: VelocityModel = (x, t) => {
    seen.push(t);
    return constantField(x, t);
  };
  const r = await eulerSample(model, z0, { steps: 8, returnTrajectory: true });
  assert.equal(r.nfe, 8);
  const expected = z0.map((v, i) => v + c[i]);
  assert.ok(relativeL2(r.x, expected) < 1e-7);
  assert.equal(r.trajectory!.length, 9);
  assert.deepEqual(Array.from(r.trajectory![0]), Array.from(z0));
  // t_i = i/N (1 - eps) + eps, eps = 1e-3
  assert.deepEqual(seen, Array.from({ length: 8 }, (_, i) => i / 8 * (1 - 1e-3) + 1e-3));
});

Deno.test("euler: linear field x_N = (1 + a/N)^N x0 and time-affine field closed form", async () => {
  const a = -1.7;
  const n = 16;
  const r = await eulerSample((x) => Promise.resolve(x.map((v) => a * v)), z0, { steps: n });
  const expected = Float64Array.from(z0, (v) => (1 + a / n) ** n * v);
  const err = relativeL2(r.x, expected);
  assert.ok(err < 1e-6, `linear field rel err ${err}`);

  // v = b t: x_N = x0 + b dt Σ t_i, Σ t_i = (1 - eps)(N - 1)/2 + N eps.
  const b = 0.8;
  const eps = 1e-3;
  const r2 = await eulerSample((x, t) => Promise.resolve(x.map(() => b * t)), z0, { steps: n });
  const sumT = (1 - eps) * (n - 1) / 2 + n * eps;
  const expected2 = Float64Array.from(z0, (v) => v + b * sumT / n);
  assert.ok(relativeL2(r2.x, expected2) < 1e-6);
});

Deno.test("euler sigmaVar: one step equals the original's corrected drift plus noise", async () => {
  const sigmaVar = 0.5;
  const noise = Float32Array.from([0.3, -1, 0.7, 0.1, 2]);
  const r = await eulerSample(constantField, z0, {
    steps: 1,
    sigmaVar,
    randn: () => noise,
  });
  const t = 1e-3;
  const sigmaT = (1 - t) * sigmaVar;
  const k = sigmaT ** 2 / (2 * (1 - t) ** 2);
  const expected = Float64Array.from(z0, (x, i) => {
    const drift = c[i] + k * (0.5 * t * (1 - t) * c[i] - 0.5 * (2 - t) * x);
    return x + drift + sigmaT * noise[i];
  });
  assert.ok(relativeL2(r.x, expected) < 1e-7);
  await assert.rejects(
    () => eulerSample(constantField, z0, { steps: 2, sigmaVar }),
    /sigmaVar=0.5/,
  );
  await assert.rejects(() => eulerSample(constantField, z0, { steps: 0 }), /steps=0/);
});

Deno.test("straightness: 0 for a constant field, closed form for v = b t", async () => {
  const s0 = await straightness(constantField, z0, { steps: 10 });
  assert.ok(s0.straightness < 1e-12, `${s0.straightness}`);
  // v = b t: displacement D = b Σ t_i / N; S = mean_i (D - b t_i)^2 = b^2 Var(t_i) (per element).
  const b = 2;
  const n = 10;
  const eps = 1e-3;
  const ts = Array.from({ length: n }, (_, i) => i / n * (1 - eps) + eps);
  const mean = ts.reduce((p, q) => p + q, 0) / n;
  const variance = ts.reduce((p, q) => p + (q - mean) ** 2, 0) / n;
  const s1 = await straightness((x, t) => Promise.resolve(x.map(() => b * t)), z0, { steps: n });
  assert.ok(Math.abs(s1.straightness - b * b * variance) < 1e-6, `${s1.straightness}`);
  assert.equal(s1.nfe, n);
});

Deno.test("rk45Sample: linear field reaches exp(a (1 - eps)) x0 within tolerance, reverse inverts", async () => {
  const a = -1.3;
  const model: VelocityModel = (x) => Promise.resolve(x.map((v) => a * v));
  const r = await rk45Sample(model, z0);
  const expected = Float64Array.from(z0, (v) => Math.exp(a * (1 - 1e-3)) * v);
  assert.ok(relativeL2(r.x, expected) < 1e-5);
  assert.equal(r.acceptedTimes[0], 1e-3);
  assert.equal(r.acceptedTimes.at(-1), 1);
  assert.equal(r.nfe, 2 + 6 * (r.acceptedTimes.length - 1)); // no rejections on this easy problem
  const back = await rk45Sample(model, r.x, { reverse: true });
  // Two solves with local tolerance 1e-5 each: the round trip is good to a few 1e-5.
  assert.ok(relativeL2(back.x, z0) < 1e-4, `round trip ${relativeL2(back.x, z0)}`);
  await assert.rejects(() => rk45Sample(model, z0, { tol: 0 }), /tol=0/);
});
