/**
 * The score model (student UNet) of the `sample` job, from `sampling.ckpt_path`:
 *
 * - a safetensors file (`score_model_s{step}.safetensors`, what our trainer writes);
 * - a PyTorch zip file (`score_model_s{step}.pth`, what the original tool writes: the unwrapped
 *   model's `state_dict()` after the EMA weights were copied into it, so plain diffusers names;
 *   a state dict saved from a DDP-wrapped or compiled model carries `module.` / `_orig_mod.`
 *   prefixes, which are stripped);
 * - a diffusers UNet folder (`config.json` + weights), or a pipeline folder holding `unet/`;
 * - "" (empty): the pretrained UNet of the model folder when `diffusers.load_score_model`, else a
 *   freshly initialised one (seeded), as the original does.
 *
 * The UNet is built from the model folder's `unet/config.json` (a diffusers checkpoint folder
 * brings its own `config.json`, which then wins). Keys are strict: a missing or unexpected key is
 * an error unless `allowMissingKeys`, and a shape mismatch is always an error naming the key and
 * both shapes.
 *
 * @module
 */

import { join } from "node:path";
import type { Gpu } from "../gpu/device.ts";
import { UNet2DConditionModel } from "../models/unet2d_condition.ts";
import { findWeights, readJson } from "../models/diffusers_folder.ts";
import { loadModule, type LoadReport } from "../models/load.ts";
import { openWeights, type WeightReader } from "../io/weights.ts";
import { SafetensorsFile } from "../io/safetensors.ts";
import type { TimestepOrientation } from "../flow/time.ts";

/** Where the weights came from. */
export type ScoreModelFormat = "safetensors" | "torch" | "diffusers" | "pretrained" | "fresh";

/** Metadata key (safetensors `__metadata__`) naming the checkpoint's timestep orientation. */
export const ORIENTATION_METADATA_KEY = "timestep_orientation";

/** Options of {@link loadScoreModel}. */
export interface ScoreModelOptions {
  /** The diffusers model folder (`diffusers.ckpt_path`): its `unet/config.json` and weights. */
  modelDir: string;
  /** `sampling.ckpt_path`; "" = no checkpoint. */
  ckptPath: string;
  /** `diffusers.load_score_model`: with no checkpoint, take the model folder's UNet weights. */
  loadPretrained: boolean;
  /** `sampling.allow_missing_keys`: accept missing and unexpected keys (they are reported). */
  allowMissingKeys: boolean;
  /** Seed of a fresh UNet's initialisation. */
  seed: number;
  /** `training.timestep_orientation`: used unless the checkpoint's metadata says otherwise. */
  orientation: TimestepOrientation;
}

/** A loaded score model and what the log should say about it. */
export interface ScoreModel {
  unet: UNet2DConditionModel;
  format: ScoreModelFormat;
  /** The weight file read (null for a fresh model). */
  weightsPath: string | null;
  /** The config.json the UNet was built from. */
  configPath: string;
  /** Missing / unexpected keys (only non-empty with allowMissingKeys). */
  report: LoadReport | null;
  /** Key prefixes stripped from the file's names (e.g. "module."). */
  strippedPrefixes: string[];
  /** How flow time maps to the UNet timestep, and who said so. */
  orientation: TimestepOrientation;
  orientationSource: "checkpoint metadata" | "config";
  /** Log lines describing the choice (the original's "load ckpt from ..." etc.). */
  notes: string[];
}

const SETTING = "config.sampling.ckpt_path";

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new Error(`cannot read ${path}: ${(e as Error).message}`);
  }
}

/** Prefixes other tools put before diffusers names (DDP wrapper, torch.compile). */
const WRAPPER_PREFIXES = ["module.", "_orig_mod."];

/**
 * Prefixes to strip so the file's keys become the model's names: a wrapper prefix is stripped
 * when every key has it and no key already matches a model parameter as is.
 */
