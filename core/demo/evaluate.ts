/**
 * The demo's evaluation stage: the teacher at its full step count and at one step, and each
 * student at one and four Euler steps, all from the evaluation pairs' noise and in this process
 * (so every column is timed the same way), their pictures scored by the checker and their paths'
 * straightness measured.
 *
 * @module
 */

import { relative } from "node:path";
import { Gpu } from "../gpu/device.ts";
import { type DiffusersPipeline, loadDiffusersPipeline } from "../models/diffusers_folder.ts";
import { loadScoreModel } from "../sample/score_model.ts";
import { sampleBatch } from "../flow/sample_batch.ts";
import { openPairDataset } from "../data/dataset.ts";
import { noGrad } from "../tensor/autograd.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { checkAll } from "./checker.ts";
import { IMAGE_SIZE } from "./shapes.ts";
import { teacherPaths } from "./teacher_paths.ts";
import type { DemoColumn } from "./report.ts";

/** What the evaluation needs of a demo run's settings. */
export interface EvaluateSettings {
  /** A longer-trained student's weights to show too (null: none). */
  shippedStudent: string | null;
  inferSteps: number;
  guidanceScale: number;
  seed: number;
}

/** The evaluation pairs and the models every column shares. */
interface EvalSet {
  gpu: Gpu;
  pipe: DiffusersPipeline;
  captions: string[];
  z0: Float32Array;
  z1: Float32Array;
  shape: [number, number, number];
  log: (l: string) => void;
}

const exists = (p: string) => Deno.stat(p).then(() => true, () => false);

function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

/** One report column: the samples `x` cut into pictures and scored by the checker. */
function scoreColumn(
  ev: EvalSet,
  name: string,
  steps: number,
  note: string,
  x: Float32Array,
  seconds: number,
  straightness: number,
): DemoColumn {
  const { captions, shape } = ev;
  const n = shape[0] * shape[1] * shape[2];
  const images = Array.from({ length: captions.length }, (_, b) => x.slice(b * n, (b + 1) * n));
  const { results, summary } = checkAll(images, captions, IMAGE_SIZE);
  ev.log(
    `  ${name} (${steps} steps): accuracy ${(100 * summary.accuracy).toFixed(0)}%, ` +
      `${(seconds / captions.length * 1000).toFixed(1)} ms/image`,
  );
  return {
    name,
    steps,
    note,
    accuracy: summary.accuracy,
    seconds_per_image: seconds / captions.length,
    straightness,
    images,
    checks: results,
  };
}

/**
 * The teacher's columns: its full step count (checked against the z1 `generate` stored) and one
 * step of the same solver, both shown with the full path's straightness.
 */
async function teacherColumns(o: EvaluateSettings, ev: EvalSet): Promise<DemoColumn[]> {
  const { gpu, pipe, captions, z0, z1, shape } = ev;
  const teacherOpts = {
    gpu,
    tokenizer: pipe.tokenizer,
    textEncoder: pipe.textEncoder,
    unet: pipe.unet,
    schedulerConfig: pipe.schedulerConfig,
    guidanceScale: o.guidanceScale,
  };
  const full = await teacherPaths({ ...teacherOpts, steps: o.inferSteps }, captions, z0, shape);
  let dev = 0;
  for (let i = 0; i < z1.length; i++) dev = Math.max(dev, Math.abs(full.x[i] - z1[i]));
  ev.log(`  teacher here vs. generate's stored z1: max difference ${dev.toExponential(2)}`);
  const teacherS = mean(full.straightness);
  const columns = [
    scoreColumn(
      ev,
      "teacher",
      o.inferSteps,
      `DPM-Solver++, guidance ${o.guidanceScale}`,
      full.x,
      full.seconds,
      teacherS,
    ),
  ];
  const one = await teacherPaths({ ...teacherOpts, steps: 1 }, captions, z0, shape);
  columns.push(
    scoreColumn(ev, "teacher", 1, "the same solver, one step", one.x, one.seconds, teacherS),
  );
  return columns;
}

/** The students to show: [column name, weights, note suffix]; the shipped one where present. */
async function studentList(
  o: EvaluateSettings,
  studentWeights: string,
): Promise<[string, string, string][]> {
  const students: [string, string, string][] = [["student (this run)", studentWeights, ""]];
  if (o.shippedStudent && await exists(o.shippedStudent)) {
    const where = relative(Deno.cwd(), o.shippedStudent) || o.shippedStudent;
    students.push(["shipped student (longer run)", o.shippedStudent, `; ${where}`]);
  }
  return students;
}

/**
 * A student's columns: one and four Euler steps, shown with the straightness of its 25-step
 * Euler path.
 */
async function studentColumns(
  o: EvaluateSettings,
  ev: EvalSet,
  teacherDir: string,
  [name, weights, where]: [string, string, string],
): Promise<DemoColumn[]> {
  const { gpu, pipe, captions, z0, shape } = ev;
  const score = await loadScoreModel(gpu, {
    modelDir: teacherDir,
    ckptPath: weights,
    loadPretrained: false,
    allowMissingKeys: false,
    seed: o.seed,
    orientation: "pretrained",
  });
  score.unet.requiresGrad(false);
  const tok = pipe.tokenizer.encode(captions);
  const context: Tensor = noGrad(() =>
    pipe.textEncoder.encode(tok.ids, tok.mask, captions.length, tok.length)
  );
  try {
    const run = (n: number) =>
      sampleBatch(gpu, score.unet, context, z0, shape, {
        sampler: "euler",
        sampleN: n,
        odeTol: 1e-5,
        sigmaVar: 0,
        noiseScale: 1,
        orientation: score.orientation,
        returnTrajectory: false,
      });
    const path = await run(25);
    const s = mean(path.straightness);
    const columns: DemoColumn[] = [];
    for (const n of [1, 4]) {
      const r = await run(n);
      const how = `Euler, ${n} step${n > 1 ? "s" : ""}${where}`;
      columns.push(scoreColumn(ev, name, n, how, r.x, r.seconds, s));
    }
    return columns;
  } finally {
    context.dispose();
    score.unet.dispose();
  }
}

/** Every column on the evaluation pairs' noise, timed alike, scored by the checker. */
export async function evaluateColumns(
  o: EvaluateSettings,
  teacherDir: string,
  evalRoot: string,
  studentWeights: string,
  log: (l: string) => void,
): Promise<{ columns: DemoColumn[]; captions: string[] }> {
  const gpu = await Gpu.open();
  const data = await openPairDataset(evalRoot);
  try {
    const batch = await data.getBatch(Array.from({ length: data.length }, (_, i) => i));
    const { captions, z0, z1 } = batch;
    const pipe = await loadDiffusersPipeline(gpu, teacherDir, { vae: false });
    pipe.unet.requiresGrad(false);
    const ev: EvalSet = { gpu, pipe, captions, z0, z1, shape: batch.shape, log };
    try {
      const columns = await teacherColumns(o, ev);
      for (const student of await studentList(o, studentWeights)) {
        columns.push(...await studentColumns(o, ev, teacherDir, student));
      }
      return { columns, captions };
    } finally {
      pipe.unet.dispose();
      pipe.textEncoder.dispose();
    }
  } finally {
    await data.close();
    gpu.destroy();
  }
}
