/**
 * LayerNorm over the last axis with optional per-feature weight and bias (PyTorch semantics: biased
 * variance, eps inside the square root). A segment of {@link rowThreads} threads per row (see
 * row_reduce.ts) computes the mean, then the variance about it (two passes: over registers for rows
 * of up to MAX_REGS elements per thread, which are read once, else over the row in cache), and
 * saves mean and 1/std for backward.
 * Backward: dx per row with one segment reduction (of both sums at once); dweight/dbias as column
 * sums over row chunks (partials in f32, then a final sum), so many rows still spread over many
 * workgroups.
 */
import { GpuError } from "../gpu/errors.ts";
import { record, save } from "../tensor/autograd.ts";
import { keep } from "../tensor/scope.ts";
import type { DType } from "../tensor/tensor.ts";
import { Tensor } from "../tensor/tensor.ts";
import { checkArgs, f32u, header, packUniforms, wgslType } from "./common.ts";
import { bindings, uniformBinding } from "./bindings.ts";
import {
  MAX_REGS,
  meanM2Wgsl,
  ROW_ARGS,
  ROW_WG,
  rowRegisters,
  rowThreads,
  segGrid,
  segIndex,
  segReduceWgsl,
  sumWgsl,
} from "./row_reduce.ts";

const WG = ROW_WG;
/** Threads per workgroup (one per column) in the weight/bias gradient kernels. */
const COL_WG = 64;

interface Affine {
  w: Tensor | null;
  b: Tensor | null;
}

function forward(x: Tensor, aff: Affine, eps: number): { y: Tensor; stats: Tensor } {
  const gpu = x.gpu;
  const T = wgslType(x.dtype);
  const W = wgslType(aff.w?.dtype ?? aff.b?.dtype ?? "f32");
  const hw = aff.w !== null, hb = aff.b !== null;
  const dts: DType[] = [x.dtype, aff.w?.dtype ?? "f32", aff.b?.dtype ?? "f32"];
  const cols = x.shape[x.shape.length - 1];
  const rows = x.size / cols;
  const tpr = rowThreads(cols);
  const regs = Math.ceil(cols / tpr) <= MAX_REGS;
  const out = (v: string, j: string, i: string) =>
    `var v = ${v};
    ${hw ? `v = v * f32(w[${j}]);` : ""}
    ${hb ? `v = v + f32(b[${j}]);` : ""}
    y[${i}] = ${T}(v);`;
  const body = () => {
    if (!regs) {
      return `let rb = select(0u, row, ok) * u.cols;
  let end = select(rb, rb + u.cols, ok);
  let n = f32(u.cols);
  var s = 0.0;
  for (var i = rb + lane; i < end; i += ${tpr}u) { s += f32(x[i]); }
  let mean = segSum(s, li) / n;
  var q = 0.0;
  for (var i = rb + lane; i < end; i += ${tpr}u) { let d = f32(x[i]) - mean; q += d * d; }
  let rstd = inverseSqrt(segSum(q, li) / n + u.eps);
  for (var i = rb + lane; i < end; i += ${tpr}u) {
    ${out("(f32(x[i]) - mean) * rstd", "i - rb", "i")}
  }`;
    }
    const r = rowRegisters("x", "x", cols, tpr);
    const ks = Array.from({ length: r.count }, (_, k) => k);
    return `let base = select(0u, row, ok) * ${cols}u + lane;
  ${r.wgsl}
  ${meanM2Wgsl("x", r.count, r.valid, cols)}
  let rstd = inverseSqrt(m2 / ${cols}.0 + u.eps);
  ${
      ks.map((k) =>
        `if (${r.valid(k)}) {
    ${out(`(x${k} - mean) * rstd`, `lane + ${k * tpr}u`, `base + ${k * tpr}u`)}
  }`
      ).join("\n  ")
    }`;
  };
  const k = gpu.kernel(
    "layer_norm",
    `${T}|${W}|${hw}|${hb}|${tpr}|${regs ? cols : 0}`,
    () =>
      `${header(...dts)}
struct U { rows: u32, cols: u32, eps: f32 };
${uniformBinding()}
${
        bindings([
          ["x", "read", T],
          hw ? ["w", "read", W] : null,
          hb ? ["b", "read", W] : null,
          ["y", "read_write", T],
          ["stats", "read_write", "f32"],
        ])
      }
${segReduceWgsl(tpr)}
@compute @workgroup_size(${WG})
fn main(${ROW_ARGS}) {
  ${segIndex(tpr)}
  let ok = row < u.rows;
  ${body()}
  if (ok && lane == 0u) {
    stats[2u * row] = mean;
    stats[2u * row + 1u] = rstd;
  }
}`,
  );
  const y = Tensor.empty(gpu, x.shape, x.dtype);
  const stats = Tensor.empty(gpu, [rows, 2], "f32");
  const bufs = [x.buffer];
  if (aff.w) bufs.push(aff.w.buffer);
  if (aff.b) bufs.push(aff.b.buffer);
  bufs.push(y.buffer, stats.buffer);
  gpu.dispatch(k, bufs, packUniforms([rows, cols, f32u(eps)]), segGrid(gpu, rows, tpr));
  return { y, stats };
}

