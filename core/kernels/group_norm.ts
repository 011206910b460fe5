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
import type { Gpu } from "../gpu/device.ts";
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
  type Binding,
  MAX_REGS,
  meanM2Wgsl,
  ROW_ARGS,
  ROW_ELEMS,
  ROW_WG,
  rowGrid,
  rowRegisters,
  rowThreads,
  segGrid,
  segIndex,
  segReduceWgsl,
  storageBindings as bindings,
  sumWgsl,
} from "./row_reduce.ts";

const WG = ROW_WG;
/** Groups of up to this many elements take the fused kernels (one segment of threads per group). */
export const FUSED_MAX = 2048;

/** Options of {@link groupNorm}. */
export interface GroupNormOptions {
  /** Apply SiLU to the normalised output (y = silu(gn(x))), with its derivative in backward. */
  silu?: boolean;
}

interface Dims {
  n: number;
  c: number;
  g: number;
  s: number;
}

/**
 * WGSL uniform struct shared by the GroupNorm kernels (rows = N*C, ng = N*G, cg = C/G, lpc = threads
 * per channel row of the fused backward's partial sums, 1 for the per-row ones).
 */
const UNIFORMS = `struct U {
  rows: u32, c: u32, g: u32, s: u32, cg: u32, ng: u32, lpc: u32, eps: f32, chunks: u32, span: u32,
};
@group(0) @binding(0) var<uniform> u: U;`;

function uniforms(d: Dims, eps = 0, lpc = 1, rc: RowChunks | null = null): Uint32Array {
  return packUniforms([
    d.n * d.c,
    d.c,
    d.g,
    d.s,
    d.c / d.g,
    d.n * d.g,
    lpc,
    f32u(eps),
    rc?.chunks ?? 1,
    rc?.span ?? d.s,
  ]);
}

/**
 * Elementwise row kernels (no reduction) spread each long row over `chunks` workgroups of `span`
 * elements (about ROW_WG * ROW_ELEMS), so large activations keep many threads in flight on GPUs;
 * shorter rows take `tpr` threads, several rows per workgroup.
 */
interface RowChunks {
  tpr: number;
  chunks: number;
  span: number;
}

function rowChunks(s: number): RowChunks {
  const tpr = rowThreads(s);
  const chunks = tpr === WG ? Math.ceil(s / (WG * ROW_ELEMS)) : 1;
  return { tpr, chunks, span: Math.ceil(s / chunks) };
}

/** WGSL prologue of a {@link rowChunks} kernel: `lane`, `row` and this thread's `start`/`stop`. */
function chunkPrologue(tpr: number): string {
  return `let wi = wid.x + wid.y * nwg.x;
  let lane = li & ${tpr - 1}u;
  let row = (wi / u.chunks) * ${WG / tpr}u + (li >> ${Math.log2(tpr)}u);
  if (row >= u.rows) { return; }
  let start = row * u.s + (wi % u.chunks) * u.span;
  let stop = min(start + u.span, row * u.s + u.s);`;
}

function chunkGrid(gpu: Gpu, rows: number, rc: RowChunks): [number, number] {
  return rowGrid(gpu, Math.ceil(rows / (WG / rc.tpr)) * rc.chunks);
}

const opt = (on: boolean, b: Binding): Binding | null => (on ? b : null);

