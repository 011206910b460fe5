/** Schedule tables, timestep spacings and config handling of DPMSolverMultistepScheduler. */
import assert from "node:assert/strict";
import {
  DPMSolverMultistepScheduler,
  quantileLinear,
} from "../../core/schedulers/dpm_solver_multistep.ts";
import {
  alphasCumprod,
  type BetaSchedule,
  makeBetas,
  sigmasFromAlphasCumprod,
} from "../../core/schedulers/noise_schedule.ts";
import { DPM_SOLVER_DEFAULTS } from "../../core/schedulers/dpm_solver_config.ts";
import { readFixtureJson } from "./_npy.ts";

type Table = { betas: number[]; alphas_cumprod: number[]; sigmas: number[] };
const tables = readFixtureJson<
  Record<string, Table> & { quantile: { values: number[]; q: number; quantile: number }[] }
>(
  "schedule_tables.json",
);

const schedules: [string, BetaSchedule, number, number, number][] = [
  ["linear", "linear", 1000, 0.0001, 0.02],
  ["scaled_linear", "scaled_linear", 1000, 0.00085, 0.012],
  ["squaredcos_cap_v2", "squaredcos_cap_v2", 1000, 0, 0],
  ["linear_37", "linear", 37, 0.001, 0.3],
];
for (const [key, schedule, n, b0, b1] of schedules) {
  Deno.test(`schedule tables bit-identical to torch 1.13 float32: ${key}`, () => {
    const betas = makeBetas(schedule, n, b0, b1, null);
    const ac = alphasCumprod(betas);
    assert.deepEqual(Array.from(betas), tables[key].betas);
    assert.deepEqual(Array.from(ac), tables[key].alphas_cumprod);
    assert.deepEqual(Array.from(sigmasFromAlphasCumprod(ac)), tables[key].sigmas);
  });
}

Deno.test("quantileLinear matches torch.quantile", () => {
  for (const c of tables.quantile) {
    const got = quantileLinear(Float64Array.from(c.values), c.q);
    assert.ok(
      Math.abs(got - c.quantile) <= 1e-15 * Math.abs(c.quantile),
      `${got} vs ${c.quantile}`,
    );
  }
});

// Expected values printed by numpy 1.24 for diffusers' spacing formulas
// (np.linspace(...).round(), np.arange(1000, 0, -1000/n).round() - 1, ...).
const spacingCases: [Record<string, unknown>, number, number[]][] = [
  [{ timestep_spacing: "linspace" }, 10, [999, 899, 799, 699, 599, 500, 400, 300, 200, 100]],
  [{ timestep_spacing: "trailing" }, 3, [999, 666, 332]],
  [{ timestep_spacing: "trailing" }, 9, [999, 888, 777, 666, 555, 443, 332, 221, 110]],
  [{ timestep_spacing: "trailing" }, 10, [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]],
  [{ timestep_spacing: "leading", steps_offset: 1 }, 10, [
    901,
    811,
    721,
    631,
    541,
    451,
    361,
    271,
    181,
    91,
  ]],
];
for (const [cfg, n, expected] of spacingCases) {
  Deno.test(`timesteps: ${JSON.stringify(cfg)} n=${n}`, () => {
    const s = new DPMSolverMultistepScheduler(cfg);
    s.setTimesteps(n);
    assert.deepEqual(s.timesteps, expected);
    assert.equal(s.sigmas.length, n + 1);
    assert.equal(s.sigmas[n], 0, "final sigma zero by default");
  });
}

