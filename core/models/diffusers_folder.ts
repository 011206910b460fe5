/**
 * Reading a diffusers pipeline folder (`model_index.json` + `unet/`, `vae/`, `text_encoder/`,
 * `tokenizer/`, `scheduler/`): each component is built from its config and loaded from its weights.
 */
import { join } from "node:path";
import type { Gpu } from "../gpu/device.ts";
import { UNet2DConditionModel } from "./unet2d_condition.ts";
import { AutoencoderKL, renameLegacyVaeKey } from "./autoencoder_kl.ts";
import { createTextEncoder, IGNORED_TEXT_KEYS, type TextEncoder } from "./text_encoders.ts";
import { loadModule, type LoadReport } from "./load.ts";
import { openWeights } from "../io/weights.ts";
import type { TextTokenizer } from "./tokenizers/types.ts";
import { loadTokenizer } from "./tokenizers/load.ts";

/** Reads and parses a JSON file, naming it in any error. */
export async function readJson(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    const v = JSON.parse(text);
    if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error("not an object");
    return v;
  } catch (e) {
    throw new Error(`${path} is not valid JSON: ${(e as Error).message}`);
  }
}

const WEIGHT_NAMES = [
  "diffusion_pytorch_model.safetensors",
  "model.safetensors",
  "diffusion_pytorch_model.bin",
  "pytorch_model.bin",
  "diffusion_pytorch_model.fp16.safetensors",
  "model.fp16.safetensors",
  "diffusion_pytorch_model.fp16.bin",
  "pytorch_model.fp16.bin",
];

/** The weight file of a component folder (safetensors preferred). */
export async function findWeights(folder: string): Promise<string> {
  for (const n of WEIGHT_NAMES) {
    const p = join(folder, n);
    try {
      if ((await Deno.stat(p)).isFile) return p;
    } catch { /* try the next name */ }
  }
  throw new Error(`${folder}: no weight file (looked for ${WEIGHT_NAMES.slice(0, 4).join(", ")})`);
}

export async function loadUNet(gpu: Gpu, folder: string): Promise<UNet2DConditionModel> {
  const cfg = await readJson(join(folder, "config.json"));
  const unet = UNet2DConditionModel.create(gpu, cfg);
  await loadWeightsInto(unet, await findWeights(folder));
  return unet;
}

export async function loadVae(gpu: Gpu, folder: string): Promise<AutoencoderKL> {
  const cfg = await readJson(join(folder, "config.json"));
  const vae = AutoencoderKL.create(gpu, cfg);
  await loadWeightsInto(vae, await findWeights(folder), { renameKey: renameLegacyVaeKey });
  return vae;
}

export async function loadTextEncoder(gpu: Gpu, folder: string): Promise<TextEncoder> {
  const cfg = await readJson(join(folder, "config.json"));
  const enc = createTextEncoder(gpu, cfg, join(folder, "config.json"));
  const path = await findWeights(folder);
  const reader = await openWeights(path);
  try {
    // Buffers (position_ids) and unused heads (pooler) are not parameters.
    const report = await loadModule(enc, reader, { allowUnexpected: true });
    const bad = report.unexpected.filter((k) => !IGNORED_TEXT_KEYS(k));
    if (bad.length) {
      throw new Error(
        `${path}: unexpected keys the text encoder does not have: ${bad.slice(0, 10).join(", ")}`,
      );
    }
  } finally {
    reader.close();
  }
  enc.requiresGrad(false);
  return enc;
}

async function loadWeightsInto(
  m: UNet2DConditionModel | AutoencoderKL,
  path: string,
  opts: { renameKey?: (k: string) => string } = {},
): Promise<LoadReport> {
  const reader = await openWeights(path);
  try {
    return await loadModule(m, reader, opts);
  } finally {
    reader.close();
  }
}

/** Everything the teacher pipeline needs from a diffusers folder. */
export interface DiffusersPipeline {
  dir: string;
  modelIndex: Record<string, unknown>;
  tokenizer: TextTokenizer;
  textEncoder: TextEncoder;
  unet: UNet2DConditionModel;
  vae: AutoencoderKL | null;
  schedulerConfig: Record<string, unknown>;
}

/** Loads a diffusers pipeline folder; `vae: false` skips the VAE (generation does not decode). */
export async function loadDiffusersPipeline(
  gpu: Gpu,
  dir: string,
  opts: { vae?: boolean; unet?: boolean } = {},
): Promise<DiffusersPipeline> {
  const modelIndex = await readJson(join(dir, "model_index.json"));
  const tokenizer = await loadTokenizer(join(dir, "tokenizer"));
  const textEncoder = await loadTextEncoder(gpu, join(dir, "text_encoder"));
  const unet = opts.unet === false
    ? (null as unknown as UNet2DConditionModel)
    : await loadUNet(gpu, join(dir, "unet"));
  const vae = opts.vae ? await loadVae(gpu, join(dir, "vae")) : null;
  const schedDir = join(dir, "scheduler");
  const schedulerConfig = await readJson(join(schedDir, "scheduler_config.json"));
  return { dir, modelIndex, tokenizer, textEncoder, unet, vae, schedulerConfig };
}
