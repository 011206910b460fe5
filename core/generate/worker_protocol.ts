/**
 * What the generate job's parent and its worker processes say to each other: the job goes to the
 * worker as one JSON line on stdin; the worker answers with `@@reflow {...}` lines on stdout.
 *
 * @module
 */

import type { DPMSolverOverrides } from "../schedulers/dpm_solver_config.ts";

/** The job of one worker. */
export interface WorkerJob {
  /** Worker number (0-based) and the device id it stands for (the config's `devices[k]`). */
  worker: number;
  device: number | string;
  modelDir: string;
  imagesDir: string;
  /** Index of the first pair of this worker's group; `captions[k]` is pair start + k. */
  start: number;
  captions: string[];
  /** Run seed (config seed + part). */
  seed: number;
  bs: number;
  inferSteps: number;
  guidanceScale: number;
  negativePrompt: string;
  /** "fp16": the UNet computes with f16 storage where the adapter has shader-f16. */
  dtype: "fp16" | "fp32";
  latentShape: [number, number, number];
  /** The config's DPM-Solver settings over the teacher's scheduler_config.json. */
  dpmSolver?: DPMSolverOverrides;
}

/** Messages a worker sends to its parent. */
export type WorkerMessage =
  | { type: "scan"; present: number; missing: number }
  | { type: "adapter"; text: string }
  | { type: "done"; count: number; indices?: number[] }
  | { type: "error"; message: string };

/** Prefix of protocol lines on a worker's stdout. */
export const MESSAGE_PREFIX = "@@reflow ";
