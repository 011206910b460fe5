/**
 * Loading and saving a module's parameters by their checkpoint names, tensor by tensor (a big file is
 * never held whole in host memory). Missing and unexpected keys are reported; a shape mismatch names
 * the key and both shapes.
 */
import type { Module } from "../nn/module.ts";
import { openWeights } from "../io/weights.ts";
import { loadModule, type LoadOptions, type LoadReport } from "./load_module.ts";
import { writeSafetensors } from "../io/safetensors.ts";
import { f32ToF16Bits } from "../io/half.ts";
import { readMany } from "../tensor/readback.ts";

export {
  loadModule,
  type LoadOptions,
  type LoadPlan,
  type LoadReport,
  planLoad,
} from "./load_module.ts";

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
