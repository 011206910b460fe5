/**
 * Configuration of {@link DPMSolverMultistepScheduler}: diffusers 0.26.x defaults, validation, and
 * the fully resolved config (to be recorded with generated data).
 *
 * @module
 */

import type { BetaSchedule } from "./noise_schedule.ts";

/** Every field of diffusers' DPMSolverMultistepScheduler config (0.26.x), resolved. */
export interface DPMSolverConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: BetaSchedule;
  trained_betas: number[] | null;
  solver_order: 1 | 2 | 3;
  prediction_type: "epsilon" | "v_prediction" | "sample";
  thresholding: boolean;
  dynamic_thresholding_ratio: number;
  sample_max_value: number;
  algorithm_type: "dpmsolver++" | "dpmsolver";
  solver_type: "midpoint" | "heun";
  lower_order_final: boolean;
  euler_at_final: boolean;
  use_karras_sigmas: boolean;
  use_lu_lambdas: boolean;
  final_sigmas_type: "zero" | "sigma_min";
  lambda_min_clipped: number;
  variance_type: null;
  timestep_spacing: "linspace" | "leading" | "trailing";
  steps_offset: number;
}

/** diffusers 0.26.x defaults, in the order of its constructor. */
export const DPM_SOLVER_DEFAULTS: Readonly<DPMSolverConfig> = Object.freeze({
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  solver_order: 2,
  prediction_type: "epsilon",
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  sample_max_value: 1.0,
  algorithm_type: "dpmsolver++",
  solver_type: "midpoint",
  lower_order_final: true,
  euler_at_final: false,
  use_karras_sigmas: false,
  use_lu_lambdas: false,
  final_sigmas_type: "zero",
  lambda_min_clipped: -Infinity,
  variance_type: null,
  timestep_spacing: "linspace",
  steps_offset: 0,
});

/** A resolved config plus the keys diffusers does not use, passed through unchanged. */
export type ResolvedDPMSolverConfig = DPMSolverConfig & Record<string, unknown>;

function fail(field: string, value: unknown, why: string): never {
  throw new Error(`DPMSolverMultistepScheduler: ${field}=${JSON.stringify(value)} ${why}`);
}

function oneOf<T extends string>(field: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== "string" || !allowed.includes(value as T)) {
    fail(field, value, `is not supported (expected one of ${allowed.join(", ")})`);
  }
  return value as T;
}

function bool(field: string, value: unknown): boolean {
  if (typeof value !== "boolean") fail(field, value, "must be a boolean");
  return value;
}

/** Accepts numbers and the strings Python's json writes for non-finite floats. */
function num(field: string, value: unknown): number {
  if (value === "-Infinity" || value === "-inf") return -Infinity;
  if (value === "Infinity" || value === "inf") return Infinity;
  if (typeof value !== "number" || Number.isNaN(value)) fail(field, value, "must be a number");
  return value;
}

function positiveInt(field: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value <= 0) {
    fail(field, value, "must be a positive integer");
  }
  return value;
}

/**
 * Resolves a `scheduler_config.json` object: fills diffusers' defaults, applies diffusers' silent
 * remaps (algorithm_type "deis" → "dpmsolver++"; solver_type "logrho"/"bh1"/"bh2" → "midpoint"),
 * validates every value, and keeps unknown keys as they are (diffusers ignores them).
 * Unsupported values throw an Error naming the field and the value.
 */
