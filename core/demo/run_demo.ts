/**
 * `deno task demo`: the whole reflow pipeline on the shipped tiny teacher, end to end, on any
 * machine (lavapipe included), and a report of what reflow buys.
 *
 * Stages (each a real job, run as its own process with its own progress display):
 * 1. `generate` — the teacher (25 DPM-Solver++ steps, classifier-free guidance) draws (noise,
 *    picture, caption) pairs for the shapes captions (training data) and for the report's prompts
 *    (evaluation data, fixed noise per row);
 * 2. `data2lmdb` — both folders packed into LMDB;
 * 3. `train` — reflow from the teacher's weights (a student UNet predicting z1 - z0);
 * 4. `sample` — the student, one and four Euler steps, from the evaluation pairs' noise;
 * 5. evaluation — the teacher at 25 and 1 steps and each student at 1 and 4 Euler steps, on the
 *    same noise, in this process (so every column is timed the same way), pictures scored by the
 *    checker, path straightness measured;
 * 6. the report: `<out>/index.html` and `<out>/report.json`.
 *
 * A student trained longer by the same commands (`models/tiny_student`, see its README) is shown
 * beside the demo's own when present.
 *
 * @module
 */

import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { allCaptions, CHANNELS, IMAGE_SIZE } from "./shapes.ts";
import { type DemoColumn, writeReport } from "./report.ts";
import { evaluateColumns } from "./evaluate.ts";

/** The report's prompts (one row each). */
export const DEMO_PROMPTS: readonly string[] = [
  "a red circle",
  "a green square",
  "a blue triangle",
  "a yellow circle on the left",
  "a magenta square on the right",
  "a cyan triangle on the left",
  "a red square on the right",
  "a green triangle",
  "a blue circle on the right",
  "a yellow triangle on the right",
  "a magenta circle",
  "a cyan square on the left",
];

/** Settings of a demo run. */
export interface DemoOptions {
  /** Output folder (data, training run, samples, report). */
  out: string;
  /** The teacher folder (diffusers layout). */
  teacher: string;
  /** A longer-trained student's weights to show too (null: none). */
  shippedStudent: string | null;
  /**
   * Where to save this run's student as a diffusers UNet folder (config.json + EMA weights, which
   * carry their timestep orientation), e.g. to ship it as `models/tiny_student/unet`; null: not saved.
   */
  saveStudent?: string | null;
  /**
   * Keep the pairs an earlier (interrupted) run of the same settings generated into `out` and
   * generate only the missing ones (generate's resume); default: generate everything anew.
   */
  resume?: boolean;
  /** Training pairs the teacher generates. */
  pairs: number;
  /** Reflow training steps. */
  trainSteps: number;
  /**
   * The student's starting weights: "teacher" (the teacher's UNet, pretrained timestep
   * orientation) or "fresh" (a new UNet, the original's orientation). On the tiny teacher only a
   * fresh student learns: on the same 800 pairs, 150 steps of batch 16 at lr 1e-3 take a fresh
   * UNet's loss from 1.25 to 0.31, while the teacher-initialised one drops from 3.3 to about 1.05
   * (predicting little more than the mean velocity) within 30 steps and stays there.
   */
  studentInit: "teacher" | "fresh";
  batchSize: number;
  lr: number;
  /** Report prompts and how many samples each gets. */
  prompts: readonly string[];
  samplesPerPrompt: number;
  inferSteps: number;
  guidanceScale: number;
  seed: number;
  /** Log lines (stage banners). */
  log?: (line: string) => void;
}

/** The full demo and the CI-sized one. */
export function demoOptions(quick: boolean, out = "out/demo"): DemoOptions {
  const shipped = fileURLToPath(new URL("../../models/tiny_student/unet", import.meta.url));
  return {
    out,
    teacher: fileURLToPath(new URL("../../models/tiny_teacher", import.meta.url)),
    shippedStudent: shipped,
    pairs: quick ? 8 : 320,
    trainSteps: quick ? 4 : 400,
    studentInit: "fresh",
    batchSize: quick ? 4 : 16,
    lr: 1e-3,
    prompts: quick ? DEMO_PROMPTS.slice(0, 4) : DEMO_PROMPTS,
    samplesPerPrompt: quick ? 1 : 4,
    inferSteps: 25,
    guidanceScale: 4,
    seed: 2333,
  };
}

