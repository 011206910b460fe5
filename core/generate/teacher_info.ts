/**
 * Opening a teacher model folder. A diffusers pipeline folder (`model_index.json`, `unet/`,
 * `text_encoder/`, `tokenizer/`, `scheduler/`) is a diffusion teacher (DPM-Solver + guidance).
 * The same layout with a `reflow.json` beside `model_index.json` is a flow teacher: `unet/` then
 * holds a reflow student (velocity model) and `reflow.json` says how to sample it:
 *
 * ```json
 * { "timestep_orientation": "original", "sampler": "euler", "sample_N": 1, "ode_tol": 1e-5 }
 * ```
 *
 * This module reads configs only (no GPU, no weights): the parent process of the generate job
 * uses it to plan a run.
 *
 * @module
 */

import { join } from "node:path";
import { DPMSolverMultistepScheduler } from "../schedulers/dpm_solver_multistep.ts";
import {
  type DPMSolverOverrides,
  hasDPMSolverOverrides,
  overrideDPMSolverConfig,
} from "../schedulers/dpm_solver_config.ts";
import type { TimestepOrientation } from "../flow/time.ts";
import { readJson } from "../models/diffusers_folder.ts";

/** The file that makes a model folder a flow teacher. */
export const FLOW_TEACHER_FILE = "reflow.json";

/** How a flow teacher is sampled (the contents of `reflow.json`). */
export interface FlowTeacherSpec {
  timestep_orientation: TimestepOrientation;
  sampler: "euler" | "rk45";
  sample_N: number;
  ode_tol: number;
}

/** What the parent process learns of a model folder without a GPU. */
export interface TeacherInfo {
  kind: "diffusion" | "flow";
  /** Latent [C, H, W] (unet/config.json in_channels, sample_size). */
  latentShape: [number, number, number];
  /** The scheduler_config.json contents (diffusion teachers). */
  schedulerConfig: Record<string, unknown> | null;
  /** reflow.json (flow teachers). */
  flow: FlowTeacherSpec | null;
}

/** Settings of the diffusion teacher that come from the job config. */
export interface TeacherSettings {
  inferSteps: number;
  guidanceScale?: number;
  negativePrompt?: string;
  /** UNet storage: "fp16" where the adapter allows (the original runs the teacher in fp16). */
  dtype?: "fp16" | "fp32";
  /** DPM-Solver settings laid over the teacher's scheduler_config.json (the `dpm_solver` group). */
  dpmSolver?: Partial<DPMSolverOverrides>;
}

/**
 * The scheduler config a diffusion teacher samples with: its `scheduler_config.json` with the
 * job's DPM-Solver settings laid over it. A flow teacher has no DPM-Solver, so settings there are
 * an error rather than silently ignored.
 */
export function teacherSchedulerConfig(
  modelDir: string,
  info: TeacherInfo,
  dpmSolver: Partial<DPMSolverOverrides> | undefined,
): Record<string, unknown> | null {
  if (info.kind === "flow") {
    if (hasDPMSolverOverrides(dpmSolver)) {
      throw new Error(
        `config.dpm_solver: ${modelDir} is a flow teacher (${FLOW_TEACHER_FILE}), sampled without ` +
          `DPM-Solver; leave config.dpm_solver at its defaults`,
      );
    }
    return null;
  }
  try {
    return overrideDPMSolverConfig(info.schedulerConfig!, dpmSolver, "config.dpm_solver");
  } catch (e) {
    throw new Error(
      `${join(modelDir, "scheduler", "scheduler_config.json")}: ${(e as Error).message}`,
    );
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw new Error(`cannot read ${path}: ${(e as Error).message}`);
  }
}