export function resolveDPMSolverConfig(given: Record<string, unknown>): ResolvedDPMSolverConfig {
  const g = { ...given };
  const pick = (k: keyof DPMSolverConfig) =>
    g[k] === undefined ? DPM_SOLVER_DEFAULTS[k] : (g[k] as unknown);

  let algorithm = pick("algorithm_type");
  if (algorithm === "deis") algorithm = "dpmsolver++";
  if (algorithm === "sde-dpmsolver" || algorithm === "sde-dpmsolver++") {
    fail("algorithm_type", algorithm, "is not supported by this implementation (SDE variants)");
  }
  let solverType = pick("solver_type");
  if (solverType === "logrho" || solverType === "bh1" || solverType === "bh2") {
    solverType = "midpoint";
  }

  const trained = pick("trained_betas");
  let trainedBetas: number[] | null = null;
  if (trained !== null) {
    if (!Array.isArray(trained) || trained.some((b) => typeof b !== "number")) {
      fail("trained_betas", trained, "must be null or an array of numbers");
    }
    trainedBetas = [...trained as number[]];
  }

  const order = pick("solver_order");
  if (order !== 1 && order !== 2 && order !== 3) fail("solver_order", order, "must be 1, 2 or 3");

  const variance = pick("variance_type");
  if (variance !== null) {
    fail("variance_type", variance, "is not supported (only null: no learned variance channels)");
  }
  const stepsOffset = pick("steps_offset");
  if (typeof stepsOffset !== "number" || !Number.isInteger(stepsOffset) || stepsOffset < 0) {
    fail("steps_offset", stepsOffset, "must be a non-negative integer");
  }
  if (g.rescale_betas_zero_snr === true) {
    fail("rescale_betas_zero_snr", true, "is not supported (not a diffusers 0.26 option)");
  }

  const resolved: DPMSolverConfig = {
    num_train_timesteps: positiveInt("num_train_timesteps", pick("num_train_timesteps")),
    beta_start: num("beta_start", pick("beta_start")),
    beta_end: num("beta_end", pick("beta_end")),
    beta_schedule: oneOf("beta_schedule", pick("beta_schedule"), [
      "linear",
      "scaled_linear",
      "squaredcos_cap_v2",
    ]),
    trained_betas: trainedBetas,
    solver_order: order,
    prediction_type: oneOf("prediction_type", pick("prediction_type"), [
      "epsilon",
      "v_prediction",
      "sample",
    ]),
    thresholding: bool("thresholding", pick("thresholding")),
    dynamic_thresholding_ratio: num(
      "dynamic_thresholding_ratio",
      pick("dynamic_thresholding_ratio"),
    ),
    sample_max_value: num("sample_max_value", pick("sample_max_value")),
    algorithm_type: oneOf("algorithm_type", algorithm, ["dpmsolver++", "dpmsolver"]),
    solver_type: oneOf("solver_type", solverType, ["midpoint", "heun"]),
    lower_order_final: bool("lower_order_final", pick("lower_order_final")),
    euler_at_final: bool("euler_at_final", pick("euler_at_final")),
    use_karras_sigmas: bool("use_karras_sigmas", pick("use_karras_sigmas")),
    use_lu_lambdas: bool("use_lu_lambdas", pick("use_lu_lambdas")),
    final_sigmas_type: oneOf("final_sigmas_type", pick("final_sigmas_type"), [
      "zero",
      "sigma_min",
    ]),
    lambda_min_clipped: num("lambda_min_clipped", pick("lambda_min_clipped")),
    variance_type: null,
    timestep_spacing: oneOf("timestep_spacing", pick("timestep_spacing"), [
      "linspace",
      "leading",
      "trailing",
    ]),
    steps_offset: stepsOffset,
  };

  if (trainedBetas !== null && trainedBetas.length !== resolved.num_train_timesteps) {
    fail(
      "trained_betas",
      `[${trainedBetas.length} values]`,
      `must have num_train_timesteps=${resolved.num_train_timesteps} entries`,
    );
  }
  // A final sigma of zero makes the noise-prediction ("dpmsolver") update 0 * inf; diffusers refuses.
  if (resolved.algorithm_type === "dpmsolver" && resolved.final_sigmas_type === "zero") {
    fail(
      "final_sigmas_type",
      "zero",
      'is not supported with algorithm_type "dpmsolver"; use "sigma_min"',
    );
  }
  if (resolved.thresholding) {
    if (!(resolved.dynamic_thresholding_ratio >= 0 && resolved.dynamic_thresholding_ratio <= 1)) {
      fail("dynamic_thresholding_ratio", resolved.dynamic_thresholding_ratio, "must be in [0, 1]");
    }
  }

  const extras: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(g)) if (!(k in DPM_SOLVER_DEFAULTS)) extras[k] = v;
  return { ...resolved, ...extras };
}

/**
 * DPM-Solver settings a job config lays over a teacher's `scheduler_config.json` (the generate
 * job's `dpm_solver` group). null keeps the file's value.
 */
