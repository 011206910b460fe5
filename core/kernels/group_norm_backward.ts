/**
 * GroupNorm backward (see group_norm.ts for the kernel layout): the fused small-group kernel, or
 * per-row sums, a merge into per-group coefficients (and dweight/dbias), then dx.
 */
import type { DType } from "../tensor/tensor.ts";
import { Tensor } from "../tensor/tensor.ts";
import { grid1d, GRID_ARGS, header, linearIndex, wgslType } from "./common.ts";
import { type Binding, bindings, opt } from "./bindings.ts";
import {
  ROW_ARGS,
  rowRegisters,
  rowThreads,
  segGrid,
  segIndex,
  segReduceWgsl,
  sumWgsl,
} from "./row_reduce.ts";
import {
  channelAffine,
  chunkGrid,
  chunkPrologue,
  type Dims,
  type Fused,
  fusedLayout,
  fusedPrologue,
  gradAtAffine,
  rowChunks,
  rowGroupStats,
  SILU_GRAD,
  UNIFORMS,
  uniforms,
  WG,
} from "./group_norm_common.ts";

interface Grads {
  dx: Tensor | null;
  dw: Tensor | null;
  db: Tensor | null;
}

export interface BackwardArgs {
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
export function backward(a: BackwardArgs): Grads {
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
  ${rowGroupStats("r")}
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
  ${rowGroupStats("row")}
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
