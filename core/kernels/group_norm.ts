/**
 * GroupNorm on [N, C, *spatial] with G groups and per-channel affine weight/bias (PyTorch semantics:
 * biased variance over each (n, group), eps inside the square root), optionally fused with the SiLU
 * that follows every GroupNorm in the UNet's resnets.
 *
 * The kernels are row kernels (see row_reduce.ts): a workgroup holds several segments of threads, a
 * reduction within a segment costs one or two barriers, and every thread loops over many elements.
 * CPU drivers (lavapipe) pay per invocation, per barrier and per memory access, GPUs want parallel,
 * coalesced rows; both are served by keeping short rows on few threads and reading memory once.
 *
 * Groups of up to {@link FUSED_MAX} elements (all of a small UNet's) take one kernel each way: a
 * segment of threads per (n, group), `lpc` threads per channel (channel-major, so each thread has one
 * channel's weight and bias), which reads its part of the group once into registers.
 *  - forward: the mean, then the sum of squared deviations about it from the registers (an exact
 *    two-pass variance, unlike E[x^2] - E[x]^2), then the output;
 *  - backward: the sums of gy w and gy w xhat over the group, then dx; each thread also writes its
 *    sums of gy and gy xhat, which a small kernel adds up over the batch into dweight and dbias.
 * Larger groups are spread over their (n, channel) rows: per-row mean and M2 merged per group with
 * Chan's formula, then an output kernel; backward takes per-row sums, a merge into per-group
 * coefficients (and dweight/dbias), then dx. With SiLU fused, gy = g * silu'(y) is recomputed from x.
 *
 * Loops over uniform counts start at a thread-dependent index (rows r0..r1, not 0..count): lavapipe
 * (Mesa 22) inlines uniforms that bound a constant-start loop, unrolls it and recompiles the shader
 * at every dispatch (milliseconds each).
 */
import { GpuError } from "../gpu/errors.ts";
import { record, save } from "../tensor/autograd.ts";
import { keep } from "../tensor/scope.ts";
import { Tensor } from "../tensor/tensor.ts";
import { checkArgs, grid1d, GRID_ARGS, header, linearIndex, wgslType } from "./common.ts";
import { bindings, opt } from "./bindings.ts";
import {
  MAX_REGS,
  meanM2Wgsl,
  ROW_ARGS,
  rowRegisters,
  rowThreads,
  segGrid,
  segIndex,
  segReduceWgsl,
} from "./row_reduce.ts";
import {
  channelAffine,
  chunkGrid,
  chunkPrologue,
  type Dims,
  type Fused,
  fusedLayout,
  fusedPrologue,
  type GroupNormOptions,
  outWgsl,
  rowChunks,
  rowGroupStats,
  UNIFORMS,
  uniforms,
  WG,
} from "./group_norm_common.ts";
import { backward } from "./group_norm_backward.ts";

export { FUSED_MAX, type GroupNormOptions } from "./group_norm_common.ts";

/** Forward of small groups: one segment per group, its elements read once into registers. */
function fusedForward(
  x: Tensor,
  w: Tensor | null,
  b: Tensor | null,
  d: Dims,
  f: Fused,
  eps: number,
  silu: boolean,
): { y: Tensor; st: Tensor } {
  const gpu = x.gpu;
  const T = wgslType(x.dtype);
  const W = wgslType(w?.dtype ?? b?.dtype ?? "f32");
  const hw = w !== null, hb = b !== null;
  const L = f.cg * d.s;
  const key = `${T}|${W}|${hw}|${hb}|${silu}|${f.cg}|${d.s}|${f.lpc}`;
  const k = gpu.kernel("group_norm_fused", key, () => {
    const reg = rowRegisters("x", "x", d.s, f.lpc, { lane: "sl" });
    const out = Array.from({ length: reg.count }, (_, k) =>
      `if (${reg.valid(k)}) {
    var v = (x${k} - mean) * rstd;
    ${outWgsl(hw, hb, silu)}
    y[base + ${k * f.lpc}u] = ${T}(v);
  }`);
    return `${header(x.dtype, w?.dtype ?? "f32", b?.dtype ?? "f32")}
${UNIFORMS}
${
      bindings([
        ["x", "read", T],
        opt(hw, ["w", "read", W]),
        opt(hb, ["b", "read", W]),
        ["y", "read_write", T],
        ["st", "read_write", "f32"],
      ])
    }
${segReduceWgsl(f.p)}
@compute @workgroup_size(${WG})
fn main(${ROW_ARGS}) {
  ${fusedPrologue(f, d.s)}
  ${reg.wgsl}
  ${meanM2Wgsl("x", reg.count, reg.valid, L)}
  let rstd = inverseSqrt(m2 / ${L}.0 + u.eps);
  if (okg && lane == 0u) {
    st[2u * grp] = mean;
    st[2u * grp + 1u] = rstd;
  }
  ${channelAffine(hw, hb)}
  ${out.join("\n  ")}
}`;
  });
  const y = Tensor.empty(gpu, x.shape, x.dtype);
  const st = Tensor.empty(gpu, [d.n * d.g, 2], "f32");
  const bufs = [x.buffer, ...(w ? [w.buffer] : []), ...(b ? [b.buffer] : []), y.buffer, st.buffer];
  gpu.dispatch(k, bufs, uniforms(d, eps), segGrid(gpu, d.n * d.g, f.p));
  return { y, st };
}

