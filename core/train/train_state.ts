/**
 * Full training checkpoints: `checkpoint_s{step}/` holds the live weights (`model.safetensors`,
 * diffusers keys), the AdamW moments (`optimizer.safetensors`, keys `m.<name>` / `v.<name>`), the
 * EMA weights (`ema.safetensors`) and `state.json` (step, optimizer and EMA counters, random
 * generator counters, data position, the settings). The folder is written under a temporary name
 * and renamed into place, so a crash never leaves a half-written checkpoint under the real name.
 * Non-finite weights, moments or EMA values are never saved, and a checkpoint holding them is
 * never resumed from: a checkpoint on disk is a good one.
 *
 * `score_model_s{step}.safetensors` beside the folder (the EMA weights for the sample job) is
 * written after it; {@link repairCheckpoints} completes that export where a crash came between the
 * two, and removes what interrupted writes left behind.
 *
 * @module
 */

import { join } from "node:path";
import type { Module } from "../nn/module.ts";
import { openSafetensors, writeSafetensors } from "../io/safetensors.ts";
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

/** Index of the first NaN or infinity in `a`, or -1. */
export function firstNonFinite(a: Float32Array): number {
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    if (x - x !== 0) return i; // NaN - NaN and inf - inf are NaN
  }
  return -1;
}

/** Non-finite values where a checkpoint's must all be finite (the training has diverged). */
export class NonFiniteStateError extends Error {
  constructor(
    message: string,
    /** The optimizer step whose state it is. */
    readonly step: number,
  ) {
    super(message);
    this.name = "NonFiniteStateError";
  }
}

/**
 * Throws {@link NonFiniteStateError} naming the first tensor of `groups` (label, names, values)
 * that holds a NaN or an infinity, and how many it holds.
 */
