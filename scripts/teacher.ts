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
import { join } from "node:path";
import { intArg, numberArg, parseCommand } from "../core/config/cli.ts";
import { Gpu } from "../core/gpu/device.ts";
import { runTraining } from "../core/train/trainer.ts";
import { loadTrainModels, openTrainData } from "../core/train/setup.ts";
import {
  teacherTrainConfig,
  writeShapesPairs,
  writeTeacherFolder,
} from "../core/demo/tiny_teacher.ts";

type TeacherOption = "steps" | "batch_size" | "lr" | "images" | "seed" | "out" | "workdir" | "data";

const exists = (p: string) => Deno.stat(p).then(() => true, () => false);

async function main(): Promise<void> {
  const values = parseCommand<Record<TeacherOption, string> & { resume?: string; fresh: boolean }>(
    Deno.args,
    {
      name: "teacher",
      usage: "deno task teacher [options]",
      description: "Make the tiny teacher of `deno task demo`: the shapes data set, the teacher " +
        "folder, then diffusion training of its UNet.",
      options: [
        {
          flags: "--steps <n>",
          description: "train up to this step (counted from the first run, also when resuming)",
          default: "1500",
        },
        { flags: "--batch_size <b>", description: "training batch size", default: "16" },
        { flags: "--lr <lr>", description: "learning rate", default: "1e-3" },
        { flags: "--images <n>", description: "shapes in the training set", default: "20000" },
        {
          flags: "--seed <s>",
          description: "seed of the data set and the weights",
          default: "2333",
        },
        { flags: "--out <dir>", description: "the teacher folder", default: "models/tiny_teacher" },
        {
          flags: "--workdir <dir>",
          description: "the training log folder",
          default: "logs/tiny_teacher",
        },
        {
          flags: "--data <dir>",
          description: "the shapes data set (train/, eval/)",
          default: "out/shapes",
        },
        {
          flags: "--fresh",
          description: "write a fresh teacher folder even if one exists",
          default: false,
        },
        {
          flags: "--resume <checkpoint_dir>",
          description: "continue training from this checkpoint",
        },
      ],
    },
  );
  const positive = { min: 1 };
  const steps = intArg(values.steps, "--steps", positive);
  const batchSize = intArg(values.batch_size, "--batch_size", positive);
  const images = intArg(values.images, "--images", positive);
  const seed = intArg(values.seed, "--seed", positive);
  const lr = numberArg(values.lr, "--lr", { min: 0, minExclusive: true });
  const out = values.out;
  const trainRoot = join(values.data, "train");
  const evalRoot = join(values.data, "eval");

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
        workdir: values.workdir,
        comment: "tiny teacher (diffusion objective on the shapes data set)",
        models,
        trainData,
        evalData,
      });
      const weights = join(values.workdir, "checkpoints", `score_model_s${r.step}.safetensors`);
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
