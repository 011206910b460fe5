/**
 * The teacher's sampling paths, for the demo's report: DPM-Solver++ with classifier-free guidance,
 * exactly as `generate` runs it (pipeline/teacher.ts), but keeping every intermediate state so
 * that the path's straightness can be measured.
 *
 * Straightness of a diffusion path: a variance-preserving state x = alpha x1 + sigma eps, divided
 * by (alpha + sigma), is the rectified-flow interpolation y = t x1 + (1 - t) eps at flow time
 * t = alpha / (alpha + sigma). So the teacher's states map to a flow path (t_k, y_k), and its
 * straightness is the Liu et al. measure on that path: the Δt-weighted mean over steps of
 * mean_j (d - Δy_k / Δt_k)² with d the chord velocity (y_K - y_0) / (t_K - t_0) — zero for a
 * straight path at constant speed, and the same quantity path_stats.ts reports for a student's
 * Euler path.
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { keep, tidy } from "../tensor/scope.ts";
import { noGrad } from "../tensor/autograd.ts";
import * as ops from "../ops.ts";
import { DPMSolverMultistepScheduler } from "../schedulers/dpm_solver_multistep.ts";
import { sigmaToAlphaSigmaT } from "../schedulers/noise_schedule.ts";
import type { NoiseModel } from "../generate/teacher.ts";
import { encodeCaptions, type PromptEncoder } from "../flow/captions.ts";
import type { TextTokenizer } from "../models/tokenizers/types.ts";

/** What {@link teacherPaths} needs. */
export interface TeacherPathOptions {
  gpu: Gpu;
  tokenizer: TextTokenizer;
  textEncoder: PromptEncoder;
  unet: NoiseModel;
  schedulerConfig: Record<string, unknown>;
  steps: number;
  guidanceScale: number;
  negativePrompt?: string;
}

/** Final samples, per-sample straightness and the wall time of the solver loop. */
export interface TeacherPathResult {
  x: Float32Array;
  straightness: number[];
  seconds: number;
  /** UNet evaluations per sample (a guided step counts as one, as diffusers counts steps). */
  steps: number;
}

/** Straightness of flow paths (states sample-major, times shared by the batch). */
export function flowPathStraightness(
  states: readonly Float32Array[],
  times: readonly number[],
  batch: number,
): number[] {
  const K = states.length - 1;
  if (K < 1 || times.length !== states.length) {
    throw new Error(`straightness: need two or more states with their times`);
  }
  const n = states[0].length / batch;
  const span = times[K] - times[0];
  const out: number[] = [];
  for (let b = 0; b < batch; b++) {
    let acc = 0;
    for (let k = 0; k < K; k++) {
      const dt = times[k + 1] - times[k];
      if (!(dt > 0)) continue;
      let s = 0;
      for (let j = b * n; j < (b + 1) * n; j++) {
        const chord = (states[K][j] - states[0][j]) / span;
        const v = (states[k + 1][j] - states[k][j]) / dt;
        s += (chord - v) ** 2;
      }
      acc += dt * s / n;
    }
    out.push(acc / span);
  }
  return out;
}

/** Runs the teacher on `captions` from `z0` (B·C·H·W), keeping the path. */
export async function teacherPaths(
  o: TeacherPathOptions,
  captions: readonly string[],
  z0: Float32Array,
  shape: readonly [number, number, number],
): Promise<TeacherPathResult> {
  const [C, H, W] = shape;
  const n = C * H * W;
  const B = captions.length;
  const g = o.guidanceScale;
  const cfg = g > 1;
  const rows = cfg ? 2 * B : B;
  const scheduler = DPMSolverMultistepScheduler.fromConfig(o.schedulerConfig);
  scheduler.setTimesteps(o.steps);
  const ctx = keep(tidy(() => {
    const cond = encodeCaptions(o.tokenizer, o.textEncoder, captions);
    if (!cfg) return cond;
    const u = encodeCaptions(
      o.tokenizer,
      o.textEncoder,
      captions.map(() => o.negativePrompt ?? ""),
    );
    return noGrad(() => ops.concat([u, cond], 0));
  }));
  const flow = (x: Float32Array, k: number): { y: Float32Array; t: number } => {
    const { alphaT, sigmaT } = sigmaToAlphaSigmaT(scheduler.sigmas[k]);
    const s = alphaT + sigmaT;
    return { y: Float32Array.from(x, (v) => v / s), t: alphaT / s };
  };
  let x: Float32Array = Float32Array.from(z0, (v) => v * scheduler.initNoiseSigma);
  const first = flow(x, 0);
  const states = [first.y];
  const times = [first.t];
  const t0 = performance.now();
  try {
    let k = 0;
    for (const t of scheduler.timesteps) {
      let input: Float32Array = x;
      if (cfg) {
        input = new Float32Array(2 * B * n);
        input.set(x, 0);
        input.set(x, B * n);
      }
      input = scheduler.scaleModelInput(input, t);
      const out = noGrad(() =>
        tidy(() =>
          o.unet.forward(
            Tensor.from(o.gpu, input, [rows, C, H, W]),
            Tensor.from(o.gpu, new Float32Array(rows).fill(t), [rows]),
            ctx,
          )
        )
      );
      let pred: Float32Array;
      try {
        pred = await out.toF32();
      } finally {
        out.dispose();
      }
      let eps = pred;
      if (cfg) {
        eps = new Float32Array(B * n);
        for (let i = 0; i < B * n; i++) eps[i] = pred[i] + g * (pred[B * n + i] - pred[i]);
      }
      x = scheduler.step(eps, t, x, { batchSize: B });
      k++;
      const f = flow(x, k);
      states.push(f.y);
      times.push(f.t);
    }
  } finally {
    ctx.dispose();
  }
  const seconds = (performance.now() - t0) / 1000;
  return {
    x,
    straightness: flowPathStraightness(states, times, B),
    seconds,
    steps: scheduler.timesteps.length,
  };
}
