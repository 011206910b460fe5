/**
 * LayerNorm over the last axis with optional per-feature weight and bias (PyTorch semantics: biased
 * variance, eps inside the square root). One workgroup per row computes the mean, then the variance
 * about it (two passes over the row, which stays in cache), and saves mean and 1/std for backward.
 * Backward: dx per row with a workgroup reduction; dweight/dbias as column sums over row chunks
 * (partials in f32, then a final sum), so many rows still spread over many workgroups.
 */
import { GpuError } from "../gpu/errors.ts";
import { record, save } from "../tensor/autograd.ts";
import { keep } from "../tensor/scope.ts";
import type { DType } from "../tensor/tensor.ts";
import { Tensor } from "../tensor/tensor.ts";
import {
  checkArgs,
  f32u,
  grid1d,
  GRID_ARGS,
  header,
  linearIndex,
  packUniforms,
  wgslType,
} from "./common.ts";
import {
  ROW_ARGS,
  ROW_INDEX,
  ROW_WG,
  rowGrid,
  storageBindings as bindings,
  wgReduceWgsl,
} from "./row_reduce.ts";

const WG = ROW_WG;
/** Rows up to this long take the thread-per-row kernels. */
const SMALL_ROW = 128;
/** The thread-per-row variant: `li` is 0 so the shared code's "first thread writes" holds. */
const SMALL_ARGS = GRID_ARGS;
const SMALL_INDEX = `${linearIndex(WG)}; let li = 0u`;
/** In the thread-per-row variant a row's sum is the thread's own sum. */
const SMALL_SUM = "fn wgSum(v: f32, li: u32) -> f32 { return v; }";
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
  // Short rows: one thread per row, no barriers (a workgroup per row would idle and synchronise).
  const small = cols <= SMALL_ROW;
  const k = gpu.kernel("layer_norm", `${T}|${W}|${hw}|${hb}|${small}`, () =>
    `${header(...dts)}
struct U { rows: u32, cols: u32, eps: f32 };
@group(0) @binding(0) var<uniform> u: U;
${
      bindings([
        ["x", "read", T],
        hw ? ["w", "read", W] : null,
        hb ? ["b", "read", W] : null,
        ["y", "read_write", T],
        ["stats", "read_write", "f32"],
      ])
    }
${small ? SMALL_SUM : wgReduceWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(${small ? SMALL_ARGS : ROW_ARGS}) {
  let row = ${small ? SMALL_INDEX : ROW_INDEX};
  if (row >= u.rows) { return; }
  let base = row * u.cols;
  let n = f32(u.cols);
  var s = 0.0;
  for (var j = li; j < u.cols; j += ${small ? 1 : WG}u) { s += f32(x[base + j]); }
  let mean = wgSum(s, li) / n;
  var q = 0.0;
  for (var j = li; j < u.cols; j += ${
      small ? 1 : WG
    }u) { let d = f32(x[base + j]) - mean; q += d * d; }
  let rstd = inverseSqrt(wgSum(q, li) / n + u.eps);
  for (var j = li; j < u.cols; j += ${small ? 1 : WG}u) {
    var v = (f32(x[base + j]) - mean) * rstd;
    ${hw ? "v = v * f32(w[j]);" : ""}
    ${hb ? "v = v + f32(b[j]);" : ""}
    y[base + j] = ${T}(v);
  }
  if (li == 0u) { stats[2u * row] = mean; stats[2u * row + 1u] = rstd; }
}`);
  const y = Tensor.empty(gpu, x.shape, x.dtype);
  const stats = Tensor.empty(gpu, [rows, 2], "f32");
  const bufs = [x.buffer];
  if (aff.w) bufs.push(aff.w.buffer);
  if (aff.b) bufs.push(aff.b.buffer);
  bufs.push(y.buffer, stats.buffer);
  const groups = small ? grid1d(gpu, rows, WG) : rowGrid(gpu, rows);
  gpu.dispatch(k, bufs, packUniforms([rows, cols, f32u(eps)]), groups);
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
  const small = cols <= SMALL_ROW;
  const k = gpu.kernel(
    "layer_norm_backward_x",
    `${T}|${W}|${hw}|${small}`,
    () =>
      `${header(x.dtype, w?.dtype ?? "f32")}
struct U { rows: u32, cols: u32 };
@group(0) @binding(0) var<uniform> u: U;
${
        bindings([
          ["x", "read", T],
          hw ? ["w", "read", W] : null,
          ["stats", "read", "f32"],
          ["g", "read", T],
          ["dx", "read_write", T],
        ])
      }
${small ? SMALL_SUM : wgReduceWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(${small ? SMALL_ARGS : ROW_ARGS}) {
  let row = ${small ? SMALL_INDEX : ROW_INDEX};
  if (row >= u.rows) { return; }
  let base = row * u.cols;
  let mean = stats[2u * row];
  let rstd = stats[2u * row + 1u];
  var sa = 0.0;
  var sb = 0.0;
  for (var j = li; j < u.cols; j += ${small ? 1 : WG}u) {
    let gw = f32(g[base + j])${hw ? " * f32(w[j])" : ""};
    sa += gw;
    sb += gw * (f32(x[base + j]) - mean) * rstd;
  }
  let n = f32(u.cols);
  let a = wgSum(sa, li) / n;
  let b = wgSum(sb, li) / n;
  for (var j = li; j < u.cols; j += ${small ? 1 : WG}u) {
    let gw = f32(g[base + j])${hw ? " * f32(w[j])" : ""};
    let xh = (f32(x[base + j]) - mean) * rstd;
    dx[base + j] = ${T}(rstd * (gw - a - xh * b));
  }
}`,
  );
  const dx = Tensor.empty(gpu, x.shape, x.dtype);
  const bufs = [x.buffer, ...(w ? [w.buffer] : []), stats.buffer, g.buffer, dx.buffer];
  const groups = small ? grid1d(gpu, rows, WG) : rowGrid(gpu, rows);
  gpu.dispatch(k, bufs, packUniforms([rows, cols]), groups);
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
@group(0) @binding(0) var<uniform> u: U;
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
@group(0) @binding(0) var<uniform> u: U;
${bindings([["part", "read", "f32"], ["dw", "read_write", W], ["db", "read_write", W]])}
@compute @workgroup_size(${COL_WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= u.cols) { return; }
  var sw = 0.0;
  var sb = 0.0;
  for (var k = 0u; k < u.chunks; k++) {
    sw += part[(2u * k) * u.cols + c];
    sb += part[(2u * k + 1u) * u.cols + c];
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
 * const y = layerNorm(h, norm1.weight, norm1.bias, 1e-5); // h [B, L, C]
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