export interface DPMSolverOverrides {
  /**
   * "teacher": the file as diffusers 0.26 reads it. "diffusers-0.12": the behaviour of the
   * original tool's diffusers version, which predates these fields: the last step ends at
   * sigma_min rather than 0 (with a second-order update from 15 steps on), timesteps are
   * linspace-spaced, and there is no euler_at_final, Karras or Lu sigmas or lambda clipping.
   */
  preset: "teacher" | "diffusers-0.12";
  final_sigmas_type: "zero" | "sigma_min" | null;
  timestep_spacing: "linspace" | "leading" | "trailing" | null;
  lower_order_final: boolean | null;
  euler_at_final: boolean | null;
}

/** No change to the teacher's scheduler config. */
export const NO_DPM_SOLVER_OVERRIDES: Readonly<DPMSolverOverrides> = Object.freeze({
  preset: "teacher",
  final_sigmas_type: null,
  timestep_spacing: null,
  lower_order_final: null,
  euler_at_final: null,
});

/** The fields "diffusers-0.12" sets: diffusers 0.12's DPMSolverMultistepScheduler in 0.26 terms. */
export const DIFFUSERS_0_12_FIELDS: Readonly<Record<string, unknown>> = Object.freeze({
  final_sigmas_type: "sigma_min",
  timestep_spacing: "linspace",
  euler_at_final: false,
  use_karras_sigmas: false,
  use_lu_lambdas: false,
  lambda_min_clipped: -Infinity,
});

/** Whether `o` changes anything. */
export function hasDPMSolverOverrides(o: Partial<DPMSolverOverrides> | undefined): boolean {
  if (!o) return false;
  return (o.preset !== undefined && o.preset !== "teacher") ||
    (["final_sigmas_type", "timestep_spacing", "lower_order_final", "euler_at_final"] as const)
      .some((k) => o[k] !== null && o[k] !== undefined);
}

/**
 * Lays `o` over a scheduler config: the preset's fields first, then every non-null key. Each
 * value is checked, naming `where.<key>`; the result is resolved once more so that a combination
 * diffusers refuses (e.g. final_sigmas_type "zero" with algorithm_type "dpmsolver") is an error
 * naming the overridden field.
 */
export function overrideDPMSolverConfig(
  given: Record<string, unknown>,
  o: Partial<DPMSolverOverrides> | undefined,
  where = "config.dpm_solver",
): Record<string, unknown> {
  if (!o) return { ...given };
  const bad = (key: string, value: unknown, expected: string): never => {
    throw new Error(`${where}.${key} = ${JSON.stringify(value)}: expected ${expected}`);
  };
  const choice = (key: keyof DPMSolverOverrides, allowed: readonly string[]) => {
    const v = o[key];
    if (v !== null && v !== undefined && !allowed.includes(v as string)) {
      bad(key, v, `null or one of ${allowed.map((a) => `"${a}"`).join(", ")}`);
    }
  };
  const flag = (key: keyof DPMSolverOverrides) => {
    const v = o[key];
    if (v !== null && v !== undefined && typeof v !== "boolean") bad(key, v, "null, true or false");
  };
  if (o.preset !== undefined && o.preset !== "teacher" && o.preset !== "diffusers-0.12") {
    bad("preset", o.preset, `"teacher" or "diffusers-0.12"`);
  }
  choice("final_sigmas_type", ["zero", "sigma_min"]);
  choice("timestep_spacing", ["linspace", "leading", "trailing"]);
  flag("lower_order_final");
  flag("euler_at_final");
  const out: Record<string, unknown> = { ...given };
  if (o.preset === "diffusers-0.12") Object.assign(out, DIFFUSERS_0_12_FIELDS);
  for (
    const k of [
      "final_sigmas_type",
      "timestep_spacing",
      "lower_order_final",
      "euler_at_final",
    ] as const
  ) {
    if (o[k] !== null && o[k] !== undefined) out[k] = o[k];
  }
  try {
    resolveDPMSolverConfig(out);
  } catch (e) {
    throw new Error(`${where} over the teacher's scheduler config: ${(e as Error).message}`);
  }
  return out;
}