function checkFinite(
  groups: [string, readonly string[], readonly Float32Array[]][],
  step: number,
  what: string,
): void {
  for (const [label, names, values] of groups) {
    for (let t = 0; t < values.length; t++) {
      const at = firstNonFinite(values[t]);
      if (at < 0) continue;
      let count = 0;
      for (const x of values[t]) if (x - x !== 0) count++;
      throw new NonFiniteStateError(
        `${what}: ${label} "${names[t]}" holds ${count} non-finite value(s) ` +
          `(${values[t][at]} at element ${at}) after step ${step}`,
        step,
      );
    }
  }
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

/**
 * Saves the whole training state into `dir` atomically (tmp folder + rename). Refuses, with a
 * {@link NonFiniteStateError} and before anything is written, a state whose weights, AdamW moments
 * or EMA hold a NaN or an infinity (the values are read back anyway, so the check costs no extra
 * read-back).
 */
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
  const names = named.map(([n]) => n);
  checkFinite(
    [
      ["weight", names, live],
      ["EMA weight", names, emaState.shadow],
      ["AdamW first moment of", names, opt.m],
      ["AdamW second moment of", names, opt.v],
    ],
    state.step,
    `not saving ${dir}`,
  );
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

/**
 * Restores the checkpoint folder `path` (`training.ckpt_path`) to resume a run of `worldSize`
 * workers: checks that its folder name and state agree on the step and that it was made by as
 * many workers (so the data order continues); returns its JSON.
 */
export async function loadResumeState(
  path: string,
  model: Module,
  optimizer: AdamW,
  ema: Ema,
  worldSize: number,
): Promise<TrainStateJson> {
  const step = stepFromCheckpointPath(path);
  const s = await loadTrainState(path, model, optimizer, ema);
  if (s.step !== step) {
    throw new Error(`${path}: state.json says step ${s.step}, the folder name ${step}`);
  }
  if (s.worldSize !== worldSize) {
    throw new Error(
      `${path} was made by ${s.worldSize} worker(s); resume with the same number ` +
        `(now ${worldSize}) so that the data order continues`,
    );
  }
  return s;
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
  // Checkpoints written before this check existed may hold a diverged state.
  try {
    checkFinite(
      [
        ["weight", names, live],
        ["EMA weight", names, shadow],
        ["AdamW first moment of", names, m],
        ["AdamW second moment of", names, v],
      ],
      json.step,
      `config.training.ckpt_path: ${dir} cannot be resumed from`,
    );
  } catch (e) {
    throw new Error(`${(e as Error).message}; resume from an earlier checkpoint`);
  }
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

/** `score_model_s{step}.safetensors`: the EMA weights of `checkpoint_s{step}`, diffusers keys. */
export function scoreModelName(step: number): string {
  return `score_model_s${step}.safetensors`;
}

/** The metadata a score model file carries (the sample job reads the orientation from it). */
export function scoreModelMetadata(
  step: number,
  timestepOrientation: string,
): Record<string, string> {
  return { format: "pt", step: String(step), timestep_orientation: timestepOrientation };
}

/** What {@link repairCheckpoints} did, one line per action (for the log). */
export interface RepairReport {
  removed: string[];
  restored: string[];
  exported: string[];
  /** Checkpoints whose export could not be completed, with the reason. */
  skipped: string[];
}

/**
 * Tidies a `checkpoints/` folder after an interrupted run: temporary folders and files of
 * interrupted writes (`checkpoint_s{N}.tmp-{pid}`, `*.safetensors.tmp`) are removed; a
 * `checkpoint_s{N}.old-{pid}` (the previous copy, moved aside while a checkpoint of the same step
 * was renamed into place) is restored when the new one never arrived, removed otherwise; and every
 * `checkpoint_s{N}/` without its `score_model_s{N}.safetensors` gets it, written from the
 * checkpoint's `ema.safetensors` exactly as the training loop writes it. A folder that does not
 * exist needs no repair.
 */
export async function repairCheckpoints(checkpointDir: string): Promise<RepairReport> {
  const report: RepairReport = { removed: [], restored: [], exported: [], skipped: [] };
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(checkpointDir));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return report;
    throw new Error(`cannot read ${checkpointDir}: ${(e as Error).message}`);
  }
  const names = new Set(entries.map((e) => e.name));
  for (const e of entries) {
    const path = join(checkpointDir, e.name);
    const old = /^(checkpoint_s\d+)\.old-\d+$/.exec(e.name);
    if (old && e.isDirectory && !names.has(old[1])) {
      await Deno.rename(path, join(checkpointDir, old[1]));
      names.add(old[1]);
      report.restored.push(`${old[1]} (from ${e.name})`);
      continue;
    }
    const temporary = old || /^checkpoint_s\d+\.tmp-\d+$/.test(e.name) ||
      /^score_model_s\d+\.safetensors\.tmp$/.test(e.name);
    if (temporary) {
      await removeIfExists(path);
      report.removed.push(e.name);
    }
  }
  for (const name of [...names].sort()) {
    const m = /^checkpoint_s(\d+)$/.exec(name);
    if (!m) continue;
    const step = Number(m[1]);
    const target = join(checkpointDir, scoreModelName(step));
    if (names.has(scoreModelName(step))) continue;
    try {
      await exportScoreModel(join(checkpointDir, name), target, step);
      report.exported.push(scoreModelName(step));
    } catch (e) {
      report.skipped.push(`${scoreModelName(step)}: ${(e as Error).message}`);
    }
  }
  return report;
}

/** Writes a checkpoint folder's EMA weights as its score model file (host only, no GPU). */
async function exportScoreModel(dir: string, target: string, step: number): Promise<void> {
  let json: TrainStateJson;
  try {
    json = JSON.parse(await Deno.readTextFile(join(dir, "state.json")));
  } catch (e) {
    throw new Error(`cannot read ${join(dir, "state.json")}: ${(e as Error).message}`);
  }
  const orientation = (json.config as { training?: { timestep_orientation?: unknown } } | null)
    ?.training?.timestep_orientation;
  if (typeof orientation !== "string") {
    throw new Error(`${join(dir, "state.json")}: no config.training.timestep_orientation`);
  }
  const emaPath = join(dir, "ema.safetensors");
  const r = await openSafetensors(emaPath);
  const tensors = [];
  try {
    for (const k of r.keys()) {
      tensors.push({
        name: k,
        dtype: "F32" as const,
        shape: [...r.info(k).shape],
        data: await r.readF32(k),
      });
    }
  } finally {
    r.close();
  }
  checkFinite(
    [["EMA weight", tensors.map((t) => t.name), tensors.map((t) => t.data)]],
    step,
    `not exporting ${emaPath}`,
  );
  await writeSafetensors(target, tensors, scoreModelMetadata(step, orientation));
}
