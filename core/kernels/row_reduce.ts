/**
 * Shared pieces of the row-wise normalisation kernels (softmax, LayerNorm, GroupNorm): a WGSL
 * workgroup tree reduction and a row grid that folds many rows into 2-D dispatches.
 */
import type { Gpu } from "../gpu/device.ts";

/** Threads per row in the row-wise kernels: rows are short (<= a few thousand), many rows run at once. */
export const ROW_WG = 64;

/**
 * WGSL for `wgSum(v, li)` and `wgMax(v, li)`: reductions over a workgroup of `wg` threads (a power of
 * two). Every thread gets the result. Call from uniform control flow only (they contain barriers).
 */
export function wgReduceWgsl(wg: number = ROW_WG): string {
  const fn = (name: string, combine: string) => `
fn ${name}(v: f32, li: u32) -> f32 {
  red_[li] = v;
  workgroupBarrier();
  for (var s = ${wg / 2}u; s > 0u; s = s >> 1u) {
    if (li < s) { red_[li] = ${combine}; }
    workgroupBarrier();
  }
  let r = red_[0];
  // A second barrier so the next reduction may overwrite red_ safely.
  workgroupBarrier();
  return r;
}`;
  return `var<workgroup> red_: array<f32, ${wg}>;
${fn("wgSum", "red_[li] + red_[li + s]")}
${fn("wgMax", "max(red_[li], red_[li + s])")}`;
}

/** Entry-point builtins of a one-workgroup-per-row kernel. */
export const ROW_ARGS = "@builtin(workgroup_id) wid: vec3<u32>, " +
  "@builtin(local_invocation_index) li: u32, @builtin(num_workgroups) nwg: vec3<u32>";

/** WGSL expression: the row index of a {@link rowGrid} dispatch. */
export const ROW_INDEX = "wid.x + wid.y * nwg.x";

/** Workgroup counts for one workgroup per row, folded into 2-D past the per-dimension limit. */
export function rowGrid(gpu: Gpu, rows: number): [number, number] {
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (rows <= max) return [Math.max(rows, 1), 1];
  const y = Math.ceil(rows / max);
  return [Math.ceil(rows / y), y];
}

/** The WGSL literal used as minus infinity (WGSL has no infinity literal). */
export const NEG_BIG = "-3.0e38";

/** One storage binding: [name, access, WGSL element type]. */
export type Binding = [string, "read" | "read_write", string];

/**
 * Storage binding declarations from @binding(1) in order (binding 0 is the uniform). Optional
 * operands are left out of the list, so the auto layout and the bound buffers always agree.
 */
export function storageBindings(list: (Binding | null)[]): string {
  return list.filter((b): b is Binding => b !== null).map(([n, a, t], i) =>
    `@group(0) @binding(${i + 1}) var<storage, ${a}> ${n}: array<${t}>;`
  ).join("\n");
}