export function wrapperPrefixes(
  fileKeys: readonly string[],
  modelKeys: ReadonlySet<string>,
): string[] {
  const out: string[] = [];
  let keys = [...fileKeys];
  for (let round = 0; round < 4 && keys.length > 0; round++) {
    if (keys.some((k) => modelKeys.has(k))) break;
    const p = WRAPPER_PREFIXES.find((pre) => keys.every((k) => k.startsWith(pre)));
    if (p === undefined) break;
    out.push(p);
    keys = keys.map((k) => k.slice(p.length));
  }
  return out;
}

function stripAll(key: string, prefixes: readonly string[]): string {
  let k = key;
  for (const p of prefixes) if (k.startsWith(p)) k = k.slice(p.length);
  return k;
}

/** The orientation a checkpoint's metadata names, or null when it names none. */
export function checkpointOrientation(reader: WeightReader): TimestepOrientation | null {
  if (!(reader instanceof SafetensorsFile)) return null;
  const v = reader.metadata[ORIENTATION_METADATA_KEY];
  if (v === undefined) return null;
  if (v !== "original" && v !== "pretrained") {
    throw new Error(
      `${reader.path}: metadata ${ORIENTATION_METADATA_KEY} = "${v}" is not "original" or "pretrained"`,
    );
  }
  return v;
}

/** Where the weights of `ckptPath` are and which config.json describes them. */
async function locateCheckpoint(
  ckptPath: string,
  modelUnetConfig: string,
): Promise<{ weights: string; config: string; format: ScoreModelFormat }> {
  const st = await statOrNull(ckptPath);
  if (st === null) throw new Error(`${SETTING}: "${ckptPath}" does not exist`);
  if (st.isDirectory) {
    // A pipeline folder holds the UNet under unet/; a UNet folder holds config.json itself.
    const sub = join(ckptPath, "unet");
    const folder = (await statOrNull(join(sub, "config.json")))?.isFile ? sub : ckptPath;
    const own = join(folder, "config.json");
    const config = (await statOrNull(own))?.isFile ? own : modelUnetConfig;
    let weights: string;
    try {
      weights = await findWeights(folder);
    } catch (e) {
      throw new Error(`${SETTING}: ${(e as Error).message}`);
    }
    return { weights, config, format: "diffusers" };
  }
  const head = new Uint8Array(4);
  const f = await Deno.open(ckptPath, { read: true });
  let got = 0;
  try {
    while (got < 4) {
      const n = await f.read(head.subarray(got));
      if (n === null) break;
      got += n;
    }
  } finally {
    f.close();
  }
  const zip = got === 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 3 && head[3] === 4;
  return { weights: ckptPath, config: modelUnetConfig, format: zip ? "torch" : "safetensors" };
}

/**
 * Builds the score model and loads its weights as {@link ScoreModelOptions} say.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu } from "../gpu/device.ts";
 *
 * const gpu = await Gpu.open();
 * // the shipped student's EMA weights (as a run's score_model_s{step}.safetensors) on the
 * // teacher's UNet config
 * const sm = await loadScoreModel(gpu, {
 *   modelDir: "models/tiny_teacher",
 *   ckptPath: "models/tiny_student/unet/diffusion_pytorch_model.safetensors",
 *   loadPretrained: false,
 *   allowMissingKeys: false,
 *   seed: 2333,
 *   orientation: "original",
 * });
 * assert.equal(sm.format, "safetensors");
 * assert.equal(sm.orientationSource, "checkpoint metadata"); // the file says how it was trained
 * console.log(sm.notes.join("\n"), sm.orientation);
 * sm.unet.dispose();
 * ```
 */
