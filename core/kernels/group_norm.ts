/**
 * GroupNorm on [N, C, *spatial] with G groups and per-channel affine weight/bias (PyTorch semantics:
 * biased variance over each (n, group), eps inside the square root), optionally fused with the SiLU
 * that follows every GroupNorm in the UNet's resnets.
 *
 * Statistics are exact and cache-friendly: one workgroup per (n, channel) row takes that row's mean and
 * sum of squared deviations (two passes over a contiguous row), and a small kernel merges the rows of
 * each group with Chan's parallel-variance formula. That spreads a 40960-element group over 10
 * workgroups without a single-pass E[x^2] - E[x]^2 (which loses precision). Backward follows the same
 * pattern: per-row sums of gy and gy*xhat, a merge into per-group coefficients and per-channel
 * dweight/dbias, then an elementwise dx. With SiLU fused, gy = g * silu'(y) is recomputed from x.
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
const EW_WG = 256;

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

/** WGSL uniform struct shared by the GroupNorm kernels. */
const UNIFORMS = `struct U { n: u32, c: u32, g: u32, s: u32, cg: u32, total: u32, eps: f32 };
@group(0) @binding(0) var<uniform> u: U;`;

function uniforms(d: Dims, eps = 0): Uint32Array {
  return packUniforms([d.n, d.c, d.g, d.s, d.c / d.g, d.n * d.c * d.s, f32u(eps)]);
}

/**
 * WGSL that defines `gy` (the gradient at the affine output, through SiLU when fused) and `xh`
 * from x, g, the group's mean/rstd and the channel's weight/bias.
 */
function gradAtAffine(hw: boolean, hb: boolean, silu: boolean, idx: string): string {
  const wv = hw ? "f32(w[ch])" : "1.0";
  const bv = hb ? "f32(b[ch])" : "0.0";
  return `let xh = (f32(x[${idx}]) - mean) * rstd;
    ${
    silu
      ? `let yv = xh * ${wv} + ${bv};
    let sg = 1.0 / (1.0 + exp(-yv));
    let gy = f32(g[${idx}]) * sg * (1.0 + yv * (1.0 - sg));`
      : `let gy = f32(g[${idx}]);`
  }`;
}

/** Per-(n, c) row mean and M2 (sum of squared deviations), then merged to per-(n, g) mean/rstd. */
function stats(x: Tensor, d: Dims, eps: number): Tensor {
  const gpu = x.gpu;
  const T = wgslType(x.dtype);
  const rows = d.n * d.c;
  const part = Tensor.empty(gpu, [rows, 2], "f32");
  const kr = gpu.kernel("group_norm_row_stats", T, () =>
    `${header(x.dtype)}
${UNIFORMS}
${bindings([["x", "read", T], ["part", "read_write", "f32"]])}
${wgReduceWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(${ROW_ARGS}) {
  let row = ${ROW_INDEX};
  if (row >= u.n * u.c) { return; }
  let base = row * u.s;
  var s = 0.0;
  for (var j = li; j < u.s; j += ${WG}u) { s += f32(x[base + j]); }
  let mean = wgSum(s, li) / f32(u.s);
  var q = 0.0;
  for (var j = li; j < u.s; j += ${WG}u) { let e = f32(x[base + j]) - mean; q += e * e; }
  let m2 = wgSum(q, li);
  if (li == 0u) { part[2u * row] = mean; part[2u * row + 1u] = m2; }
}`);
  gpu.dispatch(kr, [x.buffer, part.buffer], uniforms(d, eps), rowGrid(gpu, rows));
  const st = Tensor.empty(gpu, [d.n * d.g, 2], "f32");
  const km = gpu.kernel("group_norm_merge_stats", "", () =>
    `${UNIFORMS}
${bindings([["part", "read", "f32"], ["st", "read_write", "f32"]])}
@compute @workgroup_size(64)
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(64)};
  if (i >= u.n * u.g) { return; }
  let r0 = i * u.cg;
  var mean = 0.0;
  for (var k = 0u; k < u.cg; k++) { mean += part[2u * (r0 + k)]; }
  mean = mean / f32(u.cg);
  // Chan et al.: M2 of the union = sum of M2s + count * sum of squared mean offsets.
  var m2 = 0.0;
  var off = 0.0;
  for (var k = 0u; k < u.cg; k++) {
    let e = part[2u * (r0 + k)] - mean;
    off += e * e;
    m2 += part[2u * (r0 + k) + 1u];
  }
  m2 += off * f32(u.s);
  st[2u * i] = mean;
  st[2u * i + 1u] = inverseSqrt(m2 / f32(u.cg * u.s) + u.eps);
}`);
  gpu.dispatch(km, [part.buffer, st.buffer], uniforms(d, eps), grid1d(gpu, d.n * d.g, 64));
  part.dispose();
  return st;
}

