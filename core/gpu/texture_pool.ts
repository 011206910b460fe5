/// <reference types="@webgpu/types" />
/**
 * Pooled operand textures (rgba32float unless asked otherwise) for the texture-operand kernels
 * (matmul, conv2d, attention, sum). A texture
 * released after its last use was recorded can be reused at once: commands run in recording order,
 * so a later pack into it happens after the earlier read.
 */
import type { Gpu } from "./device.ts";

export interface PooledTexture {
  tex: GPUTexture;
  view: GPUTextureView;
  key: string;
}

export type TextureKind = "2d" | "2d-array" | "3d";

const pools = new WeakMap<Gpu, Map<string, PooledTexture[]>>();
/** Kept per size: enough for the operands of one op and its neighbours. */
const KEEP = 2;

export function acquireTexture(
  gpu: Gpu,
  kind: TextureKind,
  w: number,
  h: number,
  d: number,
  format: "rgba32float" | "rgba16float" = "rgba32float",
) {
  let pool = pools.get(gpu);
  if (!pool) pools.set(gpu, pool = new Map());
  const key = `${kind}:${format}:${w}x${h}x${d}`;
  const hit = pool.get(key)?.pop();
  if (hit) return hit;
  const tex = gpu.device.createTexture({
    size: [w, h, d],
    dimension: kind === "3d" ? "3d" : "2d",
    format,
    usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.STORAGE_BINDING |
      GPUTextureUsage.COPY_DST,
    label: `operand ${key}`,
  });
  return { tex, view: tex.createView({ dimension: kind }), key };
}

export function releaseTexture(gpu: Gpu, t: PooledTexture): void {
  const pool = pools.get(gpu)!;
  let list = pool.get(t.key);
  if (!list) pool.set(t.key, list = []);
  if (list.length < KEEP) list.push(t);
  else gpu.onSubmit(() => t.tex.destroy());
}

/** Destroys the pooled textures of `gpu` (after a phase with many one-off shapes). */
export function trimTextures(gpu: Gpu): void {
  const pool = pools.get(gpu);
  if (!pool) return;
  const all = [...pool.values()].flat();
  pool.clear();
  gpu.onSubmit(() => all.forEach((t) => t.tex.destroy()));
  gpu.flush();
}