export async function loadScoreModel(gpu: Gpu, opts: ScoreModelOptions): Promise<ScoreModel> {
  const modelUnetConfig = join(opts.modelDir, "unet", "config.json");
  const notes: string[] = [];
  if (opts.ckptPath === "") {
    notes.push("no resumed ckpt");
    const raw = await readJson(modelUnetConfig);
    const unet = UNet2DConditionModel.create(gpu, raw, opts.seed);
    if (!opts.loadPretrained) {
      notes.push(`totally random score model (built from ${modelUnetConfig}, seed ${opts.seed})`);
      return {
        unet,
        format: "fresh",
        weightsPath: null,
        configPath: modelUnetConfig,
        report: null,
        strippedPrefixes: [],
        orientation: opts.orientation,
        orientationSource: "config",
        notes,
      };
    }
    let weights: string;
    try {
      weights = await findWeights(join(opts.modelDir, "unet"));
    } catch (e) {
      unet.dispose();
      throw new Error(`config.diffusers.load_score_model: ${(e as Error).message}`);
    }
    notes.push(`use pretrained diffusers score model ${weights}`);
    try {
      return await loadInto(unet, weights, "pretrained", modelUnetConfig, opts, notes);
    } catch (e) {
      unet.dispose();
      throw e;
    }
  }
  const loc = await locateCheckpoint(opts.ckptPath, modelUnetConfig);
  const raw = await readJson(loc.config);
  let unet: UNet2DConditionModel;
  try {
    unet = UNet2DConditionModel.create(gpu, raw, opts.seed);
  } catch (e) {
    throw new Error(`${loc.config}: ${(e as Error).message}`);
  }
  notes.push(`load ckpt from ${loc.weights} (${loc.format}; UNet config ${loc.config})`);
  try {
    return await loadInto(unet, loc.weights, loc.format, loc.config, opts, notes);
  } catch (e) {
    unet.dispose();
    throw e;
  }
}

async function loadInto(
  unet: UNet2DConditionModel,
  weights: string,
  format: ScoreModelFormat,
  configPath: string,
  opts: ScoreModelOptions,
  notes: string[],
): Promise<ScoreModel> {
  let reader: WeightReader;
  try {
    reader = await openWeights(weights);
  } catch (e) {
    throw new Error(`${SETTING}: cannot read ${weights}: ${(e as Error).message}`);
  }
  try {
    const own = new Set(unet.namedParameters().map(([n]) => n));
    const prefixes = wrapperPrefixes(reader.keys(), own);
    if (prefixes.length) {
      notes.push(`stripped key prefix ${prefixes.map((p) => `"${p}"`).join(" + ")}`);
    }
    let report: LoadReport;
    try {
      report = await loadModule(unet, reader, {
        allowMissing: opts.allowMissingKeys,
        allowUnexpected: opts.allowMissingKeys,
        renameKey: prefixes.length ? (k) => stripAll(k, prefixes) : undefined,
      });
    } catch (e) {
      const hint = opts.allowMissingKeys
        ? ""
        : " (set config.sampling.allow_missing_keys=true to accept missing or unexpected keys)";
      throw new Error(
        `score model checkpoint does not fit the UNet config ${configPath}: ${
          (e as Error).message
        }${/missing|unexpected/.test((e as Error).message) ? hint : ""}`,
      );
    }
    if (report.missing.length) {
      notes.push(
        `${report.missing.length} parameter(s) missing from the checkpoint keep their initial values: ${
          report.missing.join(", ")
        }`,
      );
    }
    if (report.unexpected.length) {
      notes.push(
        `${report.unexpected.length} unexpected key(s) ignored: ${report.unexpected.join(", ")}`,
      );
    }
    const fromFile = checkpointOrientation(reader);
    const orientation = fromFile ?? opts.orientation;
    notes.push(
      `timestep orientation "${orientation}" (${
        fromFile ? "checkpoint metadata" : "config.training.timestep_orientation"
      })`,
    );
    return {
      unet,
      format,
      weightsPath: weights,
      configPath,
      report,
      strippedPrefixes: prefixes,
      orientation,
      orientationSource: fromFile ? "checkpoint metadata" : "config",
      notes,
    };
  } finally {
    reader.close();
  }
}
