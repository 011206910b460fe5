/**
 * Full training checkpoints: `checkpoint_s{step}/` holds the live weights (`model.safetensors`,
 * diffusers keys), the AdamW moments (`optimizer.safetensors`, keys `m.<name>` / `v.<name>`), the
 * EMA weights (`ema.safetensors`) and `state.json` (step, optimizer and EMA counters, random
 * generator counters, data position, the settings). The folder is written under a temporary name
 * and renamed into place, so a crash never leaves a half-written checkpoint under the real name.
 *
 * @module
 */

import { join } from "node:path";
import type { Module } from "../nn/module.ts";
import { writeSafetensors } from "../io/safetensors.ts";
import { openWeights } from "../io/weights.ts";
import { readMany } from "../tensor/readback.ts";
import type { AdamW } from "./adamw.ts";
import type { Ema } from "./ema.ts";
import type { RngState } from "./rng.ts";

/** Where the data iterators stand: the next batch is (epoch, position). */
export interface DataPosition {
  epoch: number;
  position: number;
}

/** The JSON part of a checkpoint. */
export interface TrainStateJson {
  format: "reflow-train-state";
  version: 1;
  /** Optimizer steps completed. */
  step: number;
  optimizerStep: number;
  emaNumUpdates: number;
  rng: Record<string, RngState>;
  trainData: DataPosition;
  /** Next evaluation batch. */
  evalPosition: number;
  worldSize: number;
  config: unknown;
  /** fp16 mixed precision's dynamic loss scale (absent without it). */
  lossScale?: { scale: number; goodSteps: number };
}

/** `checkpoint_s{step}` folder name. */
export function checkpointName(step: number): string {
  return `checkpoint_s${step}`;
}

/** The step in a `checkpoint_s{step}` path (as the original reads it from the name). */
export function stepFromCheckpointPath(path: string): number {
  const name = path.replace(/[\\/]+$/, "").split(/[\\/]/).pop() ?? "";
  const m = /^checkpoint_s(\d+)$/.exec(name);
  if (!m) {
    throw new Error(
      `config.training.ckpt_path: "${path}" is not a checkpoint_s{step} folder`,
    );
  }
  return Number(m[1]);
}

async function removeIfExists(path: string): Promise<void> {
  await Deno.remove(path, { recursive: true }).catch((e) => {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  });
}

/** Saves the whole training state into `dir` atomically (tmp folder + rename). */
export async function saveTrainState(
  dir: string,
  model: Module,
  optimizer: AdamW,
  ema: Ema,
  state: Omit<TrainStateJson, "format" | "version" | "optimizerStep" | "emaNumUpdates">,
): Promise<void> {
  const named = model.namedParameters();
  const opt = await optimizer.state();
  const emaState = await ema.state();
  const live = await readMany(named.map(([, p]) => p));
  const tmp = `${dir}.tmp-${Deno.pid}`;
  await removeIfExists(tmp);
  await Deno.mkdir(tmp, { recursive: true });
  try {
    const f32 = (name: string, shape: readonly number[], data: Float32Array) => ({
      name,
      dtype: "F32" as const,
      shape: [...shape],
      data,
    });
    await writeSafetensors(
      join(tmp, "model.safetensors"),
      named.map(([n, p], i) => f32(n, p.shape, live[i])),
      { format: "pt" },
    );
    await writeSafetensors(join(tmp, "optimizer.safetensors"), [
      ...named.map(([n, p], i) => f32(`m.${n}`, p.shape, opt.m[i])),
      ...named.map(([n, p], i) => f32(`v.${n}`, p.shape, opt.v[i])),
    ], { format: "pt" });
    await writeSafetensors(
      join(tmp, "ema.safetensors"),
      named.map(([n, p], i) => f32(n, p.shape, emaState.shadow[i])),
      { format: "pt" },
    );
    const json: TrainStateJson = {
      format: "reflow-train-state",
      version: 1,
      ...state,
      optimizerStep: opt.step,
      emaNumUpdates: emaState.numUpdates,
    };
    await Deno.writeTextFile(join(tmp, "state.json"), JSON.stringify(json, null, 2) + "\n");
    const old = `${dir}.old-${Deno.pid}`;
    let hadOld = false;
    try {
      await Deno.rename(dir, old);
      hadOld = true;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    await Deno.rename(tmp, dir);
    if (hadOld) await removeIfExists(old);
  } catch (e) {
    await removeIfExists(tmp);
    throw new Error(`cannot write checkpoint ${dir}: ${(e as Error).message}`, { cause: e });
  }
}

async function readTensors(
  path: string,
  names: string[],
): Promise<Float32Array[]> {
  const r = await openWeights(path);
  try {
    const missing = names.filter((n) => !r.has(n));
    if (missing.length) {
      throw new Error(
        `${path}: ${missing.length} tensor(s) missing (${missing.slice(0, 5).join(", ")}); ` +
          `was the checkpoint made with another model config?`,
      );
    }
    const out: Float32Array[] = [];
    for (const n of names) out.push(await r.readF32(n));
    return out;
  } finally {
    r.close();
  }
}

/** Restores a checkpoint folder into the model, optimizer and EMA; returns its JSON. */
export async function loadTrainState(
  dir: string,
  model: Module,
  optimizer: AdamW,
  ema: Ema,
): Promise<TrainStateJson> {
  const jsonPath = join(dir, "state.json");
  let json: TrainStateJson;
  try {
    json = JSON.parse(await Deno.readTextFile(jsonPath));
  } catch (e) {
    throw new Error(`config.training.ckpt_path: cannot read ${jsonPath}: ${(e as Error).message}`);
  }
  if (json.format !== "reflow-train-state" || json.version !== 1) {
    throw new Error(`${jsonPath}: not a reflow training state (format ${json.format})`);
  }
  const named = model.namedParameters();
  const names = named.map(([n]) => n);
  const live = await readTensors(join(dir, "model.safetensors"), names);
  const m = await readTensors(join(dir, "optimizer.safetensors"), names.map((n) => `m.${n}`));
  const v = await readTensors(join(dir, "optimizer.safetensors"), names.map((n) => `v.${n}`));
  const shadow = await readTensors(join(dir, "ema.safetensors"), names);
  named.forEach(([n, p], i) => {
    if (live[i].length !== p.size) {
      throw new Error(`${dir}: "${n}" holds ${live[i].length} values, the model has ${p.size}`);
    }
    p.gpu.write(p.buffer, 0, live[i]);
  });
  optimizer.load({ step: json.optimizerStep, m, v });
  ema.load({ numUpdates: json.emaNumUpdates, shadow });
  return json;
}