/** Per-(n, c) row mean and M2 (sum of squared deviations), merged to per-(n, g) mean/rstd. */
function splitStats(x: Tensor, d: Dims, eps: number): Tensor {
  const gpu = x.gpu;
  const T = wgslType(x.dtype);
  const rows = d.n * d.c;
  const tpr = rowThreads(d.s);
  const part = Tensor.empty(gpu, [rows, 2], "f32");
  // Rows of up to MAX_REGS elements per thread are read once into registers (a variant per row
  // length); longer rows take two passes over memory.
  const regs = Math.ceil(d.s / tpr) <= MAX_REGS;
  const kr = gpu.kernel("group_norm_row_stats", `${T}|${tpr}|${regs ? d.s : 0}`, () => {
    const reg = regs ? rowRegisters("x", "x", d.s, tpr) : null;
    return `${header(x.dtype)}
${UNIFORMS}
${bindings([["x", "read", T], ["part", "read_write", "f32"]])}
${segReduceWgsl(tpr)}
@compute @workgroup_size(${WG})
fn main(${ROW_ARGS}) {
  ${segIndex(tpr)}
  let ok = row < u.rows;
  ${
      reg
        ? `let base = select(0u, row, ok) * ${d.s}u + lane;
  ${reg.wgsl}
  ${meanM2Wgsl("x", reg.count, reg.valid, d.s)}`
        : `let base = select(0u, row, ok) * u.s;
  let end = select(base, base + u.s, ok);
  var s = 0.0;
  for (var i = base + lane; i < end; i += ${tpr}u) { s += f32(x[i]); }
  let mean = segSum(s, li) / f32(u.s);
  var q = 0.0;
  for (var i = base + lane; i < end; i += ${tpr}u) { let e = f32(x[i]) - mean; q += e * e; }
  let m2 = segSum(q, li);`
    }
  if (ok && lane == 0u) {
    part[2u * row] = mean;
    part[2u * row + 1u] = m2;
  }
}`;
  });
  gpu.dispatch(kr, [x.buffer, part.buffer], uniforms(d, eps), segGrid(gpu, rows, tpr));
  const st = Tensor.empty(gpu, [d.n * d.g, 2], "f32");
  // The rows of group i are rows i*cg .. i*cg + cg - 1 (row n*C + c is in group n*G + c/cg).
  const km = gpu.kernel("group_norm_merge_stats", "", () =>
    `${UNIFORMS}
${bindings([["part", "read", "f32"], ["st", "read_write", "f32"]])}
@compute @workgroup_size(64)
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(64)};
  if (i >= u.ng) { return; }
  let r0 = i * u.cg;
  let r1 = r0 + u.cg;
  var mean = 0.0;
  for (var r = r0; r < r1; r++) { mean += part[2u * r]; }
  mean = mean / f32(u.cg);
  // Chan et al.: M2 of the union = sum of M2s + count * sum of squared mean offsets.
  var m2 = 0.0;
  var off = 0.0;
  for (var r = r0; r < r1; r++) {
    let e = part[2u * r] - mean;
    off += e * e;
    m2 += part[2u * r + 1u];
  }
  m2 += off * f32(u.s);
  st[2u * i] = mean;
  st[2u * i + 1u] = inverseSqrt(m2 / f32(u.cg * u.s) + u.eps);
}`);
  gpu.dispatch(km, [part.buffer, st.buffer], uniforms(d, eps), grid1d(gpu, d.n * d.g, 64));
  part.dispose();
  return st;
}