function apply(x: Tensor, st: Tensor, w: Tensor | null, b: Tensor | null, d: Dims, silu: boolean) {
  const gpu = x.gpu;
  const T = wgslType(x.dtype);
  const W = wgslType(w?.dtype ?? b?.dtype ?? "f32");
  const hw = w !== null, hb = b !== null;
  const k = gpu.kernel(
    "group_norm",
    `${T}|${W}|${hw}|${hb}|${silu}`,
    () =>
      `${header(x.dtype, w?.dtype ?? "f32", b?.dtype ?? "f32")}
${UNIFORMS}
${
        bindings([
          ["x", "read", T],
          ["st", "read", "f32"],
          hw ? ["w", "read", W] : null,
          hb ? ["b", "read", W] : null,
          ["y", "read_write", T],
        ])
      }
@compute @workgroup_size(${EW_WG})
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(EW_WG)};
  if (i >= u.total) { return; }
  let row = i / u.s;
  let ch = row % u.c;
  let grp = (row / u.c) * u.g + ch / u.cg;
  var v = (f32(x[i]) - st[2u * grp]) * st[2u * grp + 1u];
  ${hw ? "v = v * f32(w[ch]);" : ""}
  ${hb ? "v = v + f32(b[ch]);" : ""}
  ${silu ? "v = v / (1.0 + exp(-v));" : ""}
  y[i] = ${T}(v);
}`,
  );
  const y = Tensor.empty(gpu, x.shape, x.dtype);
  const bufs = [x.buffer, st.buffer, ...(w ? [w.buffer] : []), ...(b ? [b.buffer] : []), y.buffer];
  gpu.dispatch(k, bufs, uniforms(d), grid1d(gpu, x.size, EW_WG));
  return y;
}

interface Grads {
  dx: Tensor | null;
  dw: Tensor | null;
  db: Tensor | null;
}

