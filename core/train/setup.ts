/**
 * Building a training run from its config: the frozen tokenizer, text encoder and VAE from the
 * diffusers folder `diffusers.ckpt_path`, the score model from its UNet weights
 * (`diffusers.load_score_model`) or fresh from its config, the train and eval pair data, and the
 * main worker's logs.
 *
 * @module
 */

import { dirname, join } from "node:path";
import type { Gpu } from "../gpu/device.ts";
import type { TrainConfig } from "../../configs/train.ts";
import { loadDiffusersPipeline, loadVae, readJson } from "../models/diffusers_folder.ts";
import { UNet2DConditionModel } from "../models/unet2d_condition.ts";
import { openPairDataset, type PairDataset } from "../data/dataset.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { readMany } from "../tensor/readback.ts";
import { formatConfig } from "../config/overrides.ts";
import { EventWriter } from "../io/tensorboard.ts";
import { createLogger, type Logger } from "../util/log.ts";
import type { GradientExchange } from "../distributed/allreduce.ts";
import { repairCheckpoints } from "./train_state.ts";
import type { TrainerInit, TrainModels } from "./types.ts";

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

/**
 * The main worker's folders, its log `exp.log` (starting with the config and the comment), its
 * TensorBoard writer, and the repair of saves that a killed run left half done (temporaries, or a
 * checkpoint without its score model) in the checkpoint folders it reads and writes.
 */
export async function openRunLogs(
  init: Pick<TrainerInit, "config" | "workdir" | "comment" | "console">,
  dirs: { checkpointDir: string; sampleDir: string },
): Promise<{ log: Logger; tb: EventWriter }> {
  const { config, workdir } = init;
  await Deno.mkdir(dirs.checkpointDir, { recursive: true });
  await Deno.mkdir(dirs.sampleDir, { recursive: true });
  const log = createLogger({ file: join(workdir, "exp.log"), console: init.console ?? true });
  log.info(`\n${formatConfig(config)}`);
  log.info(`comment : ${init.comment ?? "None"}`);
  const tb = new EventWriter(join(workdir, "tensorboard"));
  const ckpt = config.training.ckpt_path;
  const folders = new Set([dirs.checkpointDir]);
  if (ckpt !== null) folders.add(dirname(ckpt.replace(/[\\/]+$/, "")));
  for (const dir of folders) {
    const r = await repairCheckpoints(dir);
    for (const n of r.removed) log.warn(`removed ${join(dir, n)} (left by an interrupted save)`);
    for (const n of r.restored) log.warn(`restored ${join(dir, n)}`);
    for (const n of r.exported) log.warn(`wrote the missing ${join(dir, n)} from its checkpoint`);
    for (const n of r.skipped) log.warn(`cannot complete ${join(dir, n)}`);
  }
  return { log, tb };
}

/** Overwrites every worker's `params` with rank 0's (in order, as one flat vector). */
export async function broadcastWeights(
  params: Tensor[],
  exchange: GradientExchange,
): Promise<void> {
  const parts = await readMany(params);
  const flat = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let off = 0;
  for (const p of parts) {
    flat.set(p, off);
    off += p.length;
  }
  const got = await exchange.broadcast(flat);
  off = 0;
  for (const t of params) {
    t.gpu.write(t.buffer, 0, got.subarray(off, off + t.size));
    off += t.size;
  }
}