/** The output from per-group mean/rstd, a segment of threads per (n, c) row. */
function apply(x: Tensor, st: Tensor, w: Tensor | null, b: Tensor | null, d: Dims, silu: boolean) {
  const gpu = x.gpu;
  const T = wgslType(x.dtype);
  const W = wgslType(w?.dtype ?? b?.dtype ?? "f32");
  const hw = w !== null, hb = b !== null;
  const rc = rowChunks(d.s);
  const k = gpu.kernel(
    "group_norm",
    `${T}|${W}|${hw}|${hb}|${silu}|${rc.tpr}`,
    () =>
      `${header(x.dtype, w?.dtype ?? "f32", b?.dtype ?? "f32")}
${UNIFORMS}
${
        bindings([
          ["x", "read", T],
          ["st", "read", "f32"],
          opt(hw, ["w", "read", W]),
          opt(hb, ["b", "read", W]),
          ["y", "read_write", T],
        ])
      }
@compute @workgroup_size(${WG})
fn main(${ROW_ARGS}) {
  ${chunkPrologue(rc.tpr)}
  ${rowGroupStats("row")}
  ${channelAffine(hw, hb)}
  for (var i = start + lane; i < stop; i += ${rc.tpr}u) {
    var v = (f32(x[i]) - mean) * rstd;
    ${outWgsl(hw, hb, silu)}
    y[i] = ${T}(v);
  }
}`,
  );
  const y = Tensor.empty(gpu, x.shape, x.dtype);
  const bufs = [x.buffer, st.buffer, ...(w ? [w.buffer] : []), ...(b ? [b.buffer] : []), y.buffer];
  gpu.dispatch(k, bufs, uniforms(d, 0, 1, rc), chunkGrid(gpu, d.n * d.c, rc));
  return y;
}
/**
 * GroupNorm: x [N, C, *spatial] split into `groups` groups of C/groups channels, each (n, group)
 * normalised by its own mean and biased variance, then scaled and shifted per channel; with
 * `{silu: true}` the result goes through SiLU as well (one kernel instead of two).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 *
 * const gpu = await Gpu.open();
 * const x = Tensor.from(gpu, Float32Array.from({ length: 16 }, (_, i) => i * i), [1, 4, 2, 2]);
 * const weight = Tensor.from(gpu, [1, 1, 1, 1], [4]), bias = Tensor.from(gpu, [0, 0, 0, 0], [4]);
 * const y = await groupNorm(x, 2, weight, bias, 1e-5).toF32(); // 2 groups of 2 channels
 * assert.ok(Math.abs(y.subarray(0, 8).reduce((a, b) => a + b)) < 1e-4); // a group's mean is 0
 * // resnet's norm1 + act in one kernel:
 * const h = await groupNorm(x, 2, weight, bias, 1e-5, { silu: true }).toF32();
 * assert.ok(h.every((v, i) => Math.abs(v - y[i] / (1 + Math.exp(-y[i]))) < 1e-5)); // silu(y)
 * ```
 */
export function groupNorm(
  x: Tensor,
  groups: number,
  weight: Tensor | null = null,
  bias: Tensor | null = null,
  eps = 1e-5,
  opts: GroupNormOptions = {},
): Tensor {
  const w = weight ?? null, b = bias ?? null;
  checkArgs("group_norm", [x, ...(w ? [w] : []), ...(b ? [b] : [])], ["f32", "f16"]);
  const desc = () =>
    `x [${x.shape}], groups ${groups}${w ? `, weight [${w.shape}]` : ""}${
      b ? `, bias [${b.shape}]` : ""
    }`;
  if (x.shape.length < 2) throw new GpuError(`group_norm: x needs shape [N, C, ...] (${desc()})`);
  const [n, c] = x.shape;
  if (!Number.isInteger(groups) || groups < 1 || c % groups !== 0) {
    throw new GpuError(
      `group_norm: channels ${c} are not divisible into ${groups} groups (${desc()})`,
    );
  }
  for (const p of [w, b]) {
    if (p && (p.shape.length !== 1 || p.shape[0] !== c)) {
      throw new GpuError(`group_norm: weight and bias must have shape [${c}] (${desc()})`);
    }
  }
  if (w && b && w.dtype !== b.dtype) {
    throw new GpuError(`group_norm: weight and bias dtypes differ (${w.dtype} vs ${b.dtype})`);
  }
  const d: Dims = { n, c, g: groups, s: x.size / Math.max(1, n * c) };
  if (x.size === 0) throw new GpuError(`group_norm: empty input (${desc()})`);
  const silu = opts.silu ?? false;
  const f = fusedLayout(d);
  let y: Tensor, st: Tensor;
  if (f) ({ y, st } = fusedForward(x, w, b, d, f, eps, silu));
  else {
    st = splitStats(x, d, eps);
    y = apply(x, st, w, b, d, silu);
  }
  const sx = save(x), sw = w ? save(w) : null, sb = b ? save(b) : null;
  const kst = keep(st);
  const saved = [sx, kst, ...(sw ? [sw] : []), ...(sb ? [sb] : [])];
  return record("group_norm", y, [x, w, b], (g) => {
    const r = backward({
      x: sx,
      st: kst,
      w: sw,
      b: sb,
      g,
      d,
      silu,
      want: { x: x.requiresGrad, w: !!w?.requiresGrad, b: !!b?.requiresGrad },
    });
    return [r.dx, r.dw, r.db];
  }, saved);
}