function parseFlowSpec(raw: Record<string, unknown>, path: string): FlowTeacherSpec {
  const spec = {
    timestep_orientation: raw.timestep_orientation ?? "original",
    sampler: raw.sampler ?? "euler",
    sample_N: raw.sample_N ?? 1,
    ode_tol: raw.ode_tol ?? 1e-5,
  };
  if (!["original", "pretrained"].includes(spec.timestep_orientation as string)) {
    throw new Error(
      `${path}: timestep_orientation must be "original" or "pretrained", got ${
        JSON.stringify(spec.timestep_orientation)
      }`,
    );
  }
  if (!["euler", "rk45"].includes(spec.sampler as string)) {
    throw new Error(
      `${path}: sampler must be "euler" or "rk45", got ${JSON.stringify(spec.sampler)}`,
    );
  }
  if (!Number.isInteger(spec.sample_N) || (spec.sample_N as number) <= 0) {
    throw new Error(
      `${path}: sample_N must be a positive integer, got ${JSON.stringify(spec.sample_N)}`,
    );
  }
  if (typeof spec.ode_tol !== "number" || !(spec.ode_tol > 0)) {
    throw new Error(`${path}: ode_tol must be a number > 0, got ${JSON.stringify(spec.ode_tol)}`);
  }
  return spec as FlowTeacherSpec;
}

/**
 * Reads what a model folder is (diffusion or flow teacher), its latent shape and its sampler
 * settings, checking the folder is readable; errors name the file at fault.
 */
export async function inspectTeacher(modelDir: string): Promise<TeacherInfo> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(modelDir);
  } catch (e) {
    throw new Error(`model_dir ${modelDir}: cannot read the model folder: ${(e as Error).message}`);
  }
  if (!stat.isDirectory) throw new Error(`model_dir ${modelDir}: not a folder`);
  await readJson(join(modelDir, "model_index.json"));
  const unetPath = join(modelDir, "unet", "config.json");
  const unet = await readJson(unetPath);
  const size = unet.sample_size;
  const ch = unet.in_channels ?? 4;
  if (typeof size !== "number" || !Number.isInteger(size) || size <= 0) {
    throw new Error(
      `${unetPath}: sample_size must be a positive integer, got ${JSON.stringify(size)}`,
    );
  }
  if (typeof ch !== "number" || !Number.isInteger(ch) || ch <= 0) {
    throw new Error(
      `${unetPath}: in_channels must be a positive integer, got ${JSON.stringify(ch)}`,
    );
  }
  const latentShape: [number, number, number] = [ch, size, size];
  const flowPath = join(modelDir, FLOW_TEACHER_FILE);
  if (await isFile(flowPath)) {
    return {
      kind: "flow",
      latentShape,
      schedulerConfig: null,
      flow: parseFlowSpec(await readJson(flowPath), flowPath),
    };
  }
  const schedPath = join(modelDir, "scheduler", "scheduler_config.json");
  const schedulerConfig = await readJson(schedPath);
  try {
    DPMSolverMultistepScheduler.fromConfig(schedulerConfig);
  } catch (e) {
    throw new Error(`${schedPath}: ${(e as Error).message}`);
  }
  return { kind: "diffusion", latentShape, schedulerConfig, flow: null };
}

/** What index.json records about the teacher (the same as the loaded teacher's describe()). */
export function describeTeacher(
  info: TeacherInfo,
  settings: TeacherSettings,
  modelDir = "model_dir",
): Record<string, unknown> {
  if (info.kind === "flow") {
    const f = info.flow!;
    return {
      teacher: "flow",
      scheduler: f.sampler,
      sample_N: f.sampler === "euler" ? f.sample_N : null,
      ode_tol: f.sampler === "rk45" ? f.ode_tol : null,
      eps: 1e-3,
      timestep_orientation: f.timestep_orientation,
    };
  }
  return {
    teacher: "diffusion",
    scheduler: "DPMSolverMultistepScheduler",
    scheduler_config: DPMSolverMultistepScheduler.fromConfig(
      teacherSchedulerConfig(modelDir, info, settings.dpmSolver)!,
    ).resolvedConfig(),
    infer_steps: settings.inferSteps,
    guidance_scale: settings.guidanceScale ?? 7.5,
    negative_prompt: settings.negativePrompt ?? "",
  };
}