const DENO_JSON = fileURLToPath(new URL("../../deno.json", import.meta.url));
const SCRIPTS = fileURLToPath(new URL("../../scripts/", import.meta.url));

/** Runs `scripts/<name>.ts` with `args` in a child process, its output shown as it comes. */
async function job(name: string, args: string[]): Promise<void> {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", DENO_JSON, join(SCRIPTS, `${name}.ts`), ...args],
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  });
  const status = await cmd.output();
  if (!status.success) throw new Error(`the ${name} job failed (exit code ${status.code})`);
}

const exists = (p: string) => Deno.stat(p).then(() => true, () => false);

/** (step, value) pairs of `<what> <value>` lines in a train job's exp.log. */
export function parseLossLog(text: string, what: string): [number, number][] {
  const re = new RegExp(`step (\\d+) \\| ${what} ([-+0-9.eE]+|NaN|Infinity)`);
  const out: [number, number][] = [];
  for (const line of text.split("\n")) {
    const m = re.exec(line);
    if (m) out.push([Number(m[1]), Number(m[2])]);
  }
  return out;
}

/** The folders and files of a demo run. */
interface DemoPaths {
  out: string;
  teacher: string;
  trainRoot: string;
  evalRoot: string;
  captionsFile: string;
  promptsFile: string;
  /** The train job's workdir. */
  workdir: string;
  /** The trained student's EMA weights. */
  studentWeights: string;
  /** Evaluation pairs: prompts x samples per prompt. */
  nEval: number;
}

/**
 * Checks the teacher and the settings, creates the output folder and writes the caption and
 * prompt lists the generate stage reads.
 */
async function prepareDemo(o: DemoOptions): Promise<DemoPaths> {
  const out = resolve(o.out);
  const teacher = resolve(o.teacher);
  if (!(await exists(join(teacher, "unet", "diffusion_pytorch_model.safetensors")))) {
    throw new Error(`demo: no teacher at ${teacher} (make one with \`deno task teacher\`)`);
  }
  await Deno.mkdir(out, { recursive: true });
  const workdir = join(out, "train");
  const p: DemoPaths = {
    out,
    teacher,
    trainRoot: join(out, "data", "train"),
    evalRoot: join(out, "data", "eval"),
    captionsFile: join(out, "captions.txt"),
    promptsFile: join(out, "prompts.txt"),
    workdir,
    studentWeights: join(workdir, "checkpoints", `score_model_s${o.trainSteps}.safetensors`),
    nEval: o.prompts.length * o.samplesPerPrompt,
  };
  await Deno.writeTextFile(p.captionsFile, allCaptions().join("\n") + "\n");
  await Deno.writeTextFile(p.promptsFile, o.prompts.join("\n") + "\n");
  // The train job's eval loss takes whole batches from the evaluation pairs.
  if (p.nEval < o.batchSize) {
    throw new Error(
      `demo: ${p.nEval} evaluation pairs (${o.prompts.length} prompts x ${o.samplesPerPrompt}) ` +
        `are fewer than one training batch of ${o.batchSize}; use a smaller --batch_size`,
    );
  }
  return p;
}

/** Runs numbered stages with banners, recording each one's wall time (seconds) by name. */
function stageRunner(log: (l: string) => void) {
  const timings: Record<string, number> = {};
  const stage = async (k: number, name: string, f: () => Promise<void>) => {
    log(`\n[demo ${k}/6] ${name}`);
    const t0 = performance.now();
    await f();
    timings[name] = (performance.now() - t0) / 1000;
    log(`[demo ${k}/6] ${name}: ${timings[name].toFixed(1)} s`);
  };
  return { stage, timings };
}