/** dx = rstd * (g w - mean(g w) - xhat * mean(g w xhat)) per row. */
function backwardX(x: Tensor, w: Tensor | null, stats: Tensor, g: Tensor): Tensor {
  const gpu = x.gpu;
  const T = wgslType(x.dtype);
  const W = wgslType(w?.dtype ?? "f32");
  const hw = w !== null;
  const cols = x.shape[x.shape.length - 1];
  const rows = x.size / cols;
  const tpr = rowThreads(cols);
  const regs = Math.ceil(cols / tpr) <= MAX_REGS;
  const body = () => {
    if (!regs) {
      return `let rb = r * u.cols;
  let end = select(rb, rb + u.cols, ok);
  var t = vec2<f32>(0.0);
  for (var i = rb + lane; i < end; i += ${tpr}u) {
    let gw = f32(g[i])${hw ? " * f32(w[i - rb])" : ""};
    t += vec2<f32>(gw, gw * (f32(x[i]) - mean) * rstd);
  }
  let ab = segSum2(t, li) / f32(u.cols);
  for (var i = rb + lane; i < end; i += ${tpr}u) {
    let gw = f32(g[i])${hw ? " * f32(w[i - rb])" : ""};
    let xh = (f32(x[i]) - mean) * rstd;
    dx[i] = ${T}(rstd * (gw - ab.x - xh * ab.y));
  }`;
    }
    const rx = rowRegisters("x", "x", cols, tpr), rg = rowRegisters("g", "g", cols, tpr);
    const rw = rowRegisters("w", "w", cols, tpr, { base: "lane" });
    const ks = Array.from({ length: rx.count }, (_, k) => k);
    return `let base = r * ${cols}u + lane;
  ${rx.wgsl}
  ${rg.wgsl}
  ${hw ? rw.wgsl : ""}
  ${ks.map((k) => `let gw${k} = g${k}${hw ? ` * w${k}` : ""};`).join("\n  ")}
  ${ks.map((k) => `let xh${k} = (x${k} - mean) * rstd;`).join("\n  ")}
  let ab = segSum2(${sumWgsl(ks.map((k) => `vec2<f32>(gw${k}, gw${k} * xh${k})`))}, li) / ${cols}.0;
  ${
      ks.map((k) =>
        `if (${rx.valid(k)}) { dx[base + ${
          k * tpr
        }u] = ${T}(rstd * (gw${k} - ab.x - xh${k} * ab.y)); }`
      ).join("\n  ")
    }`;
  };
  const k = gpu.kernel(
    "layer_norm_backward_x",
    `${T}|${W}|${hw}|${tpr}|${regs ? cols : 0}`,
    () =>
      `${header(x.dtype, w?.dtype ?? "f32")}
struct U { rows: u32, cols: u32 };
${uniformBinding()}
${
        bindings([
          ["x", "read", T],
          hw ? ["w", "read", W] : null,
          ["stats", "read", "f32"],
          ["g", "read", T],
          ["dx", "read_write", T],
        ])
      }
${segReduceWgsl(tpr)}
@compute @workgroup_size(${WG})
fn main(${ROW_ARGS}) {
  ${segIndex(tpr)}
  let ok = row < u.rows;
  let r = select(0u, row, ok);
  let mean = stats[2u * r];
  let rstd = stats[2u * r + 1u];
  ${body()}
}`,
  );
  const dx = Tensor.empty(gpu, x.shape, x.dtype);
  const bufs = [x.buffer, ...(w ? [w.buffer] : []), stats.buffer, g.buffer, dx.buffer];
  gpu.dispatch(k, bufs, packUniforms([rows, cols]), segGrid(gpu, rows, tpr));
  return dx;
}

