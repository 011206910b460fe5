/**
 * Shared helpers of the model tests: paths into tests/fixtures/models/ and typed readers of its
 * .npy and config files (made by tests/fixtures/models/make_model_refs.py, or copied from the
 * shared golden cases).
 */
import { fileURLToPath } from "node:url";
import { readNpy } from "../../core/data/npy.ts";

/** Absolute path of `rel` inside tests/fixtures/models/. */
export function fixturePath(rel: string): string {
  return fileURLToPath(new URL(`../fixtures/models/${rel}`, import.meta.url));
}

/** A float32 (or float64) .npy fixture as Float32Array plus its shape. */
export async function npyF32(rel: string): Promise<{ shape: number[]; data: Float32Array }> {
  const a = await readNpy(fixturePath(rel));
  if (a.dtype !== "<f4" && a.dtype !== "<f8") {
    throw new Error(`${rel}: dtype ${a.dtype}, want float`);
  }
  return { shape: a.shape, data: Float32Array.from(a.data as Float32Array | Float64Array) };
}

/** An integer .npy fixture (int32 or int64) as Int32Array plus its shape. */
export async function npyI32(rel: string): Promise<{ shape: number[]; data: Int32Array }> {
  const a = await readNpy(fixturePath(rel));
  if (a.dtype === "<i4") return { shape: a.shape, data: a.data as Int32Array };
  if (a.dtype === "<i8") {
    return { shape: a.shape, data: Int32Array.from(a.data as BigInt64Array, (v) => Number(v)) };
  }
  throw new Error(`${rel}: dtype ${a.dtype}, want int`);
}

/** A JSON fixture. */
export async function fixtureJson(rel: string): Promise<Record<string, unknown>> {
  return JSON.parse(await Deno.readTextFile(fixturePath(rel)));
}
