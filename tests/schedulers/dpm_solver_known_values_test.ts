/**
 * DPMSolverMultistepScheduler against the numbers asserted by diffusers' own unit tests
 * (tests/schedulers/test_scheduler_dpm_multi.py, `full_loop`): a deterministic [4,3,8,8] sample,
 * the dummy model sample·t/(t+1), 10 steps, mean |x| compared with 1e-3 tolerance. These configs are
 * checked only against those published values (diffusers is not installed here).
 */
import assert from "node:assert/strict";
import { DPMSolverMultistepScheduler } from "../../core/schedulers/dpm_solver_multistep.ts";

const baseConfig = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  solver_order: 2,
  prediction_type: "epsilon",
  thresholding: false,
  sample_max_value: 1.0,
  algorithm_type: "dpmsolver++",
  solver_type: "midpoint",
  lower_order_final: false,
  euler_at_final: false,
  lambda_min_clipped: -Infinity,
  variance_type: null,
  final_sigmas_type: "sigma_min",
};

/** diffusers' dummy_sample_deter: arange(768) laid out as (C,H,W,B) / 768, permuted to (B,C,H,W). */
function dummySampleDeter(): Float32Array {
  const out = new Float32Array(4 * 3 * 8 * 8);
  for (let b = 0; b < 4; b++) {
    for (let c = 0; c < 3; c++) {
      for (let h = 0; h < 8; h++) {
        for (let w = 0; w < 8; w++) {
          out[((b * 3 + c) * 8 + h) * 8 + w] = (c * 256 + h * 32 + w * 4 + b) / 768;
        }
      }
    }
  }
  return out;
}

function fullLoop(overrides: Record<string, unknown>): Float32Array {
  const s = new DPMSolverMultistepScheduler({ ...baseConfig, ...overrides });
  s.setTimesteps(10);
  let x = dummySampleDeter();
  for (const t of s.timesteps) {
    const residual = x.map((v) => v * t / (t + 1));
    x = s.step(residual, t, x, { batchSize: 4 });
    assert.ok(x.every(Number.isFinite), `non-finite sample at t=${t}`);
  }
  return x;
}

const meanAbs = (x: Float32Array) => x.reduce((a, v) => a + Math.abs(v), 0) / x.length;

const cases: [string, Record<string, unknown>, number][] = [
  ["no noise (defaults)", {}, 0.3301],
  ["v_prediction", { prediction_type: "v_prediction" }, 0.2251],
  ["karras + v_prediction", { prediction_type: "v_prediction", use_karras_sigmas: true }, 0.2096],
  ["lu lambdas + v_prediction", { prediction_type: "v_prediction", use_lu_lambdas: true }, 0.1554],
  [
    "thresholding",
    { thresholding: true, dynamic_thresholding_ratio: 0.87, sample_max_value: 0.5 },
    1.1364,
  ],
];

for (const [name, overrides, expected] of cases) {
  Deno.test(`dpm diffusers full_loop: ${name} → mean|x| ${expected}`, () => {
    const got = meanAbs(fullLoop(overrides));
    assert.ok(Math.abs(got - expected) < 1e-3, `mean|x| ${got}, diffusers asserts ${expected}`);
  });
}

Deno.test("dpm: every order / solver / algorithm / prediction combination stays finite", () => {
  for (const algorithm_type of ["dpmsolver", "dpmsolver++"]) {
    for (const solver_type of ["midpoint", "heun"]) {
      for (const solver_order of [1, 2, 3]) {
        for (const prediction_type of ["epsilon", "sample", "v_prediction"]) {
          fullLoop({ algorithm_type, solver_type, solver_order, prediction_type });
        }
      }
    }
  }
});
