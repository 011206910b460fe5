/**
 * Shared helpers for kernel launchers: WGSL headers per dtype, 1-D work split into a 2-D grid (to stay
 * under maxComputeWorkgroupsPerDimension), uniform packing, and argument checks that name the op.
 */
import type { Gpu } from "../gpu/device.ts";
import { GpuError } from "../gpu/errors.ts";
import type { DType, Tensor } from "../tensor/tensor.ts";

/** WGSL storage type for a dtype. */
export function wgslType(d: DType): string {
  return d === "f16" ? "f16" : d === "i32" ? "i32" : "f32";
}

/** `enable f16;` when any of the dtypes is f16. */
export function header(...dtypes: DType[]): string {
  return dtypes.includes("f16") ? "enable f16;\n" : "";
}

/** Workgroup counts covering `n` threads of `wg` per group, folded into 2-D when needed. */
export function grid1d(gpu: Gpu, n: number, wg: number): [number, number] {
  const groups = Math.ceil(n / wg);
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (groups <= max) return [Math.max(groups, 1), 1];
  const y = Math.ceil(groups / max);
  return [Math.ceil(groups / y), y];
}

/** WGSL snippet: the linear thread index for a {@link grid1d} dispatch with workgroup size `wg`. */
export function linearIndex(wg: number): string {
  return `gid.x + gid.y * (nwg.x * ${wg}u)`;
}

/** The builtins a {@link linearIndex} kernel entry point takes. */
export const GRID_ARGS =
  "@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>";

/** Packs uniforms: integers as u32 (negative as i32 bits), or explicit f32 via {@link f32u}. */
export function packUniforms(values: (number | { f32: number })[]): Uint32Array {
  const n = Math.max(4, Math.ceil(values.length / 4) * 4);
  const u = new Uint32Array(n);
  const f = new Float32Array(u.buffer);
  values.forEach((v, i) => {
    if (typeof v === "number") u[i] = v >>> 0;
    else f[i] = v.f32;
  });
  return u;
}

/** Marks a uniform as f32. */
export function f32u(v: number): { f32: number } {
  return { f32: v };
}

/** Throws unless every tensor lives on `gpu`, is not released, and has one of `dtypes`. */
export function checkArgs(op: string, tensors: Tensor[], dtypes?: DType[]): Gpu {
  const gpu = tensors[0].gpu;
  for (const t of tensors) {
    if (t.gpu !== gpu) throw new GpuError(`${op}: tensors live on different devices`);
    if (t.isDisposed) throw new GpuError(`${op}: ${t} used after release`);
    if (dtypes && !dtypes.includes(t.dtype)) {
      throw new GpuError(`${op}: dtype ${t.dtype} not supported (expects ${dtypes.join("/")})`);
    }
  }
  return gpu;
}

/** Throws unless all tensors share one dtype; returns it. */
export function sameDtype(op: string, tensors: Tensor[]): DType {
  const d = tensors[0].dtype;
  for (const t of tensors) {
    if (t.dtype !== d) {
      throw new GpuError(`${op}: dtype mismatch (${tensors.map((x) => x.dtype).join(" vs ")})`);
    }
  }
  return d;
}

/** Normalises a possibly negative axis. */
export function axisIndex(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new GpuError(`${op}: axis ${axis} out of range for rank ${rank}`);
  return a;
}

/** Row-major strides of a shape. */
export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1] * shape[i + 1];
  return s;
}
