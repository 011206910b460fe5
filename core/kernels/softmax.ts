/**
 * Softmax over the last axis, numerically stable (the row maximum is subtracted before exp), with
 * its backward dx = y * (g - sum(g * y)). A segment of {@link rowThreads} threads per row (one thread
 * for short rows, up to a workgroup for long ones; see row_reduce.ts). Rows of up to MAX_REGS
 * elements per thread are read once into registers (a pipeline variant per row length), longer ones
 * loop over memory. f32 or f16 storage, f32 arithmetic.
 */
import { GpuError } from "../gpu/errors.ts";
import { record } from "../tensor/autograd.ts";
import { keep } from "../tensor/scope.ts";
import { Tensor } from "../tensor/tensor.ts";
import { checkArgs, header, packUniforms, sameDtype, wgslType } from "./common.ts";
import { bindings, uniformBinding } from "./bindings.ts";
import {
  MAX_REGS,
  NEG_BIG,
  ROW_ARGS,
  ROW_WG,
  rowRegisters,
  rowThreads,
  segGrid,
  segIndex,
  segReduceWgsl,
  sumWgsl,
  treeWgsl,
} from "./row_reduce.ts";

const WG = ROW_WG;

/** WGSL: `ok` (the row exists), `base` and `end` of this thread's row (empty past the last row). */
const ROW_RANGE = `let ok = row < u.rows;
  let base = select(0u, row, ok) * u.cols;
  let end = select(base, base + u.cols, ok);`;

/** WGSL: `ok` and `base` (including the lane) of this thread's row, for the register variants. */
const regBase = (cols: number) =>
  `let ok = row < u.rows;
  let base = select(0u, row, ok) * ${cols}u + lane;`;

/** Forward with the row in registers: one read of x, one exp per element. */
function forwardRegisters(T: string, cols: number, tpr: number): string {
  const v = rowRegisters("v", "x", cols, tpr, { fill: NEG_BIG });
  const ks = Array.from({ length: v.count }, (_, k) => k);
  return `${regBase(cols)}
  ${v.wgsl}
  let m = segMax(${treeWgsl(ks.map((k) => `v${k}`), (a, b) => `max(${a}, ${b})`)}, li);
  ${ks.map((k) => `let e${k} = exp(v${k} - m);`).join("\n  ")}
  let inv = 1.0 / segSum(${sumWgsl(ks.map((k) => `e${k}`))}, li);
  ${
    ks.map((k) => `if (${v.valid(k)}) { y[base + ${k * tpr}u] = ${T}(e${k} * inv); }`).join("\n  ")
  }`;
}

/** Backward with the rows of y and g in registers: one read of each. */
function backwardRegisters(T: string, cols: number, tpr: number): string {
  const yr = rowRegisters("yv", "y", cols, tpr), gr = rowRegisters("gv", "g", cols, tpr);
  const ks = Array.from({ length: yr.count }, (_, k) => k);
  return `${regBase(cols)}
  ${yr.wgsl}
  ${gr.wgsl}
  let dot = segSum(${sumWgsl(ks.map((k) => `gv${k} * yv${k}`))}, li);
  ${
    ks.map((k) => `if (${yr.valid(k)}) { dx[base + ${k * tpr}u] = ${T}(yv${k} * (gv${k} - dot)); }`)
      .join("\n  ")
  }`;
}