Deno.test("timesteps: karras spacing is descending from 999 and its sigmas follow rho=7", () => {
  const s = new DPMSolverMultistepScheduler({
    use_karras_sigmas: true,
    final_sigmas_type: "sigma_min",
  });
  s.setTimesteps(12);
  assert.equal(s.timesteps[0], 999);
  for (let i = 1; i < 12; i++) assert.ok(s.timesteps[i] <= s.timesteps[i - 1]);
  const r = (i: number) => s.sigmas[i] ** (1 / 7);
  for (let i = 1; i < 11; i++) {
    assert.ok(Math.abs(r(i + 1) - 2 * r(i) + r(i - 1)) < 1e-5, "sigma^(1/7) is linear in i");
  }
  assert.equal(
    s.sigmas[12],
    Math.fround(Math.sqrt(Math.fround(Math.fround(1 - s.alphasCumprod[0]) / s.alphasCumprod[0]))),
  );
});

Deno.test("lambda_min_clipped shortens the cosine schedule", () => {
  const s = new DPMSolverMultistepScheduler({
    beta_schedule: "squaredcos_cap_v2",
    lambda_min_clipped: -5.1,
  });
  s.setTimesteps(10);
  assert.ok(s.timesteps[0] < 999, `first timestep ${s.timesteps[0]}`);
});

Deno.test("resolvedConfig fills every diffusers default and keeps extra keys", () => {
  const s = new DPMSolverMultistepScheduler({ clip_sample: false, _class_name: "PNDMScheduler" });
  const r = s.resolvedConfig();
  for (const [k, v] of Object.entries(DPM_SOLVER_DEFAULTS)) assert.deepEqual(r[k], v, k);
  assert.equal(r.clip_sample, false);
  assert.equal(r._class_name, "PNDMScheduler");
  assert.equal(
    new DPMSolverMultistepScheduler({ solver_type: "bh2" }).config.solver_type,
    "midpoint",
  );
  assert.equal(
    new DPMSolverMultistepScheduler({ algorithm_type: "deis" }).config.algorithm_type,
    "dpmsolver++",
  );
});

Deno.test("bad settings throw errors naming the field and value", () => {
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ beta_schedule: "cosine" }, /beta_schedule="cosine"/],
    [{ solver_order: 4 }, /solver_order=4/],
    [{ prediction_type: "x0" }, /prediction_type="x0"/],
    [{ algorithm_type: "sde-dpmsolver++" }, /algorithm_type="sde-dpmsolver\+\+"/],
    [{ solver_type: "euler" }, /solver_type="euler"/],
    [{ timestep_spacing: "uniform" }, /timestep_spacing="uniform"/],
    [{ final_sigmas_type: "one" }, /final_sigmas_type="one"/],
    [{ algorithm_type: "dpmsolver" }, /final_sigmas_type="zero"/],
    [{ variance_type: "learned_range" }, /variance_type="learned_range"/],
    [{ num_train_timesteps: 0 }, /num_train_timesteps=0/],
    [{ trained_betas: [0.1, 0.2] }, /trained_betas/],
    [{ thresholding: "yes" }, /thresholding="yes"/],
  ];
  for (const [cfg, re] of bad) assert.throws(() => new DPMSolverMultistepScheduler(cfg), re);
  const s = new DPMSolverMultistepScheduler();
  assert.throws(() => s.step(new Float32Array(1), 999, new Float32Array(1)), /setTimesteps/);
  assert.throws(() => s.setTimesteps(0), /numInferenceSteps=0/);
});

Deno.test("step: a zero final sigma lands exactly on the data prediction; no step past the end", () => {
  // With a constant data prediction (prediction_type sample) the final first-order step to
  // sigma = 0 returns that prediction exactly, whatever the order.
  for (const order of [1, 2, 3]) {
    const s = new DPMSolverMultistepScheduler({ solver_order: order, prediction_type: "sample" });
    s.setTimesteps(8);
    let x: Float32Array = Float32Array.from([3, -2, 0.5]);
    const x0 = Float32Array.from([0.25, 0.5, -1]);
    for (const t of s.timesteps) x = s.step(x0, t, x);
    assert.deepEqual(Array.from(x), Array.from(x0));
    assert.throws(() => s.step(x0, 0, x), /all 8 steps are done/);
  }
});
