/**
 * A tiny Stable-Diffusion-layout pipeline with random weights, for tests and benchmarks of the
 * generate job: UNet block_out_channels [32, 64], cross_attention_dim 32, latents 4x16x16; a
 * 2-layer CLIP text encoder of width 32; the CLIP tokenizer fixture; SD's scheduler config.
 * Weights are stored as float16 safetensors (well under 2 MB in all).
 *
 * Remake the checked-in fixture with
 * `deno run -A core/generate/tiny_pipeline.ts tests/fixtures/tiny_pipeline`.
 *
 * @module
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Gpu } from "../gpu/device.ts";
import { UNet2DConditionModel } from "../models/unet2d_condition.ts";
import { CLIPTextModel } from "../models/text_encoders.ts";
import { saveModule } from "../models/load.ts";
import { writeFileAtomic } from "../data/atomic_write.ts";
import {
  SD_SCHEDULER_CONFIG,
  TINY_MODEL_INDEX,
  TINY_TEXT_CONFIG,
  TINY_UNET_CONFIG,
} from "./tiny_pipeline_config.ts";

const TOKENIZER_FILES = [
  "vocab.json",
  "merges.txt",
  "tokenizer_config.json",
  "special_tokens_map.json",
];

/** The CLIP tokenizer fixture copied into the tiny pipeline. */
export const TOKENIZER_SOURCE = fileURLToPath(
  new URL("../../tests/fixtures/tokenizers/clip_sd1", import.meta.url),
);

async function writeJson(path: string, v: unknown): Promise<void> {
  await writeFileAtomic(path, new TextEncoder().encode(JSON.stringify(v, null, 2) + "\n"));
}

/** Writes the tiny pipeline into `dir` (weights drawn from `seed`). */
export async function makeTinyPipeline(gpu: Gpu, dir: string, seed = 0): Promise<void> {
  for (const sub of ["unet", "text_encoder", "tokenizer", "scheduler"]) {
    await Deno.mkdir(join(dir, sub), { recursive: true });
  }
  await writeJson(join(dir, "model_index.json"), TINY_MODEL_INDEX);
  await writeJson(join(dir, "scheduler", "scheduler_config.json"), SD_SCHEDULER_CONFIG);
  for (const f of TOKENIZER_FILES) {
    await writeFileAtomic(
      join(dir, "tokenizer", f),
      await Deno.readFile(join(TOKENIZER_SOURCE, f)),
    );
  }
  const unet = UNet2DConditionModel.create(gpu, TINY_UNET_CONFIG, seed);
  await writeJson(join(dir, "unet", "config.json"), TINY_UNET_CONFIG);
  await saveModule(unet, join(dir, "unet", "diffusion_pytorch_model.safetensors"), {
    dtype: "F16",
  });
  unet.dispose();
  const text = CLIPTextModel.create(gpu, TINY_TEXT_CONFIG, seed + 1);
  await writeJson(join(dir, "text_encoder", "config.json"), TINY_TEXT_CONFIG);
  await saveModule(text, join(dir, "text_encoder", "model.safetensors"), { dtype: "F16" });
  text.dispose();
}

if (import.meta.main) {
  const dir = Deno.args[0];
  if (!dir) {
    console.error("usage: deno run -A core/generate/tiny_pipeline.ts <output folder> [seed]");
    Deno.exit(2);
  }
  const gpu = await Gpu.open();
  await makeTinyPipeline(gpu, dir, Number(Deno.args[1] ?? 0));
  gpu.destroy();
  console.log(`wrote the tiny pipeline to ${dir}`);
}