/** dweight = sum_rows g * xhat, dbias = sum_rows g, in the weight's dtype. */
function backwardAffine(
  x: Tensor,
  stats: Tensor,
  g: Tensor,
  wd: DType,
): { dw: Tensor; db: Tensor } {
  const gpu = x.gpu;
  const T = wgslType(x.dtype);
  const W = wgslType(wd);
  const cols = x.shape[x.shape.length - 1];
  const rows = x.size / cols;
  // Enough row chunks to fill the GPU, each long enough to amortise its partial write.
  const chunk = Math.max(16, Math.ceil(rows / 256));
  const chunks = Math.ceil(rows / chunk);
  const part = Tensor.empty(gpu, [chunks, 2, cols], "f32");
  const kp = gpu.kernel("layer_norm_backward_wb_partial", T, () =>
    `${header(x.dtype)}
struct U { rows: u32, cols: u32, chunk: u32 };
${uniformBinding()}
${
      bindings([["x", "read", T], ["stats", "read", "f32"], ["g", "read", T], [
        "part",
        "read_write",
        "f32",
      ]])
    }
@compute @workgroup_size(${COL_WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let c = gid.x;
  if (c >= u.cols) { return; }
  let r0 = wid.y * u.chunk;
  let r1 = min(r0 + u.chunk, u.rows);
  var sw = 0.0;
  var sb = 0.0;
  for (var r = r0; r < r1; r++) {
    let gv = f32(g[r * u.cols + c]);
    sw += gv * (f32(x[r * u.cols + c]) - stats[2u * r]) * stats[2u * r + 1u];
    sb += gv;
  }
  part[(wid.y * 2u) * u.cols + c] = sw;
  part[(wid.y * 2u + 1u) * u.cols + c] = sb;
}`);
  gpu.dispatch(
    kp,
    [x.buffer, stats.buffer, g.buffer, part.buffer],
    packUniforms([rows, cols, chunk]),
    [Math.ceil(cols / COL_WG), chunks],
  );
  const dw = Tensor.empty(gpu, [cols], wd);
  const db = Tensor.empty(gpu, [cols], wd);
  sumChunks(part, chunks, cols, W, wd, dw, db);
  part.dispose();
  return { dw, db };
}

