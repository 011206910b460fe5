/**
 * A tiny diffusers model folder and evaluation data set for the sample-job tests, built in a
 * temporary folder: unet/ (block_out_channels [32, 64], cross_attention_dim 32, attention_head_dim
 * 4, norm_num_groups 8, 8x8 latents; seeded random weights saved with saveModule), text_encoder/
 * (a 1-layer CLIPTextModel with hidden size 32, random weights), tokenizer/ (the CLIP vocabulary of
 * tests/fixtures/tokenizers/clip_sd1), and optionally vae/ (tests/fixtures/models/vae_tiny, which
 * decodes 8x8 latents to 16x16 images).
 */
import { join } from "node:path";
import type { Gpu } from "../../core/gpu/device.ts";
import { UNet2DConditionModel } from "../../core/models/unet2d_condition.ts";
import { CLIPTextModel } from "../../core/models/text_encoders.ts";
import { saveModule } from "../../core/models/load.ts";
import { writeCaptions } from "../../core/data/captions.ts";
import { pairPaths, writePairNpy } from "../../core/data/pair_store.ts";
import { f32ToF16Bits } from "../../core/io/half.ts";
import { philoxNormal } from "../../core/tensor/philox.ts";
import { getConfig, type SampleConfig } from "../../configs/sample.ts";
import { TINY_BENCH_UNET } from "../../core/bench/tiny_setup.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;

/** The tiny UNet's config.json: the job benchmarks' tiny UNet, with its mid block named. */
export const TINY_UNET_CONFIG = {
  _class_name: "UNet2DConditionModel",
  ...TINY_BENCH_UNET,
  mid_block_type: "UNetMidBlock2DCrossAttn",
};

const TINY_CLIP_CONFIG = {
  architectures: ["CLIPTextModel"],
  model_type: "clip_text_model",
  vocab_size: 1049,
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 1,
  num_attention_heads: 4,
  max_position_embeddings: 77,
  hidden_act: "quick_gelu",
  layer_norm_eps: 1e-5,
};

async function copyDir(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.isFile) await Deno.copyFile(join(from, e.name), join(to, e.name));
  }
}

/** Writes the tiny model folder under `dir`; the UNet weights use `seed`. */
export async function makeTinyModel(
  gpu: Gpu,
  dir: string,
  opts: { vae?: boolean; seed?: number } = {},
): Promise<void> {
  await Deno.mkdir(join(dir, "unet"), { recursive: true });
  await Deno.mkdir(join(dir, "text_encoder"), { recursive: true });
  await Deno.writeTextFile(
    join(dir, "model_index.json"),
    JSON.stringify({ _class_name: "StableDiffusionPipeline" }),
  );
  await Deno.writeTextFile(join(dir, "unet", "config.json"), JSON.stringify(TINY_UNET_CONFIG));
  const unet = UNet2DConditionModel.create(gpu, TINY_UNET_CONFIG, opts.seed ?? 1);
  await saveModule(unet, join(dir, "unet", "diffusion_pytorch_model.safetensors"));
  unet.dispose();
  await Deno.writeTextFile(
    join(dir, "text_encoder", "config.json"),
    JSON.stringify(TINY_CLIP_CONFIG),
  );
  const enc = CLIPTextModel.create(gpu, TINY_CLIP_CONFIG, 3);
  await saveModule(enc, join(dir, "text_encoder", "model.safetensors"));
  enc.dispose();
  await copyDir(join(FIXTURES, "tokenizers", "clip_sd1"), join(dir, "tokenizer"));
  if (opts.vae) {
    await Deno.mkdir(join(dir, "vae"), { recursive: true });
    for (const f of ["config.json", "diffusion_pytorch_model.safetensors"]) {
      await Deno.copyFile(join(FIXTURES, "models", "vae_tiny", f), join(dir, "vae", f));
    }
  }
}

/** Captions of the tiny data set. */
export function tinyCaption(i: number): string {
  return `a photo of thing number ${i}`;
}

/** z0 / z1 of pair i (float16-rounded values as stored). */
export function tinyPair(i: number, n: number): { z0: Uint16Array; z1: Uint16Array } {
  const z0 = f32ToF16Bits(philoxNormal(99, 2 * i * n, n));
  const z1 = f32ToF16Bits(philoxNormal(99, (2 * i + 1) * n, n).map((v) => 0.5 * v));
  return { z0, z1 };
}

/** Writes an npy pair data set of `count` 4x8x8 pairs under `root`. */
export async function makeTinyData(root: string, count: number): Promise<void> {
  const paths = pairPaths(root);
  await Deno.mkdir(paths.images, { recursive: true });
  await Deno.writeTextFile(paths.index, JSON.stringify({ total_nums: count, note: "test data" }));
  await writeCaptions(paths.captions, Array.from({ length: count }, (_, i) => tinyCaption(i)));
  const shape: [number, number, number] = [4, 8, 8];
  for (let i = 0; i < count; i++) {
    const { z0, z1 } = tinyPair(i, 256);
    await writePairNpy(paths.images, i, shape, z0, z1);
  }
}

/** A sample config pointing at the tiny model and data. */
export function tinyConfig(modelDir: string, dataRoot: string): SampleConfig {
  const c = getConfig();
  c.diffusers.ckpt_path = modelDir;
  c.data.eval_root = dataRoot;
  c.data.image_size = 8;
  c.sampling.ckpt_path = "";
  c.sampling.batch_size = 2;
  c.sampling.num_samples = 3;
  c.seed = 5;
  return c;
}

/** The fixture folder of this suite. */
export const SAMPLE_FIXTURES = join(FIXTURES, "sample");
