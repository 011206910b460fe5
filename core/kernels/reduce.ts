/**
 * Sums over axes: `sum`, `mean`, and `sumTo` (reduce a broadcast gradient back to an input's shape).
 * One workgroup per output element when the reduced extent is long, else one thread per output.
 */
import { GpuError } from "../gpu/errors.ts";
import { record } from "../tensor/autograd.ts";
import { numel, Tensor } from "../tensor/tensor.ts";
import {
  axisIndex,
  checkArgs,
  f32u,
  grid1d,
  GRID_ARGS,
  header,
  linearIndex,
  packUniforms,
  stridesOf,
  wgslType,
} from "./common.ts";
import { broadcastTo } from "./broadcast.ts";

const WG = 256;
const MAX_RANK = 8;

const OFFSET_FN = `
fn offsetOf(idx: u32, rank: u32, shape: array<vec4<u32>, 2>, str: array<vec4<u32>, 2>) -> u32 {
  var rem = idx;
  var o = 0u;
  for (var k = i32(rank) - 1; k >= 0; k--) {
    let d = shape[k / 4][k % 4];
    o += (rem % d) * str[k / 4][k % 4];
    rem = rem / d;
  }
  return o;
}`;

/** Sums x over `axes` (kept dims removed unless keepDims), scaled by `alpha`. Records nothing. */
function reduceRaw(x: Tensor, axes: number[], keepDims: boolean, alpha: number): Tensor {
  const gpu = x.gpu;
  const r = x.shape.length;
  const red = new Set(axes);
  const xs = stridesOf(x.shape);
  const keptDims = [...Array(r).keys()].filter((i) => !red.has(i));
  const redDims = [...red].sort((a, b) => a - b);
  const outShape = keepDims
    ? x.shape.map((d, i) => (red.has(i) ? 1 : d))
    : keptDims.map((i) => x.shape[i]);
  const out = Tensor.empty(gpu, outShape, x.dtype);
  const nOut = numel(keptDims.map((i) => x.shape[i]));
  const nRed = numel(redDims.map((i) => x.shape[i]));
  if (keptDims.length > MAX_RANK || redDims.length > MAX_RANK) {
    throw new GpuError(`sum: rank ${r} too large`);
  }
  const pad = (a: number[]) => [...a, ...new Array(MAX_RANK - a.length).fill(1)];
  const u = packUniforms([
    nOut,
    nRed,
    keptDims.length,
    redDims.length,
    f32u(alpha),
    0,
    0,
    0,
    ...pad(keptDims.map((i) => x.shape[i])),
    ...pad(keptDims.map((i) => xs[i])),
    ...pad(redDims.map((i) => x.shape[i])),
    ...pad(redDims.map((i) => xs[i])),
  ]);
  const T = wgslType(x.dtype);
  const wide = nRed >= 64;
  const key = `${T}|${wide}`;
  const k = gpu.kernel("sum", key, () =>
    `${header(x.dtype)}
struct U { nOut: u32, nRed: u32, rk: u32, rr: u32, alpha: f32, p0: u32, p1: u32, p2: u32,
  ks: array<vec4<u32>, 2>, kst: array<vec4<u32>, 2>, rs: array<vec4<u32>, 2>, rst: array<vec4<u32>, 2> };
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> x: array<${T}>;
@group(0) @binding(2) var<storage, read_write> y: array<${T}>;
${OFFSET_FN}
${
      wide
        ? `var<workgroup> part: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = wid.x + wid.y * nwg.x;
  if (o >= u.nOut) { return; }
  let base = offsetOf(o, u.rk, u.ks, u.kst);
  var acc = 0.0;
  for (var j = li; j < u.nRed; j += ${WG}u) {
    acc += f32(x[base + offsetOf(j, u.rr, u.rs, u.rst)]);
  }
  part[li] = acc;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s = s >> 1u) {
    if (li < s) { part[li] += part[li + s]; }
    workgroupBarrier();
  }
  if (li == 0u) { y[o] = ${T}(part[0] * u.alpha); }
}`
        : `@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let o = ${linearIndex(WG)};
  if (o >= u.nOut) { return; }
  let base = offsetOf(o, u.rk, u.ks, u.kst);
  var acc = 0.0;
  for (var j = 0u; j < u.nRed; j++) {
    acc += f32(x[base + offsetOf(j, u.rr, u.rs, u.rst)]);
  }
  y[o] = ${T}(acc * u.alpha);
}`
    }`);
  const groups: [number, number] = wide
    ? (() => {
      const max = gpu.limits.maxComputeWorkgroupsPerDimension;
      const yy = Math.ceil(nOut / max);
      return [Math.ceil(nOut / yy), yy];
    })()
    : grid1d(gpu, nOut, WG);
  gpu.dispatch(k, [x.buffer, out.buffer], u, groups);
  return out;
}

function normAxes(op: string, x: Tensor, axes?: number | number[]): number[] {
  if (axes === undefined) return [...Array(x.shape.length).keys()];
  const a = Array.isArray(axes) ? axes : [axes];
  return [...new Set(a.map((v) => axisIndex(op, v, x.shape.length)))];
}

/** Sum over `axes` (all when omitted). */
export function sum(x: Tensor, axes?: number | number[], keepDims = false): Tensor {
  checkArgs("sum", [x], ["f32", "f16"]);
  const ax = normAxes("sum", x, axes);
  const out = reduceRaw(x, ax, keepDims, 1);
  const kept = x.shape.map((d, i) => (ax.includes(i) ? 1 : d));
  const shape = [...x.shape];
  return record("sum", out, [x], (g) => [broadcastTo(g.alias(kept), shape)]);
}

/** Mean over `axes` (all when omitted). */
export function mean(x: Tensor, axes?: number | number[], keepDims = false): Tensor {
  checkArgs("mean", [x], ["f32", "f16"]);
  const ax = normAxes("mean", x, axes);
  const count = numel(ax.map((i) => x.shape[i]));
  const out = reduceRaw(x, ax, keepDims, 1 / count);
  const kept = x.shape.map((d, i) => (ax.includes(i) ? 1 : d));
  const shape = [...x.shape];
  return record("mean", out, [x], (g) => {
    const gb = broadcastTo(g.alias(kept), shape, 1 / count);
    return [gb];
  });
}

/** Sums a broadcast result back to `shape` (the reverse of broadcasting). Records nothing. */
export function sumTo(x: Tensor, shape: readonly number[]): Tensor {
  if (x.shape.length === shape.length && x.shape.every((d, i) => d === shape[i])) {
    return x.alias();
  }
  const lead = x.shape.length - shape.length;
  if (lead < 0) throw new GpuError(`sumTo: cannot reduce [${x.shape}] to [${shape}]`);
  const axes: number[] = [];
  x.shape.forEach((d, i) => {
    const t = i < lead ? 1 : shape[i - lead];
    if (i < lead || (t === 1 && d !== 1)) axes.push(i);
    else if (t !== d) throw new GpuError(`sumTo: cannot reduce [${x.shape}] to [${shape}]`);
  });
  const out = reduceRaw(x, axes, true, 1);
  const res = out.alias([...shape]);
  out.dispose();
  return res;
}