function forwardKernel(x: Tensor): Tensor {
  const gpu = x.gpu;
  const T = wgslType(x.dtype);
  const cols = x.shape[x.shape.length - 1];
  const rows = x.size / cols;
  const tpr = rowThreads(cols);
  const regs = Math.ceil(cols / tpr) <= MAX_REGS;
  const k = gpu.kernel("softmax", `${T}|${tpr}|${regs ? cols : 0}`, () =>
    `${header(x.dtype)}
struct U { rows: u32, cols: u32 };
${uniformBinding()}
${bindings([["x", "read", T], ["y", "read_write", T]])}
${segReduceWgsl(tpr)}
@compute @workgroup_size(${WG})
fn main(${ROW_ARGS}) {
  ${segIndex(tpr)}
  ${
      regs ? forwardRegisters(T, cols, tpr) : `${ROW_RANGE}
  var m = ${NEG_BIG};
  for (var i = base + lane; i < end; i += ${tpr}u) { m = max(m, f32(x[i])); }
  m = segMax(m, li);
  var s = 0.0;
  for (var i = base + lane; i < end; i += ${tpr}u) { s += exp(f32(x[i]) - m); }
  let inv = 1.0 / segSum(s, li);
  for (var i = base + lane; i < end; i += ${tpr}u) { y[i] = ${T}(exp(f32(x[i]) - m) * inv); }`
    }
}`);
  const out = Tensor.empty(gpu, x.shape, x.dtype);
  gpu.dispatch(k, [x.buffer, out.buffer], packUniforms([rows, cols]), segGrid(gpu, rows, tpr));
  return out;
}

/** dx = y * (g - sum_j g_j y_j) per row. Records nothing. */
export function softmaxBackward(y: Tensor, g: Tensor): Tensor {
  const gpu = checkArgs("softmax_backward", [y, g], ["f32", "f16"]);
  const dt = sameDtype("softmax_backward", [y, g]);
  const T = wgslType(dt);
  const cols = y.shape[y.shape.length - 1];
  const rows = y.size / cols;
  const tpr = rowThreads(cols);
  const regs = Math.ceil(cols / tpr) <= MAX_REGS;
  const k = gpu.kernel("softmax_backward", `${T}|${tpr}|${regs ? cols : 0}`, () =>
    `${header(dt)}
struct U { rows: u32, cols: u32 };
${uniformBinding()}
${bindings([["y", "read", T], ["g", "read", T], ["dx", "read_write", T]])}
${segReduceWgsl(tpr)}
@compute @workgroup_size(${WG})
fn main(${ROW_ARGS}) {
  ${segIndex(tpr)}
  ${
      regs ? backwardRegisters(T, cols, tpr) : `${ROW_RANGE}
  var s = 0.0;
  for (var i = base + lane; i < end; i += ${tpr}u) { s += f32(g[i]) * f32(y[i]); }
  let dot = segSum(s, li);
  for (var i = base + lane; i < end; i += ${tpr}u) { dx[i] = ${T}(f32(y[i]) * (f32(g[i]) - dot)); }`
    }
}`);
  const out = Tensor.empty(gpu, y.shape, dt);
  const groups = segGrid(gpu, rows, tpr);
  gpu.dispatch(k, [y.buffer, g.buffer, out.buffer], packUniforms([rows, cols]), groups);
  return out;
}

/**
 * Softmax over the last axis: y_j = exp(x_j - max x) / sum_k exp(x_k - max x).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 *
 * const gpu = await Gpu.open();
 * const logits = Tensor.from(gpu, [0, 0, Math.log(3), 5, 5, 5], [1, 2, 3]); // [B, N, K]
 * const p = await softmax(logits).toF32(); // probabilities over K
 * const want = [0.2, 0.2, 0.6, 1 / 3, 1 / 3, 1 / 3];
 * assert.ok(want.every((w, i) => Math.abs(p[i] - w) < 1e-6));
 * ```
 */
export function softmax(x: Tensor): Tensor {
  checkArgs("softmax", [x], ["f32", "f16"]);
  if (x.shape.length === 0 || x.shape[x.shape.length - 1] === 0) {
    throw new GpuError(`softmax: needs a non-empty last axis, got shape [${x.shape}]`);
  }
  const out = forwardKernel(x);
  // The backward needs only the output; keep an alias of it (not of x).
  const sy = keep(out.alias());
  return record("softmax", out, [x], (g) => [softmaxBackward(sy, g)], [sy]);
}
