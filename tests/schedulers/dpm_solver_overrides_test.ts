/**
 * The generate job's `dpm_solver` settings laid over a teacher's scheduler_config.json: each
 * changes the trajectory as diffusers does. Checked against diffusers' published full_loop value,
 * the diffusers 0.26.3 golden trajectory (every step before the last unchanged) and an independent
 * float64 DPM-Solver++(2M) step to sigma_min (diffusers 0.12's last step) from torch's
 * alphas_cumprod.
 */
import assert from "node:assert/strict";
import { DPMSolverMultistepScheduler } from "../../core/schedulers/dpm_solver_multistep.ts";
import {
  DIFFUSERS_0_12_FIELDS,
  hasDPMSolverOverrides,
  NO_DPM_SOLVER_OVERRIDES,
  overrideDPMSolverConfig,
} from "../../core/schedulers/dpm_solver_config.ts";
import { relativeL2 } from "../../core/schedulers/vec.ts";
import { applyOverrides } from "../../core/config/overrides.ts";
import { getConfig as getGenerate, schema as generateSchema } from "../../configs/generate.ts";
import { readFixtureJson, readFixtureNpy } from "./_npy.ts";

const golden = readFixtureJson<{ scheduler_config_given: Record<string, unknown> }>(
  "dpmsolver_sd25/case.json",
);
const tables = readFixtureJson<Record<string, { alphas_cumprod: number[] }>>(
  "schedule_tables.json",
);

/** diffusers' dummy_sample_deter and the full_loop of its scheduler tests (as the known-values test). */
function fullLoop(config: Record<string, unknown>): number {
  const s = new DPMSolverMultistepScheduler(config);
  s.setTimesteps(10);
  let x: Float32Array = new Float32Array(4 * 3 * 8 * 8);
  for (let b = 0; b < 4; b++) {
    for (let c = 0; c < 3; c++) {
      for (let h = 0; h < 8; h++) {
        for (let w = 0; w < 8; w++) {
          x[((b * 3 + c) * 8 + h) * 8 + w] = (c * 256 + h * 32 + w * 4 + b) / 768;
        }
      }
    }
  }
  for (const t of s.timesteps) x = s.step(x.map((v) => v * t / (t + 1)), t, x);
  return x.reduce((a, v) => a + Math.abs(v), 0) / x.length;
}

Deno.test("dpm_solver overrides: diffusers' full_loop value (0.3301) from a 0.26-default file", () => {
  // A file with diffusers 0.26's defaults (lower_order_final true, final_sigmas_type "zero");
  // diffusers' test_full_loop_no_noise runs lower_order_final False, final_sigmas_type sigma_min.
  const file = { beta_schedule: "linear", solver_order: 2, lower_order_final: true };
  const over = overrideDPMSolverConfig(file, {
    ...NO_DPM_SOLVER_OVERRIDES,
    lower_order_final: false,
    final_sigmas_type: "sigma_min",
  });
  assert.deepEqual(file, { beta_schedule: "linear", solver_order: 2, lower_order_final: true });
  const got = fullLoop(over);
  assert.ok(Math.abs(got - 0.3301) < 1e-3, `mean|x| ${got}, diffusers asserts 0.3301`);
  const plain = fullLoop(file);
  assert.ok(Math.abs(plain - 0.3301) > 1e-3, `without the settings: ${plain}`);
});

/** The golden case's model: eps = eps_u + 7.5 (eps_c - eps_u). */
function guided(x: ArrayLike<number>, t: number, cond: Float64Array, uncond: Float64Array) {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const base = 0.3 * x[i] + 0.01 * t / 1000;
    out[i] = base + uncond[i] + 7.5 * (cond[i] - uncond[i]);
  }
  return out;
}

