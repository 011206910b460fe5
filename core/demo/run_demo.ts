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

import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Gpu } from "../gpu/device.ts";
import { loadDiffusersPipeline } from "../models/diffusers_folder.ts";
import { loadScoreModel } from "../sample/score_model.ts";
import { sampleBatch } from "../sample/sampler.ts";
import { openPairDataset } from "../data/dataset.ts";
import { noGrad } from "../tensor/autograd.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { checkAll } from "./checker.ts";
import { allCaptions, CHANNELS, IMAGE_SIZE } from "./shapes.ts";
import { teacherPaths } from "./teacher_paths.ts";
import { type DemoColumn, writeReport } from "./report.ts";

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

function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

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

/** Runs the demo; returns the report.json contents. */
export async function runDemo(o: DemoOptions): Promise<Record<string, unknown>> {
  const log = o.log ?? ((l: string) => console.error(l));
  const out = resolve(o.out);
  const teacher = resolve(o.teacher);
  if (!(await exists(join(teacher, "unet", "diffusion_pytorch_model.safetensors")))) {
    throw new Error(`demo: no teacher at ${teacher} (make one with \`deno task teacher\`)`);
  }
  await Deno.mkdir(out, { recursive: true });
  const timings: Record<string, number> = {};
  const stage = async (k: number, name: string, f: () => Promise<void>) => {
    log(`\n[demo ${k}/6] ${name}`);
    const t0 = performance.now();
    await f();
    timings[name] = (performance.now() - t0) / 1000;
    log(`[demo ${k}/6] ${name}: ${timings[name].toFixed(1)} s`);
  };
  const size = `--config.data.image_size=${IMAGE_SIZE}`;
  const chans = `--config.data.num_channels=${CHANNELS}`;
  const trainRoot = join(out, "data", "train");
  const evalRoot = join(out, "data", "eval");
  const captionsFile = join(out, "captions.txt");
  const promptsFile = join(out, "prompts.txt");
  await Deno.writeTextFile(captionsFile, allCaptions().join("\n") + "\n");
  await Deno.writeTextFile(promptsFile, o.prompts.join("\n") + "\n");
  const nEval = o.prompts.length * o.samplesPerPrompt;
  // The train job's eval loss takes whole batches from the evaluation pairs.
  if (nEval < o.batchSize) {
    throw new Error(
      `demo: ${nEval} evaluation pairs (${o.prompts.length} prompts x ${o.samplesPerPrompt}) are ` +
        `fewer than one training batch of ${o.batchSize}; use a smaller --batch_size`,
    );
  }
  const generateArgs = (file: string, root: string, total: number, seed: number) => [
    `--config.model_dir=${teacher}`,
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
  await stage(1, "generate", async () => {
    await job("generate", generateArgs(captionsFile, trainRoot, o.pairs, o.seed));
    await job("generate", generateArgs(promptsFile, evalRoot, nEval, o.seed + 1));
  });
  await stage(2, "data2lmdb", async () => {
    for (const root of [trainRoot, evalRoot]) {
      await job("data2lmdb", ["--dpath", join(root, "content", "images"), "--overwrite"]);
    }
  });
  const workdir = join(out, "train");
  await stage(3, "train", async () => {
    await Deno.remove(workdir, { recursive: true }).catch(() => {});
    await job("train", [
      "--workdir",
      workdir,
      "--comment",
      "deno task demo: reflow from the tiny teacher",
      `--config.diffusers.ckpt_path=${teacher}`,
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
      `--config.data.train_root=${trainRoot}`,
      `--config.data.eval_root=${evalRoot}`,
      size,
      chans,
      `--config.optim.lr=${o.lr}`,
      `--config.optim.warmup=${Math.max(1, Math.floor(o.trainSteps / 10))}`,
      "--config.optim.lr_scheduler=constant_with_warmup",
      `--config.seed=${o.seed}`,
    ]);
  });
  const studentWeights = join(workdir, "checkpoints", `score_model_s${o.trainSteps}.safetensors`);
  if (o.saveStudent) await saveStudentFolder(teacher, studentWeights, resolve(o.saveStudent), log);
  await stage(4, "sample", async () => {
    for (const n of [1, 4]) {
      await job("sample", [
        "--eval_folder",
        join(out, `sample_euler${n}`),
        `--config.diffusers.ckpt_path=${teacher}`,
        `--config.sampling.ckpt_path=${studentWeights}`,
        `--config.sampling.sample_N=${n}`,
        `--config.sampling.num_samples=${nEval}`,
        `--config.sampling.batch_size=${nEval}`,
        "--config.sampling.randz0=fix",
        "--config.training.timestep_orientation=pretrained",
        `--config.data.eval_root=${evalRoot}`,
        size,
        chans,
      ]);
    }
  });

  let columns: DemoColumn[] = [];
  let captions: string[] = [];
  await stage(5, "evaluate", async () => {
    const r = await evaluateColumns(o, teacher, evalRoot, studentWeights, log);
    columns = r.columns;
    captions = r.captions;
  });

  let report: Record<string, unknown> = {};
  await stage(6, "report", async () => {
    const exp = await Deno.readTextFile(join(workdir, "exp.log")).catch(() => "");
    report = await writeReport(out, {
      title: "reflow demo: tiny teacher vs. reflowed student",
      captions,
      columns,
      loss: parseLossLog(exp, "training_loss"),
      evalLoss: parseLossLog(exp, "eval_loss"),
      settings: {
        teacher,
        shipped_student: columns.some((c) => c.name.startsWith("shipped"))
          ? o.shippedStudent
          : null,
        training_pairs: o.pairs,
        train_steps: o.trainSteps,
        batch_size: o.batchSize,
        lr: o.lr,
        infer_steps: o.inferSteps,
        guidance_scale: o.guidanceScale,
        eval_samples: nEval,
        seed: o.seed,
      },
      timings,
      size: IMAGE_SIZE,
    });
  });
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

/** Stage 5: every column on the evaluation pairs' noise, timed alike, scored by the checker. */
async function evaluateColumns(
  o: DemoOptions,
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
    const shape = batch.shape;
    const pipe = await loadDiffusersPipeline(gpu, teacherDir, { vae: false });
    pipe.unet.requiresGrad(false);
    const columns: DemoColumn[] = [];
    const split = (x: Float32Array) => {
      const n = shape[0] * shape[1] * shape[2];
      return Array.from({ length: captions.length }, (_, b) => x.slice(b * n, (b + 1) * n));
    };
    const column = (
      name: string,
      steps: number,
      note: string,
      x: Float32Array,
      seconds: number,
      straightness: number,
    ): DemoColumn => {
      const images = split(x);
      const { results, summary } = checkAll(images, captions, IMAGE_SIZE);
      log(
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
    };
    try {
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
      log(`  teacher here vs. generate's stored z1: max difference ${dev.toExponential(2)}`);
      const teacherS = mean(full.straightness);
      columns.push(
        column(
          "teacher",
          o.inferSteps,
          `DPM-Solver++, guidance ${o.guidanceScale}`,
          full.x,
          full.seconds,
          teacherS,
        ),
      );
      const one = await teacherPaths({ ...teacherOpts, steps: 1 }, captions, z0, shape);
      columns.push(column("teacher", 1, "the same solver, one step", one.x, one.seconds, teacherS));

      const students: [string, string, string][] = [["student (this run)", studentWeights, ""]];
      if (o.shippedStudent && await exists(o.shippedStudent)) {
        const where = relative(Deno.cwd(), o.shippedStudent) || o.shippedStudent;
        students.push(["shipped student (longer run)", o.shippedStudent, `; ${where}`]);
      }
      for (const [name, weights, where] of students) {
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
          for (const n of [1, 4]) {
            const r = await run(n);
            const how = `Euler, ${n} step${n > 1 ? "s" : ""}${where}`;
            columns.push(column(name, n, how, r.x, r.seconds, s));
          }
        } finally {
          context.dispose();
          score.unet.dispose();
        }
      }
    } finally {
      pipe.unet.dispose();
      pipe.textEncoder.dispose();
    }
    return { columns, captions };
  } finally {
    await data.close();
    gpu.destroy();
  }
}
