/**
 * Loading a module's parameters by their checkpoint names from any {@link WeightReader}, tensor by
 * tensor, and the checks that come first (missing and unexpected keys, shapes). No file access
 * here, so it builds for the browser; load.ts adds the file-based helpers.
 *
 * @module
 */
import type { Module } from "../nn/module.ts";
import type { Tensor } from "../tensor/tensor.ts";
import type { TensorInfo, WeightReader } from "../io/weights.ts";

export interface LoadReport {
  loaded: number;
  missing: string[];
  unexpected: string[];
}

export interface LoadOptions {
  /** Allow parameters absent from the file (they keep their current values). */
  allowMissing?: boolean;
  /** Allow tensors in the file that the module does not have. */
  allowUnexpected?: boolean;
  /** Strip this prefix from file keys first (e.g. "module." from a DDP state dict). */
  stripPrefix?: string;
  /** Renames file keys (e.g. legacy VAE attention names) before matching. */
  renameKey?: (key: string) => string;
}

/** Which file key fills which parameter, found by {@link planLoad}. */
export interface LoadPlan {
  /** (parameter name, parameter, file key) for every parameter the file holds. */
  pairs: [string, Tensor, string][];
  missing: string[];
  unexpected: string[];
}

/**
 * Matches a module's parameters with a weight file's keys (prefix stripped, keys renamed) and
 * checks every shape before anything is written, so a bad file leaves the module untouched.
 * Throws naming `where` and the key on a shape mismatch, and on missing or unexpected keys unless
 * allowed.
 */
export function planLoad(
  module: Module,
  keys: readonly string[],
  info: (key: string) => TensorInfo,
  where: string,
  opts: LoadOptions = {},
): LoadPlan {
  const strip = opts.stripPrefix ?? "";
  const fileKeys = new Map<string, string>();
  for (const k of keys) {
    const s = strip && k.startsWith(strip) ? k.slice(strip.length) : k;
    fileKeys.set(opts.renameKey ? opts.renameKey(s) : s, k);
  }
  const params = module.namedParameters();
  const missing: string[] = [];
  const own = new Set<string>();
  const pairs: [string, Tensor, string][] = [];
  for (const [name, p] of params) {
    own.add(name);
    const fk = fileKeys.get(name);
    if (fk === undefined) {
      missing.push(name);
      continue;
    }
    const { shape } = info(fk);
    const same = shape.length === p.shape.length && shape.every((d, i) => d === p.shape[i]);
    // A 1x1 conv stored as a linear weight (or the reverse) is the same data.
    const sameData = shape.reduce((a, b) => a * b, 1) === p.size &&
      (shape.length === 2 || p.shape.length === 2) && shape[0] === p.shape[0];
    if (!same && !sameData) {
      throw new Error(
        `${where}: "${fk}" has shape [${shape}], the model expects [${p.shape}]`,
      );
    }
    pairs.push([name, p, fk]);
  }
  const unexpected = [...fileKeys.keys()].filter((k) => !own.has(k));
  // One error with both lists (as torch's strict load_state_dict): a renamed layer shows up as a
  // missing key plus an unexpected one, and the pair side by side explains it.
  const refuseMissing = missing.length > 0 && !opts.allowMissing;
  const refuseUnexpected = unexpected.length > 0 && !opts.allowUnexpected;
  if (refuseMissing || refuseUnexpected) {
    const list = (ks: string[]) =>
      `${ks.slice(0, 10).join(", ")}${ks.length > 10 ? `, ... (${ks.length} in all)` : ""}`;
    const parts: string[] = [];
    if (refuseMissing) {
      parts.push(`${missing.length} parameter(s) missing from the file: ${list(missing)}`);
    }
    if (refuseUnexpected) {
      // As the file names them (before prefix stripping and renames).
      const raw = unexpected.map((k) => fileKeys.get(k)!);
      parts.push(`${unexpected.length} unexpected key(s) the model does not have: ${list(raw)}`);
    }
    throw new Error(`${where}: ${parts.join("; ")}`);
  }
  return { pairs, missing, unexpected };
}

/** Copies every parameter of `module` from `reader`; throws on mismatches unless allowed. */
export async function loadModule(
  module: Module,
  reader: WeightReader,
  opts: LoadOptions = {},
): Promise<LoadReport> {
  const plan = planLoad(module, reader.keys(), (k) => reader.info(k), reader.path, opts);
  let loaded = 0;
  for (const [, p, fk] of plan.pairs) {
    const data = await reader.readF32(fk);
    p.gpu.write(p.buffer, 0, data);
    loaded++;
  }
  return { loaded, missing: plan.missing, unexpected: plan.unexpected };
}