/** Stage 1: the teacher's training pairs and the evaluation pairs (fixed noise per row). */
async function generateStage(o: DemoOptions, p: DemoPaths): Promise<void> {
  const generateArgs = (file: string, root: string, total: number, seed: number) => [
    `--config.model_dir=${p.teacher}`,
    `--config.captions_file=${file}`,
    `--config.save_dir=${root}`,
    `--config.total_nums=${total}`,
    `--config.seed=${seed}`,
    `--config.infer_steps=${o.inferSteps}`,
    `--config.guidance_scale=${o.guidanceScale}`,
    `--config.bs=32`,
    `--config.dtype=fp32`,
    `--config.overwrite=${!o.resume}`,
  ];
  await job("generate", generateArgs(p.captionsFile, p.trainRoot, o.pairs, o.seed));
  await job("generate", generateArgs(p.promptsFile, p.evalRoot, p.nEval, o.seed + 1));
}

/** Stage 2: both pair folders packed into LMDB. */
async function data2lmdbStage(p: DemoPaths): Promise<void> {
  for (const root of [p.trainRoot, p.evalRoot]) {
    await job("data2lmdb", ["--dpath", join(root, "content", "images"), "--overwrite"]);
  }
}

/** Stage 3: reflow from the teacher's weights, in a fresh workdir. */
async function trainStage(o: DemoOptions, p: DemoPaths): Promise<void> {
  await Deno.remove(p.workdir, { recursive: true }).catch(() => {});
  await job("train", [
    "--workdir",
    p.workdir,
    "--comment",
    "deno task demo: reflow from the tiny teacher",
    `--config.diffusers.ckpt_path=${p.teacher}`,
    `--config.diffusers.load_score_model=${o.studentInit === "teacher"}`,
    "--config.diffusers.gradient_checkpointing=false",
    "--config.training.objective=reflow",
    `--config.training.timestep_orientation=${
      o.studentInit === "teacher" ? "pretrained" : "original"
    }`,
    "--config.training.randz0=fix",
    `--config.training.num_steps=${o.trainSteps}`,
    `--config.training.batch_size=${o.batchSize}`,
    `--config.training.log_freq=${Math.max(1, Math.floor(o.trainSteps / 40))}`,
    `--config.training.eval_freq=${Math.max(1, Math.floor(o.trainSteps / 10))}`,
    `--config.training.snapshot_freq=${o.trainSteps}`,
    `--config.training.sampling_freq=${o.trainSteps}`,
    "--config.sampling.sample_N=1",
    `--config.data.train_root=${p.trainRoot}`,
    `--config.data.eval_root=${p.evalRoot}`,
    `--config.data.image_size=${IMAGE_SIZE}`,
    `--config.data.num_channels=${CHANNELS}`,
    `--config.optim.lr=${o.lr}`,
    `--config.optim.warmup=${Math.max(1, Math.floor(o.trainSteps / 10))}`,
    "--config.optim.lr_scheduler=constant_with_warmup",
    `--config.seed=${o.seed}`,
  ]);
}

/** Stage 4: the student's one- and four-step Euler samples from the evaluation pairs' noise. */
async function sampleStage(p: DemoPaths): Promise<void> {
  for (const n of [1, 4]) {
    await job("sample", [
      "--eval_folder",
      join(p.out, `sample_euler${n}`),
      `--config.diffusers.ckpt_path=${p.teacher}`,
      `--config.sampling.ckpt_path=${p.studentWeights}`,
      `--config.sampling.sample_N=${n}`,
      `--config.sampling.num_samples=${p.nEval}`,
      `--config.sampling.batch_size=${p.nEval}`,
      "--config.sampling.randz0=fix",
      "--config.training.timestep_orientation=pretrained",
      `--config.data.eval_root=${p.evalRoot}`,
      `--config.data.image_size=${IMAGE_SIZE}`,
      `--config.data.num_channels=${CHANNELS}`,
    ]);
  }
}