/** GroupNorm backward; computes only the gradients asked for. Records nothing. */
function backward(
  x: Tensor,
  st: Tensor,
  w: Tensor | null,
  b: Tensor | null,
  g: Tensor,
  d: Dims,
  silu: boolean,
  want: { x: boolean; w: boolean; b: boolean },
): Grads {
  const gpu = x.gpu;
  const T = wgslType(x.dtype);
  const wd: DType = w?.dtype ?? b?.dtype ?? "f32";
  const W = wgslType(wd);
  const hw = w !== null, hb = b !== null;
  // b matters to backward only through SiLU's derivative.
  const useB = hb && silu;
  const key = `${T}|${W}|${hw}|${useB}|${silu}`;
  const hdr = header(x.dtype, wd);
  // The row kernel reads w only through SiLU's derivative; the dx kernel always does.
  const affine = (list: [string, "read", string][], needW: boolean) => [
    ...list,
    hw && needW ? ["w", "read", W] as [string, "read", string] : null,
    useB ? ["b", "read", W] as [string, "read", string] : null,
  ];
  const affBufs = (needW: boolean) => [
    ...(w && needW ? [w.buffer] : []),
    ...(useB ? [b!.buffer] : []),
  ];
  const rows = d.n * d.c;

  // 1. Per (n, c) row: sum gy and sum gy * xhat.
  const part = Tensor.empty(gpu, [rows, 2], "f32");
  const kr = gpu.kernel("group_norm_backward_rows", key, () =>
    `${hdr}
${UNIFORMS}
${
      bindings([
        ...affine([["x", "read", T], ["st", "read", "f32"], ["g", "read", T]], silu),
        ["part", "read_write", "f32"],
      ])
    }
${wgReduceWgsl(WG)}
@compute @workgroup_size(${WG})
fn main(${ROW_ARGS}) {
  let row = ${ROW_INDEX};
  if (row >= u.n * u.c) { return; }
  let ch = row % u.c;
  let grp = (row / u.c) * u.g + ch / u.cg;
  let mean = st[2u * grp];
  let rstd = st[2u * grp + 1u];
  let base = row * u.s;
  var s1 = 0.0;
  var s2 = 0.0;
  for (var j = li; j < u.s; j += ${WG}u) {
    ${gradAtAffine(hw, useB, silu, "base + j")}
    s1 += gy;
    s2 += gy * xh;
  }
  let t1 = wgSum(s1, li);
  let t2 = wgSum(s2, li);
  if (li == 0u) { part[2u * row] = t1; part[2u * row + 1u] = t2; }
}`);
  const rowBufs = [x.buffer, st.buffer, g.buffer, ...affBufs(silu), part.buffer];
  gpu.dispatch(kr, rowBufs, uniforms(d), rowGrid(gpu, rows));

  // 2. Per (n, g): the mean of gy*w and of gy*w*xhat; per channel: dweight and dbias.
  const coef = Tensor.empty(gpu, [d.n * d.g, 2], "f32");
  const dw = Tensor.empty(gpu, [d.c], wd);
  const db = Tensor.empty(gpu, [d.c], wd);
  const km = gpu.kernel("group_norm_backward_merge", `${W}|${hw}`, () =>
    `${header(wd)}
${UNIFORMS}
${
      bindings([
        ["part", "read", "f32"],
        hw ? ["w", "read", W] : null,
        ["coef", "read_write", "f32"],
        ["dw", "read_write", W],
        ["db", "read_write", W],
      ])
    }
@compute @workgroup_size(64)
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(64)};
  let ng = u.n * u.g;
  if (i < ng) {
    let r0 = (i / u.g) * u.c + (i % u.g) * u.cg;
    var a = 0.0;
    var bb = 0.0;
    for (var k = 0u; k < u.cg; k++) {
      let wk = ${hw ? "f32(w[(i % u.g) * u.cg + k])" : "1.0"};
      a += wk * part[2u * (r0 + k)];
      bb += wk * part[2u * (r0 + k) + 1u];
    }
    let m = f32(u.cg * u.s);
    coef[2u * i] = a / m;
    coef[2u * i + 1u] = bb / m;
  } else if (i < ng + u.c) {
    let ch = i - ng;
    var sw = 0.0;
    var sb = 0.0;
    for (var n = 0u; n < u.n; n++) {
      sb += part[2u * (n * u.c + ch)];
      sw += part[2u * (n * u.c + ch) + 1u];
    }
    dw[ch] = ${W}(sw);
    db[ch] = ${W}(sb);
  }
}`);
  gpu.dispatch(
    km,
    [part.buffer, ...(w ? [w.buffer] : []), coef.buffer, dw.buffer, db.buffer],
    uniforms(d),
    grid1d(gpu, d.n * d.g + d.c, 64),
  );
  part.dispose();

  // 3. dx = rstd * (gy * w - mean(gy w) - xhat * mean(gy w xhat)).
  let dx: Tensor | null = null;
  if (want.x) {
    dx = Tensor.empty(gpu, x.shape, x.dtype);
    const kx = gpu.kernel("group_norm_backward_x", key, () =>
      `${hdr}
${UNIFORMS}
${
        bindings([
          ...affine([["x", "read", T], ["st", "read", "f32"], ["g", "read", T]], true),
          ["coef", "read", "f32"],
          ["dx", "read_write", T],
        ])
      }
@compute @workgroup_size(${EW_WG})
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(EW_WG)};
  if (i >= u.total) { return; }
  let row = i / u.s;
  let ch = row % u.c;
  let grp = (row / u.c) * u.g + ch / u.cg;
  let mean = st[2u * grp];
  let rstd = st[2u * grp + 1u];
  ${gradAtAffine(hw, useB, silu, "i")}
  let gw = gy${hw ? " * f32(w[ch])" : ""};
  dx[i] = ${T}(rstd * (gw - coef[2u * grp] - xh * coef[2u * grp + 1u]));
}`);
    gpu.dispatch(
      kx,
      [x.buffer, st.buffer, g.buffer, ...affBufs(true), coef.buffer, dx.buffer],
      uniforms(d),
      grid1d(gpu, x.size, EW_WG),
    );
  }
  coef.dispose();
  return {
    dx,
    dw: want.w ? dw : (dw.dispose(), null),
    db: want.b ? db : (db.dispose(), null),
  };
}

/**
 * GroupNorm: x [N, C, *spatial] split into `groups` groups of C/groups channels, each (n, group)
 * normalised by its own mean and biased variance, then scaled and shifted per channel; with
 * `{silu: true}` the result goes through SiLU as well (one kernel instead of two).
 *
 * @example
 * ```ts
 * const h = groupNorm(x, 32, norm1.weight, norm1.bias, 1e-5, { silu: true }); // resnet's norm1+act
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
  const st = stats(x, d, eps);
  const y = apply(x, st, w, b, d, silu);
  const sx = save(x), sw = w ? save(w) : null, sb = b ? save(b) : null;
  const kst = keep(st);
  const saved = [sx, kst, ...(sw ? [sw] : []), ...(sb ? [sb] : [])];
  return record("group_norm", y, [x, w, b], (g) => {
    const r = backward(sx, kst, sw, sb, g, d, silu, {
      x: x.requiresGrad,
      w: !!w?.requiresGrad,
      b: !!b?.requiresGrad,
    });
    return [r.dx, r.dw, r.db];
  }, saved);
}