/** Smallest power of two >= n. */
function pow2ceil(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** WGSL: the affine output (and SiLU) of `v`, with the channel's `wv` and `bv`. */
function outWgsl(hw: boolean, hb: boolean, silu: boolean): string {
  return `${hw ? "v = v * wv;" : ""}
    ${hb ? "v = v + bv;" : ""}
    ${silu ? "v = v / (1.0 + exp(-v));" : ""}`;
}

/** WGSL: `wv` and `bv` of channel `ch` (1 and 0 without weight or bias). */
function channelAffine(hw: boolean, hb: boolean): string {
  return `let wv = ${hw ? "f32(w[ch])" : "1.0"};
  let bv = ${hb ? "f32(b[ch])" : "0.0"};`;
}

/**
 * WGSL: `gy` (the gradient at the affine output, through SiLU's derivative when fused) from `xh`,
 * the incoming gradient `gv` and the channel's `wv`/`bv`.
 */
function gradAtAffine(silu: boolean, xh: string, gv: string, gy: string): string {
  if (!silu) return `let ${gy} = ${gv};`;
  return `let ${gy} = silu_grad(${xh} * wv + bv, ${gv});`;
}

const SILU_GRAD = `fn silu_grad(yv: f32, g: f32) -> f32 {
  let sg = 1.0 / (1.0 + exp(-yv));
  return g * sg * (1.0 + yv * (1.0 - sg));
}`;

/**
 * Thread layout of the fused kernels: a segment of `p` threads per (n, group), `lpc` per channel
 * (channel-major; `p` = lpc * cg rounded up to a power of two, the extra threads idle), each holding
 * `k` elements of its channel row in registers. Null when groups are too large.
 */
interface Fused {
  cg: number;
  lpc: number;
  p: number;
  k: number;
}

function fusedLayout(d: Dims): Fused | null {
  const cg = d.c / d.g;
  if (cg * d.s > FUSED_MAX || cg > WG) return null;
  const lpc = Math.min(rowThreads(d.s), WG / pow2ceil(cg));
  const k = Math.ceil(d.s / lpc);
  // FUSED_MAX keeps k within MAX_REGS (k <= 2 * FUSED_MAX / WG); the check guards a change of it.
  if (k > MAX_REGS) return null;
  return { cg, lpc, p: pow2ceil(cg) * lpc, k };
}

/** WGSL prologue of the fused kernels: this thread's group, channel row `r`, channel and `base`. */
function fusedPrologue(f: Fused, s: number): string {
  return `${segIndex(f.p)}
  let cl = lane >> ${Math.log2(f.lpc)}u;
  let sl = lane & ${f.lpc - 1}u;
  let okg = row < u.ng;
  let ok = okg && cl < ${f.cg}u;
  let grp = select(0u, row, okg);
  let r = grp * ${f.cg}u + min(cl, ${f.cg - 1}u);
  let ch = r % u.c;
  let base = r * ${s}u + sl;`;
}

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
  let ch = row % u.c;
  let grp = row / u.cg;
  let mean = st[2u * grp];
  let rstd = st[2u * grp + 1u];
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

interface Grads {
  dx: Tensor | null;
  dw: Tensor | null;
  db: Tensor | null;
}

interface BackwardArgs {
  x: Tensor;
  st: Tensor;
  w: Tensor | null;
  b: Tensor | null;
  g: Tensor;
  d: Dims;
  silu: boolean;
  want: { x: boolean; w: boolean; b: boolean };
}

/** Affine operand bindings of the backward kernels: w when `needW`, b when SiLU needs it. */
function affineBindings(a: BackwardArgs, needW: boolean): (Binding | null)[] {
  const W = wgslType(a.w?.dtype ?? a.b?.dtype ?? "f32");
  return [
    opt(a.w !== null && needW, ["w", "read", W]),
    opt(a.b !== null && a.silu, ["b", "read", W]),
  ];
}

function affineBuffers(a: BackwardArgs, needW: boolean): GPUBuffer[] {
  return [...(a.w && needW ? [a.w.buffer] : []), ...(a.b && a.silu ? [a.b.buffer] : [])];
}

/** GroupNorm backward; computes only the gradients asked for. Records nothing. */
function backward(a: BackwardArgs): Grads {
  const { x, d, want } = a;
  const gpu = x.gpu;
  const wd: DType = a.w?.dtype ?? a.b?.dtype ?? "f32";
  const wantAff = want.w || want.b;
  const f = fusedLayout(d);
  const lpc = f ? f.lpc : 1;
  // Per-thread (fused) or per-row (split) sums of gy and gy * xhat: [N*C*lpc, 2].
  const part = Tensor.empty(gpu, [d.n * d.c * lpc, 2], "f32");
  const dw = wantAff ? Tensor.empty(gpu, [d.c], wd) : null;
  const db = wantAff ? Tensor.empty(gpu, [d.c], wd) : null;
  let dx: Tensor | null = null;
  if (f) {
    dx = fusedBackward(a, f, part, want.x);
    if (wantAff) merge(a, part, null, dw, db, lpc);
  } else {
    rowSums(a, part);
    // One small kernel for the per-group coefficients of dx and for dweight/dbias.
    const coef = want.x ? Tensor.empty(gpu, [d.n * d.g, 2], "f32") : null;
    if (coef || wantAff) merge(a, part, coef, dw, db, 1);
    if (coef) {
      dx = applyBackward(a, coef);
      coef.dispose();
    }
  }
  part.dispose();
  return {
    dx,
    dw: want.w ? dw : (dw?.dispose(), null),
    db: want.b ? db : (db?.dispose(), null),
  };
}

/**
 * Backward of small groups: one segment per group reads x and g once into registers, writes each
 * thread's sums of gy and gy * xhat to `part` (for dweight/dbias), reduces the group's sums of gy w
 * and gy w xhat, and writes dx (when `doDx`).
 */
function fusedBackward(a: BackwardArgs, f: Fused, part: Tensor, doDx: boolean): Tensor | null {
  const { x, st, g, d, silu } = a;
  const gpu = x.gpu;
  const T = wgslType(x.dtype);
  const hw = a.w !== null, useB = a.b !== null && silu;
  const W = wgslType(a.w?.dtype ?? a.b?.dtype ?? "f32");
  const L = f.cg * d.s;
  const key = `${T}|${W}|${hw}|${useB}|${silu}|${f.cg}|${d.s}|${f.lpc}|${doDx}`;
  const k = gpu.kernel("group_norm_backward_fused", key, () => {
    const rx = rowRegisters("x", "x", d.s, f.lpc, { lane: "sl" });
    const rg = rowRegisters("g", "g", d.s, f.lpc, { lane: "sl" });
    const ks = Array.from({ length: rx.count }, (_, k) => k);
    const grads = ks.map((k) =>
      `let xh${k} = (x${k} - mean) * rstd;
  ${gradAtAffine(silu, `xh${k}`, `g${k}`, `gy${k}`)}`
    );
    const t = sumWgsl(ks.map((k) => `vec2<f32>(gy${k}, gy${k} * xh${k})`));
    const out = ks.map((k) =>
      `if (${rx.valid(k)}) {
    dx[base + ${k * f.lpc}u] = ${T}(rstd * (gy${k} * wv - ab.x - xh${k} * ab.y));
  }`
    );
    return `${header(x.dtype, a.w?.dtype ?? a.b?.dtype ?? "f32")}
${UNIFORMS}
${
      bindings([
        ["x", "read", T],
        ["st", "read", "f32"],
        ["g", "read", T],
        ...affineBindings(a, doDx || silu),
        ["part", "read_write", "f32"],
        opt(doDx, ["dx", "read_write", T]),
      ])
    }
${segReduceWgsl(f.p)}
${silu ? SILU_GRAD : ""}
@compute @workgroup_size(${WG})
fn main(${ROW_ARGS}) {
  ${fusedPrologue(f, d.s)}
  let mean = st[2u * grp];
  let rstd = st[2u * grp + 1u];
  ${channelAffine(hw && (doDx || silu), useB)}
  ${rx.wgsl}
  ${rg.wgsl}
  ${grads.join("\n  ")}
  let t = ${t};
  if (ok) {
    part[2u * (r * ${f.lpc}u + sl)] = t.x;
    part[2u * (r * ${f.lpc}u + sl) + 1u] = t.y;
  }
  ${
      doDx
        ? `let ab = segSum2(t * wv, li) / ${L}.0;
  ${out.join("\n  ")}`
        : ""
    }
}`;
  });
  const dx = doDx ? Tensor.empty(gpu, x.shape, x.dtype) : null;
  const bufs = [
    x.buffer,
    st.buffer,
    g.buffer,
    ...affineBuffers(a, doDx || silu),
    part.buffer,
    ...(dx ? [dx.buffer] : []),
  ];
  gpu.dispatch(k, bufs, uniforms(d, 0, f.lpc), segGrid(gpu, d.n * d.g, f.p));
  return dx;
}

/** Per (n, c) row: the sums of gy and gy * xhat, into part [N*C, 2]. */
function rowSums(a: BackwardArgs, part: Tensor): void {
  const { x, st, g, d, silu } = a;
  const gpu = x.gpu;
  const T = wgslType(x.dtype);
  const hw = a.w !== null, useB = a.b !== null && silu;
  const W = wgslType(a.w?.dtype ?? a.b?.dtype ?? "f32");
  const tpr = rowThreads(d.s);
  const kr = gpu.kernel(
    "group_norm_backward_rows",
    `${T}|${W}|${hw}|${useB}|${silu}|${tpr}`,
    () =>
      `${header(x.dtype, a.w?.dtype ?? a.b?.dtype ?? "f32")}
${UNIFORMS}
${
        bindings([
          ["x", "read", T],
          ["st", "read", "f32"],
          ["g", "read", T],
          ...affineBindings(a, silu),
          ["part", "read_write", "f32"],
        ])
      }
${segReduceWgsl(tpr)}
${silu ? SILU_GRAD : ""}
@compute @workgroup_size(${WG})
fn main(${ROW_ARGS}) {
  ${segIndex(tpr)}
  let ok = row < u.rows;
  let r = select(0u, row, ok);
  let ch = r % u.c;
  let grp = r / u.cg;
  let mean = st[2u * grp];
  let rstd = st[2u * grp + 1u];
  ${channelAffine(hw && silu, useB)}
  let base = r * u.s;
  let end = select(base, base + u.s, ok);
  var t = vec2<f32>(0.0);
  for (var i = base + lane; i < end; i += ${tpr}u) {
    let xh = (f32(x[i]) - mean) * rstd;
    ${gradAtAffine(silu, "xh", "f32(g[i])", "gy")}
    t += vec2<f32>(gy, gy * xh);
  }
  t = segSum2(t, li);
  if (ok && lane == 0u) {
    part[2u * row] = t.x;
    part[2u * row + 1u] = t.y;
  }
}`,
  );
  const bufs = [x.buffer, st.buffer, g.buffer, ...affineBuffers(a, silu), part.buffer];
  gpu.dispatch(kr, bufs, uniforms(d), segGrid(gpu, d.n * d.c, tpr));
}

/**
 * Small merges of the sums in `part`, one thread per item: with `coef`, per (n, g) the means of
 * gy w and gy w xhat (from per-row sums, lpc 1); with `dw`/`db`, per channel the sums of gy xhat and
 * gy over the batch (and over the lpc threads of each channel row).
 */
function merge(
  a: BackwardArgs,
  part: Tensor,
  coef: Tensor | null,
  dw: Tensor | null,
  db: Tensor | null,
  lpc: number,
): void {
  const { d } = a;
  const gpu = part.gpu;
  const hw = a.w !== null;
  const wd: DType = a.w?.dtype ?? a.b?.dtype ?? "f32";
  const W = wgslType(wd);
  const hc = coef !== null, ha = dw !== null;
  const needW = hc && hw;
  const k = gpu.kernel(
    "group_norm_backward_merge",
    `${W}|${needW}|${hc}|${ha}`,
    () =>
      `${header(wd)}
${UNIFORMS}
${
        bindings([
          ["part", "read", "f32"],
          opt(needW, ["w", "read", W]),
          opt(hc, ["coef", "read_write", "f32"]),
          opt(ha, ["dw", "read_write", W]),
          opt(ha, ["db", "read_write", W]),
        ])
      }
@compute @workgroup_size(64)
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(64)};
  let nc = ${hc ? "u.ng" : "0u"};
  ${
        hc
          ? `if (i < nc) {
    let r0 = i * u.cg;
    let r1 = r0 + u.cg;
    var s = vec2<f32>(0.0);
    var wc = (i % u.g) * u.cg;
    for (var r = r0; r < r1; r++) {
      s += ${needW ? "f32(w[wc]) * " : ""}vec2<f32>(part[2u * r], part[2u * r + 1u]);
      wc++;
    }
    s = s / f32(u.cg * u.s);
    coef[2u * i] = s.x;
    coef[2u * i + 1u] = s.y;
    return;
  }`
          : ""
      }
  ${
        ha
          ? `let ch = i - nc;
  if (ch >= u.c) { return; }
  var s = vec2<f32>(0.0);
  for (var r = ch; r < u.rows; r += u.c) {
    let q0 = r * u.lpc;
    for (var q = q0; q < q0 + u.lpc; q++) { s += vec2<f32>(part[2u * q], part[2u * q + 1u]); }
  }
  db[ch] = ${W}(s.x);
  dw[ch] = ${W}(s.y);`
          : ""
      }
}`,
  );
  const bufs = [
    part.buffer,
    ...(needW ? [a.w!.buffer] : []),
    ...(coef ? [coef.buffer] : []),
    ...(dw && db ? [dw.buffer, db.buffer] : []),
  ];
  const items = (hc ? d.n * d.g : 0) + (ha ? d.c : 0);
  gpu.dispatch(k, bufs, uniforms(d, 0, lpc), grid1d(gpu, items, 64));
}

/** dx = rstd * (gy w - mean(gy w) - xhat mean(gy w xhat)), a segment of threads per (n, c) row. */
function applyBackward(a: BackwardArgs, coef: Tensor): Tensor {
  const { x, st, g, d, silu } = a;
  const gpu = x.gpu;
  const T = wgslType(x.dtype);
  const hw = a.w !== null, useB = a.b !== null && silu;
  const W = wgslType(a.w?.dtype ?? a.b?.dtype ?? "f32");
  const rc = rowChunks(d.s);
  const kx = gpu.kernel(
    "group_norm_backward_x",
    `${T}|${W}|${hw}|${useB}|${silu}|${rc.tpr}`,
    () =>
      `${header(x.dtype, a.w?.dtype ?? a.b?.dtype ?? "f32")}
${UNIFORMS}
${
        bindings([
          ["x", "read", T],
          ["st", "read", "f32"],
          ["g", "read", T],
          ...affineBindings(a, true),
          ["coef", "read", "f32"],
          ["dx", "read_write", T],
        ])
      }
${silu ? SILU_GRAD : ""}
@compute @workgroup_size(${WG})
fn main(${ROW_ARGS}) {
  ${chunkPrologue(rc.tpr)}
  let ch = row % u.c;
  let grp = row / u.cg;
  let mean = st[2u * grp];
  let rstd = st[2u * grp + 1u];
  ${channelAffine(hw, useB)}
  let ca = coef[2u * grp];
  let cb = coef[2u * grp + 1u];
  for (var i = start + lane; i < stop; i += ${rc.tpr}u) {
    let xh = (f32(x[i]) - mean) * rstd;
    ${gradAtAffine(silu, "xh", "f32(g[i])", "gy")}
    dx[i] = ${T}(rstd * (gy * wv - ca - xh * cb));
  }
}`,
  );
  const dx = Tensor.empty(gpu, x.shape, x.dtype);
  const bufs = [x.buffer, st.buffer, g.buffer, ...affineBuffers(a, true), coef.buffer, dx.buffer];
  gpu.dispatch(kx, bufs, uniforms(d, 0, 1, rc), chunkGrid(gpu, d.n * d.c, rc));
  return dx;
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
