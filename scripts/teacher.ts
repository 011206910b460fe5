/**
 * `deno task teacher [--steps 1500] [--batch_size 16] [--lr 1e-3] [--images 20000] [--seed 2333]
 *  [--out models/tiny_teacher] [--workdir logs/tiny_teacher] [--data out/shapes] [--fresh]
 *  [--resume logs/tiny_teacher/checkpoints/checkpoint_s{step}]`
 *
 * Makes the tiny teacher of `deno task demo` from scratch: the seeded shapes data set
 * (core/demo/shapes.ts) as a pair folder, the teacher folder in the diffusers layout (tokenizer
 * built from the captions' words, frozen random CLIP text encoder, UNet config, SD's noise
 * schedule; core/demo/tiny_teacher.ts), then the train job's diffusion objective (epsilon
 * prediction with caption dropout) on it, and finally the EMA weights copied into
 * `<out>/unet/diffusion_pytorch_model.safetensors`.
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { Gpu } from "../core/gpu/device.ts";
import { runTraining } from "../core/train/trainer.ts";
import { loadTrainModels, openTrainData } from "../core/train/setup.ts";
import {
  teacherTrainConfig,
  writeShapesPairs,
  writeTeacherFolder,
} from "../core/demo/tiny_teacher.ts";

const exists = (p: string) => Deno.stat(p).then(() => true, () => false);

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      steps: { type: "string", default: "1500" },
      batch_size: { type: "string", default: "16" },
      lr: { type: "string", default: "1e-3" },
      images: { type: "string", default: "20000" },
      seed: { type: "string", default: "2333" },
      out: { type: "string", default: "models/tiny_teacher" },
      workdir: { type: "string", default: "logs/tiny_teacher" },
      data: { type: "string", default: "out/shapes" },
      resume: { type: "string" },
      fresh: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(
      "usage: deno task teacher [--steps N] [--batch_size B] [--lr LR] [--images N] [--seed S]\n" +
        "  [--out DIR] [--workdir DIR] [--data DIR] [--fresh] [--resume CHECKPOINT_DIR]",
    );
    return;
  }
  const int = (v: string, name: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be an integer >= 1`);
    return n;
  };
  const steps = int(values.steps!, "steps");
  const batchSize = int(values.batch_size!, "batch_size");
  const images = int(values.images!, "images");
  const seed = int(values.seed!, "seed");
  const lr = Number(values.lr);
  if (!(lr > 0)) throw new Error("--lr must be a number > 0");
  const out = values.out!;
  const trainRoot = join(values.data!, "train");
  const evalRoot = join(values.data!, "eval");

  const gpu = await Gpu.open();
  try {
    if (values.fresh || !(await exists(join(out, "model_index.json")))) {
      console.error(`teacher: writing a fresh teacher folder to ${out}`);
      await writeTeacherFolder(gpu, out, seed);
    }
    if (!(await exists(join(trainRoot, "content", "captions.txt")))) {
      console.error(`teacher: writing ${images} shapes to ${trainRoot}`);
      await writeShapesPairs(trainRoot, seed, images);
    }
    if (!(await exists(join(evalRoot, "content", "captions.txt")))) {
      await writeShapesPairs(evalRoot, seed + 1, 64);
    }
    const config = teacherTrainConfig({
      modelDir: out,
      trainRoot,
      evalRoot,
      steps,
      batchSize,
      lr,
      seed,
      ckptPath: values.resume ?? null,
    });
    const models = await loadTrainModels(gpu, config);
    const { trainData, evalData } = await openTrainData(config);
    try {
      const r = await runTraining({
        gpu,
        config,
        workdir: values.workdir!,
        comment: "tiny teacher (diffusion objective on the shapes data set)",
        models,
        trainData,
        evalData,
      });
      const weights = join(values.workdir!, "checkpoints", `score_model_s${r.step}.safetensors`);
      await Deno.copyFile(weights, join(out, "unet", "diffusion_pytorch_model.safetensors"));
      console.error(`teacher: ${r.step} steps; EMA weights ${weights} -> ${out}/unet/`);
    } finally {
      await trainData.close();
      await evalData.close();
    }
  } finally {
    gpu.destroy();
  }
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`teacher: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
