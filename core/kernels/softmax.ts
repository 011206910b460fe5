/**
 * Softmax over the last axis, numerically stable (the row maximum is subtracted before exp), with
 * its backward dx = y * (g - sum(g * y)). One workgroup per row; f32 or f16 storage, f32 arithmetic.
 */
import { GpuError } from "../gpu/errors.ts";
import { record } from "../tensor/autograd.ts";
import { keep } from "../tensor/scope.ts";
import { Tensor } from "../tensor/tensor.ts";
import { checkArgs, header, packUniforms, sameDtype, wgslType } from "./common.ts";
import { NEG_BIG, ROW_ARGS, ROW_INDEX, ROW_WG, rowGrid, wgReduceWgsl } from "./row_reduce.ts";

const WG = ROW_WG;

function forwardKernel(x: Tensor): Tensor {
  const gpu = x.gpu;
  const T = wgslType(x.dtype);
  const k = gpu.kernel("softmax", T, () =>
    `${header(x.dtype)}
struct U { rows: u32, cols: u32 };
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> x: array<${T}>;
@group(0) @binding(2) var<storage, read_write> y: array<${T}>;
${wgReduceWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(${ROW_ARGS}) {
  let row = ${ROW_INDEX};
  if (row >= u.rows) { return; }
  let base = row * u.cols;
  var m = ${NEG_BIG};
  for (var j = li; j < u.cols; j += ${WG}u) { m = max(m, f32(x[base + j])); }
  m = wgMax(m, li);
  var s = 0.0;
  for (var j = li; j < u.cols; j += ${WG}u) { s += exp(f32(x[base + j]) - m); }
  let inv = 1.0 / wgSum(s, li);
  for (var j = li; j < u.cols; j += ${WG}u) { y[base + j] = ${T}(exp(f32(x[base + j]) - m) * inv); }
}`);
  const cols = x.shape[x.shape.length - 1];
  const rows = x.size / cols;
  const out = Tensor.empty(gpu, x.shape, x.dtype);
  gpu.dispatch(k, [x.buffer, out.buffer], packUniforms([rows, cols]), rowGrid(gpu, rows));
  return out;
}

/** dx = y * (g - sum_j g_j y_j) per row. Records nothing. */
export function softmaxBackward(y: Tensor, g: Tensor): Tensor {
  const gpu = checkArgs("softmax_backward", [y, g], ["f32", "f16"]);
  const dt = sameDtype("softmax_backward", [y, g]);
  const T = wgslType(dt);
  const k = gpu.kernel("softmax_backward", T, () =>
    `${header(dt)}
struct U { rows: u32, cols: u32 };
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> y: array<${T}>;
@group(0) @binding(2) var<storage, read> g: array<${T}>;
@group(0) @binding(3) var<storage, read_write> dx: array<${T}>;
${wgReduceWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(${ROW_ARGS}) {
  let row = ${ROW_INDEX};
  if (row >= u.rows) { return; }
  let base = row * u.cols;
  var s = 0.0;
  for (var j = li; j < u.cols; j += ${WG}u) { s += f32(g[base + j]) * f32(y[base + j]); }
  let dot = wgSum(s, li);
  for (var j = li; j < u.cols; j += ${WG}u) {
    dx[base + j] = ${T}(f32(y[base + j]) * (f32(g[base + j]) - dot));
  }
}`);
  const cols = y.shape[y.shape.length - 1];
  const rows = y.size / cols;
  const out = Tensor.empty(gpu, y.shape, dt);
  gpu.dispatch(k, [y.buffer, g.buffer, out.buffer], packUniforms([rows, cols]), rowGrid(gpu, rows));
  return out;
}

/**
 * Softmax over the last axis: y_j = exp(x_j - max x) / sum_k exp(x_k - max x).
 *
 * @example
 * ```ts
 * const p = softmax(logits); // logits [B, N, K] -> probabilities over K
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