Deno.test("dpm_solver preset diffusers-0.12: same steps as 0.26 until the last, which ends at sigma_min", () => {
  const given = golden.scheduler_config_given;
  const config = overrideDPMSolverConfig(given, {
    ...NO_DPM_SOLVER_OVERRIDES,
    preset: "diffusers-0.12",
  });
  for (const [k, v] of Object.entries(DIFFUSERS_0_12_FIELDS)) assert.deepEqual(config[k], v, k);
  const s = new DPMSolverMultistepScheduler(config);
  s.setTimesteps(25);
  assert.deepEqual(s.timesteps, Array.from(readFixtureNpy("dpmsolver_sd25/timesteps.npy").data));
  const traj = readFixtureNpy("dpmsolver_sd25/trajectory.npy").data;
  const cond = readFixtureNpy("dpmsolver_sd25/field_cond.npy").data;
  const uncond = readFixtureNpy("dpmsolver_sd25/field_uncond.npy").data;
  const n = cond.length;
  const states: Float32Array[] = [
    Float32Array.from(readFixtureNpy("dpmsolver_sd25/x_init.npy").data),
  ];
  for (const [k, t] of s.timesteps.entries()) {
    const x = states[k];
    states.push(s.step(Float32Array.from(guided(x, t, cond, uncond)), t, x));
    const err = relativeL2(states[k + 1], traj.subarray((k + 1) * n, (k + 2) * n));
    if (k < 24) assert.ok(err <= 1e-5, `step ${k}: rel L2 ${err} from diffusers 0.26.3`);
    else assert.ok(err > 1e-3, `the last step must change: rel L2 ${err}`);
  }

  // Independent float64 DPM-Solver++(2M), midpoint, as diffusers 0.12 writes it: alpha_t =
  // sqrt(alphas_cumprod[t]), sigma_t = sqrt(1 - alphas_cumprod[t]); the last target is t = 0.
  const ac = tables.scaled_linear.alphas_cumprod;
  const alpha = (t: number) => Math.sqrt(ac[t]);
  const sigma = (t: number) => Math.sqrt(1 - ac[t]);
  const lambda = (t: number) => Math.log(alpha(t)) - Math.log(sigma(t));
  const [t1, t0] = [s.timesteps[23], s.timesteps[24]];
  const x1 = states[23], x0 = states[24];
  const e1 = guided(x1, t1, cond, uncond), e0 = guided(x0, t0, cond, uncond);
  const h = lambda(0) - lambda(t0);
  const r0 = (lambda(t0) - lambda(t1)) / h;
  const want = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    const m0 = (x0[j] - sigma(t0) * e0[j]) / alpha(t0);
    const m1 = (x1[j] - sigma(t1) * e1[j]) / alpha(t1);
    const d1 = (m0 - m1) / r0;
    const c = alpha(0) * (Math.exp(-h) - 1);
    want[j] = (sigma(0) / sigma(t0)) * x0[j] - c * m0 - 0.5 * c * d1;
  }
  const err = relativeL2(states[25], want);
  console.log(`diffusers-0.12 last step vs float64 reference: rel L2 ${err.toExponential(2)}`);
  assert.ok(err <= 1e-6, `last step: rel L2 ${err}`);
});

