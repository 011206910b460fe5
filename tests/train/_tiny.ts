/**
 * Shared pieces of the training tests: a tiny UNet (two levels, 8x8 latents), a tiny CLIP text
 * encoder with a fixed-id tokenizer, a tiny pair data set on disk, and a fast config.
 */
import { join } from "node:path";
import type { Gpu } from "../../core/gpu/device.ts";
import { UNet2DConditionModel } from "../../core/models/unet2d_condition.ts";
import { CLIPTextModel } from "../../core/models/text_encoders.ts";
import { writeCaptions } from "../../core/data/captions.ts";
import { pairPaths, writePairNpy } from "../../core/data/pair_store.ts";
import { f32ToF16Bits } from "../../core/io/half.ts";
import { getConfig, type TrainConfig } from "../../configs/train.ts";
import { openPairDataset } from "../../core/data/dataset.ts";
import type { TrainerInit, TrainModels } from "../../core/train/trainer.ts";
import { rand } from "../helpers/gpu.ts";
import { openWeights } from "../../core/io/weights.ts";

// The tiny model is the benchmarks' one (core/bench/tiny_setup.ts), so tests and benchmarks agree.
export {
  charTokenizer as fakeTokenizer,
  TINY_BENCH_CLIP as TINY_CLIP,
  TINY_BENCH_UNET as TINY_UNET,
} from "../../core/bench/tiny_setup.ts";
import {
  charTokenizer as fakeTokenizer,
  TINY_BENCH_CLIP as TINY_CLIP,
  TINY_BENCH_UNET as TINY_UNET,
} from "../../core/bench/tiny_setup.ts";

export function tinyModels(gpu: Gpu, seed = 7): TrainModels {
  return {
    unet: UNet2DConditionModel.create(gpu, TINY_UNET, seed),
    textEncoder: CLIPTextModel.create(gpu, TINY_CLIP, 3),
    tokenizer: fakeTokenizer,
    vae: null,
  };
}

/**
 * `n` pairs of [4, 8, 8]: z0 random, z1 = a smooth pattern that depends on the caption's index
 * mod 2 plus a little of z0, so that a model can learn the velocity.
 */
export async function makeTinyData(root: string, n: number, seed = 1): Promise<void> {
  const paths = pairPaths(root);
  await Deno.mkdir(paths.images, { recursive: true });
  await Deno.writeTextFile(paths.index, JSON.stringify({ total_nums: n, test: true }));
  await writeCaptions(
    paths.captions,
    Array.from({ length: n }, (_, i) => (i % 2 ? "a red bus" : "a cat")),
  );
  const size = 4 * 8 * 8;
  for (let i = 0; i < n; i++) {
    const z0 = Float32Array.from(rand(size, seed * 1000 + i)).map((x) => x * 1.7);
    const z1 = z0.map((x, j) => 0.2 * x + Math.sin(j / 7 + (i % 2) * 2));
    await writePairNpy(paths.images, i, [4, 8, 8], f32ToF16Bits(z0), f32ToF16Bits(z1));
  }
}

/** A fast config for the tiny model; the caller sets the data roots' files first. */
export function tinyConfig(dataRoot: string): TrainConfig {
  const c = getConfig();
  c.diffusers.gradient_checkpointing = false;
  c.training = {
    ...c.training,
    batch_size: 2,
    num_steps: 6,
    log_freq: 2,
    eval_freq: 3,
    snapshot_freq: 1000,
    sampling_freq: 1000,
  };
  c.sampling.sample_N = 2;
  c.optim = { ...c.optim, lr: 2e-3, warmup: 2 };
  c.data = {
    ...c.data,
    image_size: 8,
    num_channels: 4,
    train_root: join(dataRoot, "train"),
    eval_root: join(dataRoot, "eval"),
  };
  c.seed = 11;
  return c;
}

/** "plain": {@link tinyConfig}; "checkpointed-fp16": with gradient checkpointing and fp16. */
export type TinyVariant = "plain" | "checkpointed-fp16";

/** {@link tinyConfig} in one of the {@link TinyVariant}s. */
export function tinyVariant(dataRoot: string, variant: TinyVariant): TrainConfig {
  const c = tinyConfig(dataRoot);
  if (variant === "checkpointed-fp16") {
    c.diffusers.gradient_checkpointing = true;
    c.training.mixed_precision = "fp16";
  } else if (variant !== "plain") throw new Error(`unknown tiny variant ${variant}`);
  return c;
}

/** Writes train (n pairs) and eval (4 pairs) data under `dataRoot`. */
export async function makeTinyRoots(dataRoot: string, n = 8): Promise<void> {
  await makeTinyData(join(dataRoot, "train"), n, 1);
  await makeTinyData(join(dataRoot, "eval"), 4, 2);
}

/** A trainer init for the tiny model. */
export async function tinyInit(
  gpu: Gpu,
  config: TrainConfig,
  workdir: string,
  extra: Partial<TrainerInit> = {},
): Promise<TrainerInit> {
  return {
    gpu,
    config,
    workdir,
    models: tinyModels(gpu),
    trainData: await openPairDataset(config.data.train_root),
    evalData: await openPairDataset(config.data.eval_root),
    console: false,
    progress: false,
    handleSignals: false,
    ...extra,
  };
}

/** Every tensor of a weight file as f32, by key (to compare trained weights). */
export async function readAll(path: string): Promise<Map<string, Float32Array>> {
  const r = await openWeights(path);
  try {
    const m = new Map<string, Float32Array>();
    for (const k of r.keys()) m.set(k, await r.readF32(k));
    return m;
  } finally {
    r.close();
  }
}