/** Sums [chunks, 2, cols] f32 partials into dw (row 0) and db (row 1). */
function sumChunks(
  part: Tensor,
  chunks: number,
  cols: number,
  W: string,
  wd: DType,
  dw: Tensor,
  db: Tensor,
): void {
  const gpu = part.gpu;
  const k = gpu.kernel("layer_norm_backward_wb_sum", W, () =>
    `${header(wd)}
struct U { chunks: u32, cols: u32 };
${uniformBinding()}
${bindings([["part", "read", "f32"], ["dw", "read_write", W], ["db", "read_write", W]])}
@compute @workgroup_size(${COL_WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= u.cols) { return; }
  var sw = 0.0;
  var sb = 0.0;
  // Over partial indices, not 0..chunks: lavapipe inlines uniforms bounding a constant-start loop,
  // unrolls it and recompiles the shader at every dispatch.
  let stride = 2u * u.cols;
  let end = c + stride * u.chunks;
  for (var i = c; i < end; i += stride) {
    sw += part[i];
    sb += part[i + u.cols];
  }
  dw[c] = ${W}(sw);
  db[c] = ${W}(sb);
}`);
  gpu.dispatch(
    k,
    [part.buffer, dw.buffer, db.buffer],
    packUniforms([chunks, cols]),
    [Math.ceil(cols / COL_WG)],
  );
}

/**
 * LayerNorm over the last axis: y = (x - mean) / sqrt(var + eps) * weight + bias, with the biased
 * variance (as `torch.nn.functional.layer_norm`). `weight` and `bias` are [C] or null.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 *
 * const gpu = await Gpu.open();
 * const h = Tensor.from(gpu, [1, 2, 3, 4, -1, 0, 0, 1], [1, 2, 4]); // [B, L, C]
 * const weight = Tensor.from(gpu, [1, 1, 1, 1], [4]), bias = Tensor.from(gpu, [0, 0, 0, 0], [4]);
 * const y = await layerNorm(h, weight, bias, 1e-5).toF32();
 * for (const row of [y.subarray(0, 4), y.subarray(4, 8)]) { // each row: mean 0, variance 1
 *   assert.ok(Math.abs(row.reduce((a, b) => a + b)) < 1e-5);
 *   assert.ok(Math.abs(row.reduce((a, b) => a + b * b, 0) / 4 - 1) < 1e-3);
 * }
 * ```
 */
export function layerNorm(
  x: Tensor,
  weight: Tensor | null = null,
  bias: Tensor | null = null,
  eps = 1e-5,
): Tensor {
  const w = weight ?? null, b = bias ?? null;
  const all = [x, ...(w ? [w] : []), ...(b ? [b] : [])];
  checkArgs("layer_norm", all, ["f32", "f16"]);
  const cols = x.shape[x.shape.length - 1];
  const desc = () =>
    `x [${x.shape}]${w ? `, weight [${w.shape}]` : ""}${b ? `, bias [${b.shape}]` : ""}`;
  if (x.shape.length === 0 || cols === 0) {
    throw new GpuError(`layer_norm: needs a non-empty last axis (${desc()})`);
  }
  for (const p of [w, b]) {
    if (p && (p.shape.length !== 1 || p.shape[0] !== cols)) {
      throw new GpuError(`layer_norm: weight and bias must have shape [${cols}] (${desc()})`);
    }
  }
  if (w && b && w.dtype !== b.dtype) {
    throw new GpuError(`layer_norm: weight and bias dtypes differ (${w.dtype} vs ${b.dtype})`);
  }
  const { y, stats } = forward(x, { w, b }, eps);
  const sx = save(x);
  const sw = w ? save(w) : null;
  const st = keep(stats);
  const saved = [sx, st, ...(sw ? [sw] : [])];
  return record("layer_norm", y, [x, w, b], (g) => {
    const dx = x.requiresGrad ? backwardX(sx, sw, st, g) : null;
    let dw: Tensor | null = null, db: Tensor | null = null;
    if (w?.requiresGrad || b?.requiresGrad) {
      const r = backwardAffine(sx, st, g, (w ?? b)!.dtype);
      dw = w?.requiresGrad ? r.dw : (r.dw.dispose(), null);
      db = b?.requiresGrad ? r.db : (r.db.dispose(), null);
    }
    return [dx, dw, db];
  }, saved);
}