Deno.test("dpm_solver overrides: timestep_spacing and euler_at_final act as in diffusers", () => {
  const given = golden.scheduler_config_given; // steps_offset 1, linspace
  const times = (o: Record<string, unknown>, n: number) => {
    const s = new DPMSolverMultistepScheduler(
      overrideDPMSolverConfig(given, { ...NO_DPM_SOLVER_OVERRIDES, ...o }),
    );
    s.setTimesteps(n);
    return s.timesteps;
  };
  // numpy's values for diffusers' formulas (as in dpm_solver_schedule_test.ts).
  assert.deepEqual(times({ timestep_spacing: "trailing" }, 10), [
    999,
    899,
    799,
    699,
    599,
    499,
    399,
    299,
    199,
    99,
  ]);
  assert.deepEqual(times({ timestep_spacing: "leading" }, 10), [
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
  ]);
  assert.deepEqual(times({}, 10), [999, 899, 799, 699, 599, 500, 400, 300, 200, 100]);

  // euler_at_final: the last step is first order: x_t = (sigma_t / sigma_s) x - alpha_t (e^-h - 1) D0.
  const base = { ...given, final_sigmas_type: "sigma_min", lower_order_final: false };
  const run = (o: Record<string, unknown>) => {
    const s = new DPMSolverMultistepScheduler(
      overrideDPMSolverConfig(base, { ...NO_DPM_SOLVER_OVERRIDES, ...o }),
    );
    s.setTimesteps(6);
    let x: Float32Array = Float32Array.from({ length: 16 }, (_, j) => Math.sin(j + 1));
    let before = x;
    for (const t of s.timesteps) {
      before = x;
      x = s.step(x.map((v, j) => 0.3 * v + 0.05 * Math.cos(j) + t / 5000), t, x);
    }
    return { s, x, before };
  };
  const second = run({});
  const euler = run({ euler_at_final: true });
  assert.deepEqual(euler.before, second.before, "only the last step differs");
  assert.ok(relativeL2(euler.x, second.x) > 1e-4, "euler_at_final changes the last step");
  const ac = tables.scaled_linear.alphas_cumprod;
  const t = euler.s.timesteps[5];
  const lam = (a: number) => 0.5 * Math.log(a / (1 - a));
  const h = lam(ac[0]) - lam(ac[t]);
  const want = Float64Array.from(euler.before, (v, j) => {
    const eps = 0.3 * v + 0.05 * Math.cos(j) + t / 5000;
    const d0 = (v - Math.sqrt(1 - ac[t]) * eps) / Math.sqrt(ac[t]);
    return Math.sqrt((1 - ac[0]) / (1 - ac[t])) * v - Math.sqrt(ac[0]) * (Math.exp(-h) - 1) * d0;
  });
  assert.ok(
    relativeL2(euler.x, want) <= 1e-6,
    `first-order last step: ${relativeL2(euler.x, want)}`,
  );
});

Deno.test("dpm_solver settings: validated, named, and parsed from the command line", () => {
  assert.equal(hasDPMSolverOverrides(NO_DPM_SOLVER_OVERRIDES), false);
  assert.equal(hasDPMSolverOverrides({ ...NO_DPM_SOLVER_OVERRIDES, euler_at_final: false }), true);
  const o = NO_DPM_SOLVER_OVERRIDES;
  assert.throws(
    () => overrideDPMSolverConfig({}, { ...o, final_sigmas_type: "one" as "zero" }),
    /config\.dpm_solver\.final_sigmas_type = "one": expected null or one of "zero", "sigma_min"/,
  );
  assert.throws(
    () => overrideDPMSolverConfig({}, { ...o, lower_order_final: "yes" as unknown as boolean }),
    /config\.dpm_solver\.lower_order_final = "yes"/,
  );
  assert.throws(
    () => overrideDPMSolverConfig({}, { ...o, preset: "0.12" as "teacher" }),
    /config\.dpm_solver\.preset = "0\.12"/,
  );
  // A combination diffusers refuses names the field.
  assert.throws(
    () =>
      overrideDPMSolverConfig({ algorithm_type: "dpmsolver", final_sigmas_type: "sigma_min" }, {
        ...o,
        final_sigmas_type: "zero",
      }),
    /config\.dpm_solver over the teacher's scheduler config: .*final_sigmas_type="zero"/,
  );

  const c = applyOverrides(getGenerate(), [
    { key: "dpm_solver.preset", value: "diffusers-0.12" },
    { key: "dpm_solver.final_sigmas_type", value: "zero" },
    { key: "dpm_solver.euler_at_final", value: "", bare: true },
    { key: "dpm_solver.lower_order_final", value: "False" },
  ], generateSchema);
  assert.deepEqual(c.dpm_solver, {
    preset: "diffusers-0.12",
    final_sigmas_type: "zero",
    timestep_spacing: null,
    lower_order_final: false,
    euler_at_final: true,
  });
  applyOverrides(c, { "dpm_solver.final_sigmas_type": "None" }, generateSchema);
  assert.equal(c.dpm_solver.final_sigmas_type, null);
  assert.throws(
    () =>
      applyOverrides(getGenerate(), { "dpm_solver.timestep_spacing": "uniform" }, generateSchema),
    /config\.dpm_solver\.timestep_spacing.*"uniform" is not one of "linspace", "leading", "trailing"/,
  );
  assert.throws(
    () =>
      applyOverrides(getGenerate(), { "dpm_solver.lower_order_final": "maybe" }, generateSchema),
    /config\.dpm_solver\.lower_order_final.*boolean.*"maybe"/,
  );
});
