/**
 * Loading and saving a module's parameters by their checkpoint names, tensor by tensor (a big file is
 * never held whole in host memory). Missing and unexpected keys are reported; a shape mismatch names
 * the key and both shapes.
 */
import type { Module } from "../nn/module.ts";
import { openWeights, type WeightReader } from "../io/weights.ts";
import { writeSafetensors } from "../io/safetensors.ts";
import { f32ToF16Bits } from "../io/half.ts";
import { readMany } from "../tensor/readback.ts";

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

/** Copies every parameter of `module` from `reader`; throws on mismatches unless allowed. */
export async function loadModule(
  module: Module,
  reader: WeightReader,
  opts: LoadOptions = {},
): Promise<LoadReport> {
  const strip = opts.stripPrefix ?? "";
  const fileKeys = new Map<string, string>();
  for (const k of reader.keys()) {
    const s = strip && k.startsWith(strip) ? k.slice(strip.length) : k;
    fileKeys.set(opts.renameKey ? opts.renameKey(s) : s, k);
  }
  const params = module.namedParameters();
  const missing: string[] = [];
  const own = new Set<string>();
  // Check all shapes before writing anything, so a bad file leaves the module untouched.
  for (const [name, p] of params) {
    own.add(name);
    const fk = fileKeys.get(name);
    if (fk === undefined) {
      missing.push(name);
      continue;
    }
    const { shape } = reader.info(fk);
    const same = shape.length === p.shape.length && shape.every((d, i) => d === p.shape[i]);
    // A 1x1 conv stored as a linear weight (or the reverse) is the same data.
    const sameData = shape.reduce((a, b) => a * b, 1) === p.size &&
      (shape.length === 2 || p.shape.length === 2) && shape[0] === p.shape[0];
    if (!same && !sameData) {
      throw new Error(
        `${reader.path}: "${fk}" has shape [${shape}], the model expects [${p.shape}]`,
      );
    }
  }
  const unexpected = [...fileKeys.keys()].filter((k) => !own.has(k));
  if (missing.length && !opts.allowMissing) {
    throw new Error(
      `${reader.path}: ${missing.length} parameter(s) missing from the file: ` +
        `${missing.slice(0, 10).join(", ")}${missing.length > 10 ? ", ..." : ""}`,
    );
  }
  if (unexpected.length && !opts.allowUnexpected) {
    throw new Error(
      `${reader.path}: ${unexpected.length} unexpected key(s) the model does not have: ` +
        `${unexpected.slice(0, 10).join(", ")}${unexpected.length > 10 ? ", ..." : ""}`,
    );
  }
  let loaded = 0;
  for (const [name, p] of params) {
    const fk = fileKeys.get(name);
    if (fk === undefined) continue;
    const data = await reader.readF32(fk);
    p.gpu.write(p.buffer, 0, data);
    loaded++;
  }
  return { loaded, missing, unexpected };
}

/** Opens a weight file and loads it into `module`. */
export async function loadModuleFile(
  module: Module,
  path: string,
  opts: LoadOptions = {},
): Promise<LoadReport> {
  const reader = await openWeights(path);
  try {
    return await loadModule(module, reader, opts);
  } finally {
    reader.close();
  }
}

/** Reads every parameter back to the host, keyed by checkpoint name. */
export async function stateDict(module: Module): Promise<Map<string, Float32Array>> {
  const named = module.namedParameters();
  const values = await readMany(named.map(([, p]) => p));
  return new Map(named.map(([name], i) => [name, values[i]]));
}

/** Saves a module's parameters as safetensors with its checkpoint names (atomic). */
export async function saveModule(
  module: Module,
  path: string,
  opts: { dtype?: "F32" | "F16"; metadata?: Record<string, string> } = {},
): Promise<void> {
  const named = module.namedParameters();
  const values = await readMany(named.map(([, p]) => p));
  const tensors = named.map(([name, p], i) =>
    opts.dtype === "F16"
      ? { name, dtype: "F16" as const, shape: [...p.shape], data: f32ToF16Bits(values[i]) }
      : { name, dtype: "F32" as const, shape: [...p.shape], data: values[i] }
  );
  await writeSafetensors(path, tensors, { format: "pt", ...opts.metadata });
}

/**
 * Saves a UNet as a diffusers model folder: `config.json` (its resolved config, with diffusers'
 * `_class_name`) and `diffusion_pytorch_model.safetensors`, which `UNet2DConditionModel.
 * from_pretrained(folder)` loads. The folder appears only when complete.
 */
export async function saveUNetFolder(
  unet: Module & { config: Record<string, unknown> },
  dir: string,
  metadata: Record<string, string> = {},
): Promise<void> {
  const tmp = `${dir}.tmp-${Deno.pid}`;
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  await Deno.mkdir(tmp, { recursive: true });
  try {
    const config = { _class_name: "UNet2DConditionModel", ...unet.config };
    await Deno.writeTextFile(`${tmp}/config.json`, JSON.stringify(config, null, 2) + "\n");
    await saveModule(unet, `${tmp}/diffusion_pytorch_model.safetensors`, { metadata });
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.rename(tmp, dir);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
}