/** Stage 6: `<out>/index.html` and `<out>/report.json`; returns the report.json contents. */
async function reportStage(
  o: DemoOptions,
  p: DemoPaths,
  evaluated: { columns: DemoColumn[]; captions: string[] },
  timings: Record<string, number>,
): Promise<Record<string, unknown>> {
  const { columns, captions } = evaluated;
  const exp = await Deno.readTextFile(join(p.workdir, "exp.log")).catch(() => "");
  return await writeReport(p.out, {
    title: "reflow demo: tiny teacher vs. reflowed student",
    captions,
    columns,
    loss: parseLossLog(exp, "training_loss"),
    evalLoss: parseLossLog(exp, "eval_loss"),
    settings: {
      teacher: p.teacher,
      shipped_student: columns.some((c) => c.name.startsWith("shipped")) ? o.shippedStudent : null,
      training_pairs: o.pairs,
      train_steps: o.trainSteps,
      batch_size: o.batchSize,
      lr: o.lr,
      infer_steps: o.inferSteps,
      guidance_scale: o.guidanceScale,
      eval_samples: p.nEval,
      seed: o.seed,
    },
    timings,
    size: IMAGE_SIZE,
  });
}

/** The closing lines: total time, where the report is, one line per column. */
function logSummary(
  report: Record<string, unknown>,
  timings: Record<string, number>,
  out: string,
  log: (l: string) => void,
): void {
  const total = Object.values(timings).reduce((a, b) => a + b, 0);
  log(`\ndemo: done in ${total.toFixed(0)} s; report ${join(out, "index.html")}`);
  for (const c of report.columns as Record<string, number | string>[]) {
    log(
      `  ${String(c.name).padEnd(28)} steps ${String(c.steps).padStart(2)}  accuracy ${
        (100 * Number(c.accuracy)).toFixed(0).padStart(3)
      }%  ${(Number(c.seconds_per_image) * 1000).toFixed(1)} ms/image  straightness ${
        Number(c.straightness).toExponential(2)
      }`,
    );
  }
}

/** Runs the demo; returns the report.json contents. */
export async function runDemo(o: DemoOptions): Promise<Record<string, unknown>> {
  const log = o.log ?? ((l: string) => console.error(l));
  const p = await prepareDemo(o);
  const { stage, timings } = stageRunner(log);
  await stage(1, "generate", () => generateStage(o, p));
  await stage(2, "data2lmdb", () => data2lmdbStage(p));
  await stage(3, "train", () => trainStage(o, p));
  if (o.saveStudent) {
    await saveStudentFolder(p.teacher, p.studentWeights, resolve(o.saveStudent), log);
  }
  await stage(4, "sample", () => sampleStage(p));
  let evaluated: { columns: DemoColumn[]; captions: string[] } = { columns: [], captions: [] };
  await stage(5, "evaluate", async () => {
    evaluated = await evaluateColumns(o, p.teacher, p.evalRoot, p.studentWeights, log);
  });
  let report: Record<string, unknown> = {};
  await stage(6, "report", async () => {
    report = await reportStage(o, p, evaluated, timings);
  });
  logSummary(report, timings, p.out, log);
  return report;
}

/** Writes the student as a diffusers UNet folder: the teacher's UNet config and the EMA weights. */
async function saveStudentFolder(
  teacher: string,
  weights: string,
  dir: string,
  log: (l: string) => void,
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  // Temporary names, then renames: an interrupted save never leaves a half-written folder.
  const put = async (src: string, name: string) => {
    await Deno.copyFile(src, join(dir, `${name}.tmp`));
    await Deno.rename(join(dir, `${name}.tmp`), join(dir, name));
  };
  await put(join(teacher, "unet", "config.json"), "config.json");
  await put(weights, "diffusion_pytorch_model.safetensors");
  log(`demo: student saved to ${dir}`);
}
