/**
 * Building a training run from its config: the frozen tokenizer, text encoder and VAE from the
 * diffusers folder `diffusers.ckpt_path`, the score model from its UNet weights
 * (`diffusers.load_score_model`) or fresh from its config, and the train and eval pair data.
 *
 * @module
 */

import { join } from "node:path";
import type { Gpu } from "../gpu/device.ts";
import type { TrainConfig } from "../../configs/train.ts";
import { loadDiffusersPipeline, loadVae, readJson } from "../models/diffusers_folder.ts";
import { UNet2DConditionModel } from "../models/unet2d_condition.ts";
import { openPairDataset, type PairDataset } from "../data/dataset.ts";
import type { TrainModels } from "./trainer.ts";

async function isDir(path: string): Promise<boolean> {
  return await Deno.stat(path).then((s) => s.isDirectory, () => false);
}

/**
 * Loads the models of `config.diffusers`. The VAE is loaded when the folder has one (it only
 * decodes sample grids); without it the grids show the latents.
 */
export async function loadTrainModels(gpu: Gpu, config: TrainConfig): Promise<TrainModels> {
  const dir = config.diffusers.ckpt_path;
  if (!(await isDir(dir))) {
    throw new Error(`config.diffusers.ckpt_path: model folder ${dir} does not exist`);
  }
  const load = config.diffusers.load_score_model;
  const p = await loadDiffusersPipeline(gpu, dir, { vae: false, unet: load });
  const unet = load ? p.unet : UNet2DConditionModel.create(
    gpu,
    await readJson(join(dir, "unet", "config.json")),
    config.seed,
  );
  const vaeDir = join(dir, "vae");
  const vae = (await isDir(vaeDir)) ? await loadVae(gpu, vaeDir) : null;
  p.textEncoder.requiresGrad(false);
  vae?.requiresGrad(false);
  return { unet, textEncoder: p.textEncoder, tokenizer: p.tokenizer, vae };
}

/** Opens `data.train_root` and `data.eval_root`, naming the setting when one cannot be read. */
export async function openTrainData(
  config: TrainConfig,
): Promise<{ trainData: PairDataset; evalData: PairDataset }> {
  const open = async (root: string, key: string) => {
    try {
      return await openPairDataset(root);
    } catch (e) {
      throw new Error(`config.data.${key}: ${(e as Error).message}`, { cause: e });
    }
  };
  return {
    trainData: await open(config.data.train_root, "train_root"),
    evalData: await open(config.data.eval_root, "eval_root"),
  };
}
