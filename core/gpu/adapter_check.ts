/**
 * The set-up's adapter check: which adapter Deno finds, what it can do, and whether that is enough
 * for the paths a caller requires. Judged by running the capability probes, never by the adapter's
 * name (Mesa's GL and Vulkan adapters are both "llvmpipe").
 *
 * @module
 */
import { Gpu, GpuError } from "./device.ts";

/** A kernel path the caller needs. */
export type RequiredPath = "texture" | "f16";

/** The check's verdict: `code` 0 all required paths work, 2 some are missing, 3 no adapter. */
export interface AdapterCheck {
  code: 0 | 2 | 3;
  line: string;
  description?: string;
  backend?: string;
  fallback?: boolean;
  paths?: { texture: boolean; f16: boolean };
  missing: string[];
}

/** Parses a `--require` value such as "texture,f16" (empty: nothing required). */
export function parseRequired(value: string | undefined): RequiredPath[] {
  const out: RequiredPath[] = [];
  for (const w of (value ?? "").split(",").map((s) => s.trim()).filter(Boolean)) {
    if (w !== "texture" && w !== "f16") {
      throw new Error(`--require: unknown path '${w}' (expected texture, f16)`);
    }
    out.push(w);
  }
  return out;
}

/** Opens the adapter, probes it and compares what it can do with `required`. */
export async function checkAdapter(required: RequiredPath[]): Promise<AdapterCheck> {
  let gpu: Gpu;
  try {
    gpu = await Gpu.open();
  } catch (e) {
    if (!(e instanceof GpuError)) throw e;
    return { code: 3, line: `no usable WebGPU adapter: ${e.message}`, missing: [e.message] };
  }
  const d = gpu.describe();
  gpu.destroy();
  const lacking = required.filter((p) => !d.paths[p]);
  const line = `WebGPU adapter: ${gpu.summary()}` +
    (lacking.length ? ` -- lacks ${lacking.join(", ")}: ${d.missing.join("; ")}` : "");
  return {
    code: lacking.length ? 2 : 0,
    line,
    description: d.description,
    backend: d.backend,
    fallback: d.fallback,
    paths: d.paths,
    missing: d.missing,
  };
}
