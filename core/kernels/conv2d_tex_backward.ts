/// <reference types="@webgpu/types" />
/**
 * Texture-operand backward path of conv2d (the forward's is conv2d_tex.ts; see matmul_tex.ts for why
 * textures: on lavapipe a `textureLoad` is a branchless SIMD fetch, a storage load a per-lane loop).
 *
 * Operands are packed once into rgba32float textures: dy into a 3-D texture, texel
 * (ox, oy, n*OQ + oq) = output channels 4oq..4oq+3 of pixel (n, oy, ox); x the same way with its
 * input channels; for dx the weight into a 2-D texture, texel ((ky*kw + kx)*OQ + oq, c) =
 * w[4oq..4oq+3, c, ky, kx] (the transposed weight, so a channel quad of dy meets a texel of it).
 * When both gradients are wanted the packed dy serves both.
 *
 * dx is an implicit GEMM over (c) x (n, iy, ix) with K = (o, ky, kx). For stride s the pixels are
 * split into s*s phases by (iy mod s, ix mod s): within a phase only the taps with
 * ky = iy + p (mod s) contribute, and they meet dy at oy = by + j - t for pixel row iy = iy0 + s*j
 * and tap ky = ky0 + s*t, so each phase is a dense small convolution and no tap is wasted on the
 * divisibility test (one dispatch, the phase in workgroup z). Stride 1 is the single phase: a
 * convolution of dy with the flipped, transposed weights.
 *
 * dW[o, (c, ky, kx)] = sum over (n, oy, ox) of dy[n, o, oy, ox] * x[n, c, oy*s-p+ky, ox*s-p+kx]: a
 * GEMM with a long K. Each invocation owns 8 output channels x 8 input channels of one tap over a
 * chunk of (n, oy) rows; when the output alone gives too few invocations, K is split into chunks
 * whose f32 partial sums a small second pass adds up. f32 or f16 storage, f32 accumulation.
 *
 * Packing reads the source with per-lane storage loads, the slow kind; an f32 activation is instead
 * first copied as is into a staging texture (a plain buffer-to-texture copy) and packed from there
 * with texel fetches, about twice as fast.
 */
import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { acquireTexture, type PooledTexture, releaseTexture } from "../gpu/texture_pool.ts";
import { type ConvGeo, convUniforms, tapGemmWgsl } from "./conv2d_tex.ts";
import { grid1d, GRID_ARGS, header, linearIndex, packUniforms, wgslType } from "./common.ts";
import { type Binding, bindings, uniformBinding } from "./bindings.ts";

/** dx: channels x pixels per invocation, invocations per workgroup. */
const TM = 8, NP = 8, WX = 8;
/** dW: output channels x input channels per invocation (multiples of 4). */
const TO = 8, TC = 8;
/** dW: split K until about this many invocations run (lavapipe spreads workgroups over cores). */
const DW_TARGET_LANES = 128;
const PACK_WG = 64, WPACK_WG = 8, SUM_WG = 64;

const U_DECL = `
struct U { N: u32, C: u32, H: u32, W: u32, O: u32, OH: u32, OW: u32, KH: u32,
  KW: u32, S: u32, P: u32, CQ: u32, OQ: u32, KS: u32, RPS: u32, NCOL: u32 };
${uniformBinding()}`;

/** Phase-grid extent along one axis: the most pixels any phase holds. */
const phaseExtent = (size: number, s: number) => Math.ceil(size / s);

/** How the dW GEMM's K = N*OH*OW is split: KS chunks of RPS (n, oy) rows. */
function dwSplit(g: ConvGeo): { ncol: number; ks: number; rps: number } {
  const ncol = g.kh * g.kw * Math.ceil(g.c / TC);
  const base = ncol * Math.ceil(g.o / TO);
  const rows = g.n * g.oh;
  let ks = Math.min(rows, Math.max(1, Math.ceil(DW_TARGET_LANES / base)));
  const rps = Math.ceil(rows / ks);
  ks = Math.ceil(rows / rps);
  return { ncol, ks, rps };
}

/** Whether the packed backward operands (and the dispatch grids) fit the device's limits. */
export function convTexBackwardFits(gpu: Gpu, g: ConvGeo): boolean {
  const l = gpu.limits;
  const d3 = l.maxTextureDimension3D, d2 = l.maxTextureDimension2D;
  const maxWg = l.maxComputeWorkgroupsPerDimension;
  const cq = Math.ceil(g.c / 4), oq = Math.ceil(g.o / 4);
  const phasePix = g.n * phaseExtent(g.h, g.s) * phaseExtent(g.w, g.s);
  const { ncol, ks } = dwSplit(g);
  return Math.max(g.w, g.h, g.ow, g.oh, g.n * cq, g.n * oq) <= d3 &&
    g.kh * g.kw * oq <= d2 && g.c <= d2 &&
    Math.ceil(phasePix / (WX * NP)) <= maxWg && Math.ceil(g.c / TM) <= maxWg &&
    g.s * g.s <= maxWg && Math.ceil((ks * ncol) / WX) <= maxWg && Math.ceil(g.o / TO) <= maxWg;
}

function uniforms(g: ConvGeo, ks = 1, rps = 0, ncol = 0): Uint32Array {
  return convUniforms(g, [Math.ceil(g.c / 4), Math.ceil(g.o / 4), ks, rps, ncol]);
}

/**
 * NCHW [N, C, H, W] -> 3-D texture (W, H, N*ceil(C/4)), channels zero-padded to quads. One invocation
 * per texel, flat over (n*CQ + cq, pixel) so small images waste no lanes ("scalar"). With H*W a
 * multiple of 4 an invocation reads 4 consecutive pixels of each channel as one vector and writes 4
 * texels, the vectors coming from storage ("v4") or from the texels of an f32 staging texture
 * holding the flat buffer, SW texels a row ("staged").
 */
function packActShader(T: string, hdr: string, mode: PackMode): string {
  const ld = (t: string) =>
    mode === "staged"
      ? `textureLoad(src, vec2<u32>((${t}) % u.SW, (${t}) / u.SW), 0)`
      : `vec4<f32>(src[${t}])`;
  const load = mode !== "scalar"
    ? `let hw4 = hw / 4u;
  let pq = i % hw4;
  let zq = i / hw4;
  let n = zq / u.CQ;
  let c0 = (zq % u.CQ) * 4u;
  var r0 = vec4<f32>(0.0);
  var r1 = vec4<f32>(0.0);
  var r2 = vec4<f32>(0.0);
  var r3 = vec4<f32>(0.0);
  let b = (n * u.C + c0) * hw4 + pq;
  r0 = ${ld("b")};
  if (c0 + 1u < u.C) { r1 = ${ld("b + hw4")}; }
  if (c0 + 2u < u.C) { r2 = ${ld("b + 2u * hw4")}; }
  if (c0 + 3u < u.C) { r3 = ${ld("b + 3u * hw4")}; }
  for (var q = 0u; q < 4u; q++) {
    let p = pq * 4u + q;
    textureStore(dst, vec3<u32>(p % u.W, p / u.W, zq), vec4<f32>(r0[q], r1[q], r2[q], r3[q]));
  }`
    : `let p = i % hw;
  let zq = i / hw;
  let n = zq / u.CQ;
  let c0 = (zq % u.CQ) * 4u;
  let b = (n * u.C + c0) * hw + p;
  var v = vec4<f32>(0.0);
  for (var q = 0u; q < 4u; q++) {
    if (c0 + q < u.C) { v[q] = f32(src[b + q * hw]); }
  }
  textureStore(dst, vec3<u32>(p % u.W, p / u.W, zq), v);`;
  const src: Binding = mode === "staged"
    ? ["src", "texture", "texture_2d<f32>"]
    : ["src", "read", mode === "v4" ? `vec4<${T}>` : T];
  return `${hdr}
struct PU { N: u32, C: u32, H: u32, W: u32, CQ: u32, total: u32, SW: u32, p2: u32 };
${uniformBinding("PU")}
${bindings([src, ["dst", "texture", "texture_storage_3d<rgba32float, write>"]])}
@compute @workgroup_size(${PACK_WG})
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(PACK_WG)};
  if (i >= u.total) { return; }
  let hw = u.H * u.W;
  ${load}
}`;
}

/** w [O, C, kh, kw] -> 2-D texture (kh*kw*OQ, C), texel (r*OQ + oq, c) = w[4oq.., c, r]. */
function packWtShader(T: string, hdr: string): string {
  return `${hdr}${U_DECL}
${bindings([["wt", "read", T], ["dst", "texture", "texture_storage_2d<rgba32float, write>"]])}
@compute @workgroup_size(${WPACK_WG}, ${WPACK_WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let khw = u.KH * u.KW;
  let c = gid.y;
  if (gid.x >= khw * u.OQ || c >= u.C) { return; }
  let r = gid.x / u.OQ;
  let o0 = (gid.x % u.OQ) * 4u;
  var v = vec4<f32>(0.0);
  for (var q = 0u; q < 4u; q++) {
    if (o0 + q < u.O) { v[q] = f32(wt[((o0 + q) * u.C + c) * khw + r]); }
  }
  textureStore(dst, gid.xy, v);
}`;
}

function dxShader(T: string, hdr: string): string {
  const L: string[] = [];
  L.push(`${hdr}${U_DECL}
${
    bindings([["tdy", "texture", "texture_3d<f32>"], ["tw", "texture", "texture_2d<f32>"], [
      "dx",
      "read_write",
      T,
    ]])
  }
@compute @workgroup_size(${WX})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let s = u.S;
  // Phase (iy0, ix0): pixels iy = iy0 + s*j, taps ky = ky0 + s*t, dy row oy = by + j - t.
  let iy0 = wid.z / s;
  let ix0 = wid.z % s;
  if (iy0 >= u.H || ix0 >= u.W) { return; }
  let ky0 = (iy0 + u.P) % s;
  let kx0 = (ix0 + u.P) % s;
  let nty = select(0u, (u.KH - ky0 + s - 1u) / s, ky0 < u.KH);
  let ntx = select(0u, (u.KW - kx0 + s - 1u) / s, kx0 < u.KW);
  let ph = (u.H - iy0 + s - 1u) / s;
  let pw = (u.W - ix0 + s - 1u) / s;
  let by = (iy0 + u.P - ky0) / s;
  let bx = (ix0 + u.P - kx0) / s;
  let phw = ph * pw;
  let P = u.N * phw;
  let hw = u.H * u.W;
  let row0 = wid.y * ${TM}u;
  let col0 = (wid.x * ${WX}u + lid.x) * ${NP}u;
  if (col0 >= P) { return; }`);
  for (let i = 0; i < TM; i++) L.push(`  let m${i} = min(row0 + ${i}u, u.C - 1u);`);
  for (let j = 0; j < NP; j++) {
    L.push(`  let p${j} = min(col0 + ${j}u, P - 1u);
  let n${j} = p${j} / phw;
  let jy${j} = (p${j} % phw) / pw;
  let jx${j} = p${j} % pw;
  let z${j} = n${j} * u.OQ;
  let ty${j} = i32(by + jy${j});
  let tx${j} = i32(bx + jx${j});
  let ob${j} = n${j} * u.C * hw + (iy0 + s * jy${j}) * u.W + ix0 + s * jx${j};`);
  }
  for (let i = 0; i < TM; i++) {
    for (let v = 0; v < NP / 4; v++) L.push(`  var acc${i}_${v} = vec4<f32>(0.0);`);
  }
  L.push(`  for (var t = 0u; t < nty; t++) {
    let rrow = (ky0 + s * t) * u.KW;
    for (var v = 0u; v < ntx; v++) {
      let r = rrow + kx0 + s * v;`);
  L.push(
    ...tapGemmWgsl({
      tm: TM,
      np: NP,
      y: (j) => `ty${j} - i32(t)`,
      x: (j) => `tx${j} - i32(v)`,
      h: "u.OH",
      w: "u.OW",
      quads: "u.OQ",
      act: "tdy",
    }),
  );
  L.push(`    }
  }`);
  for (let i = 0; i < TM; i++) {
    L.push(`  if (row0 + ${i}u < u.C) {
    let co = (row0 + ${i}u) * hw;`);
    for (let j = 0; j < NP; j++) {
      L.push(
        `    if (col0 + ${j}u < P) { dx[ob${j} + co] = ${T}(acc${i}_${j >> 2}[${j & 3}]); }`,
      );
    }
    L.push(`  }`);
  }
  L.push(`}`);
  return L.join("\n");
}

function dwShader(OT: string, hdr: string): string {
  const OQN = TO / 4, CQN = TC / 4;
  const L: string[] = [];
  L.push(`${hdr}${U_DECL}
${
    bindings([["tdy", "texture", "texture_3d<f32>"], ["tx", "texture", "texture_3d<f32>"], [
      "dst",
      "read_write",
      OT,
    ]])
  }
@compute @workgroup_size(${WX})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let gi = wid.x * ${WX}u + lid.x;
  let ks = gi / u.NCOL;
  if (ks >= u.KS) { return; }
  let col = gi % u.NCOL;
  let khw = u.KH * u.KW;
  let r = col % khw;
  let cb = col / khw;
  let ky = i32(r / u.KW) - i32(u.P);
  let kx = i32(r % u.KW) - i32(u.P);
  let o0 = wid.y * ${TO}u;`);
  for (let a = 0; a < OQN; a++) L.push(`  let oq${a} = min(o0 / 4u + ${a}u, u.OQ - 1u);`);
  for (let b = 0; b < CQN; b++) L.push(`  let cq${b} = min(cb * ${CQN}u + ${b}u, u.CQ - 1u);`);
  for (let o = 0; o < TO; o++) {
    for (let b = 0; b < CQN; b++) L.push(`  var acc${o}_${b} = vec4<f32>(0.0);`);
  }
  L.push(`  let oxBase = wid.y;
  let rowA = ks * u.RPS;
  let rowB = min(rowA + u.RPS, u.N * u.OH);
  for (var row = rowA; row < rowB; row++) {
    let n = row / u.OH;
    let oy = row % u.OH;
    let iy = i32(oy * u.S) + ky;
    let yok = iy >= 0 && iy < i32(u.H);
    let cy = u32(clamp(iy, 0, i32(u.H) - 1));
    let zd = n * u.OQ;
    let zx = n * u.CQ;
    // From a per-workgroup base, not the constant 0 (see the dx kernel).
    for (var oxPos = oxBase; oxPos < oxBase + u.OW; oxPos++) {
      let ox = oxPos - oxBase;
      let ix = i32(ox * u.S) + kx;
      let ok = select(0.0, 1.0, yok && ix >= 0 && ix < i32(u.W));
      let cx = u32(clamp(ix, 0, i32(u.W) - 1));`);
  for (let a = 0; a < OQN; a++) {
    L.push(`      let d${a} = textureLoad(tdy, vec3<u32>(ox, oy, zd + oq${a}), 0);`);
  }
  for (let b = 0; b < CQN; b++) {
    L.push(`      let x${b} = textureLoad(tx, vec3<u32>(cx, cy, zx + cq${b}), 0) * ok;`);
  }
  for (let o = 0; o < TO; o++) {
    for (let b = 0; b < CQN; b++) {
      L.push(
        `      acc${o}_${b} = fma(vec4<f32>(d${o >> 2}.${"xyzw"[o & 3]}), x${b}, acc${o}_${b});`,
      );
    }
  }
  L.push(`    }
  }
  let base = ks * u.O * u.C * khw;`);
  for (let o = 0; o < TO; o++) {
    L.push(`  if (o0 + ${o}u < u.O) {
    let ob = base + (o0 + ${o}u) * u.C * khw + r;`);
    for (let b = 0; b < CQN; b++) {
      for (let e = 0; e < 4; e++) {
        L.push(`    if ((cb * ${CQN}u + ${b}u) * 4u + ${e}u < u.C) {
      dst[ob + ((cb * ${CQN}u + ${b}u) * 4u + ${e}u) * khw] = ${OT}(acc${o}_${b}[${e}]);
    }`);
      }
    }
    L.push(`  }`);
  }
  L.push(`}`);
  return L.join("\n");
}

/** Sums KS f32 partial dW blocks of M elements each into dW. */
function sumShader(T: string, hdr: string): string {
  return `${hdr}
struct SU { M: u32, KS: u32, p0: u32, p1: u32 };
${uniformBinding("SU")}
${bindings([["part", "read", "f32"], ["dst", "read_write", T]])}
@compute @workgroup_size(${SUM_WG})
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(SUM_WG)};
  if (i >= u.M) { return; }
  var acc = 0.0;
  // Walks the partials' offsets (not k from the constant 0, see the dx kernel).
  for (var j = i; j < u.KS * u.M; j += u.M) { acc += part[j]; }
  dst[i] = ${T}(acc);
}`;
}

type PackMode = "scalar" | "v4" | "staged";

/** Width in texels of the staging texture a flat f32 buffer is copied into (0: no staging). */
function stagingWidth(t: Tensor, texels: number): number {
  const max = t.gpu.limits.maxTextureDimension2D;
  for (let sw = 64; sw <= max; sw *= 2) {
    const rows = Math.ceil(texels / sw);
    if (rows <= max) return rows * sw * 16 <= t.buffer.size ? sw : 0;
  }
  return 0;
}

/**
 * Packs an NCHW activation into a (W, H, N*ceil(C/4)) texture (also the forward's x operand, see
 * conv2d_tex.ts); the caller releases it.
 */
export function packAct(t: Tensor, n: number, c: number, h: number, w: number): PooledTexture {
  const gpu = t.gpu;
  const T = wgslType(t.dtype);
  const v4 = (h * w) % 4 === 0;
  const sw = v4 && t.dtype === "f32" ? stagingWidth(t, t.size / 4) : 0;
  const mode: PackMode = sw ? "staged" : v4 ? "v4" : "scalar";
  const k = gpu.kernel(
    "conv2d_texb_pack",
    `${T}|${mode}`,
    () => packActShader(T, header(t.dtype), mode),
  );
  const cq = Math.ceil(c / 4);
  const tex = acquireTexture(gpu, "3d", w, h, n * cq);
  const total = n * cq * (v4 ? h * w / 4 : h * w);
  const u = packUniforms([n, c, h, w, cq, total, sw, 0]);
  if (sw) {
    // A plain copy puts the flat buffer into texels (4 consecutive elements each), which the pack
    // then reads with SIMD texel fetches instead of per-lane storage loads.
    const rows = Math.ceil(t.size / 4 / sw);
    const stage = acquireTexture(gpu, "2d", sw, rows, 1);
    gpu.copyToTexture(t.buffer, { bytesPerRow: sw * 16, rowsPerImage: rows }, stage.tex, [
      sw,
      rows,
      1,
    ]);
    gpu.dispatch(k, [stage.view, tex.view], u, grid1d(gpu, total, PACK_WG));
    releaseTexture(gpu, stage);
  } else {
    gpu.dispatch(k, [t.buffer, tex.view], u, grid1d(gpu, total, PACK_WG));
  }
  return tex;
}

function runDx(texDy: PooledTexture, w: Tensor, dx: Tensor, g: ConvGeo): void {
  const gpu = dx.gpu;
  const T = wgslType(dx.dtype);
  const hdr = header(dx.dtype);
  const oq = Math.ceil(g.o / 4);
  const u = uniforms(g);
  const kp = gpu.kernel("conv2d_texb_pack_wt", T, () => packWtShader(T, hdr));
  const kd = gpu.kernel("conv2d_tex_dx", T, () => dxShader(T, hdr));
  const kq = g.kh * g.kw * oq;
  const texW = acquireTexture(gpu, "2d", kq, g.c, 1);
  gpu.dispatch(kp, [w.buffer, texW.view], u, [Math.ceil(kq / WPACK_WG), Math.ceil(g.c / WPACK_WG)]);
  const phasePix = g.n * phaseExtent(g.h, g.s) * phaseExtent(g.w, g.s);
  gpu.dispatch(kd, [texDy.view, texW.view, dx.buffer], u, [
    Math.ceil(phasePix / (WX * NP)),
    Math.ceil(g.c / TM),
    g.s * g.s,
  ]);
  releaseTexture(gpu, texW);
}

function runDw(texDy: PooledTexture, texX: PooledTexture, dw: Tensor, g: ConvGeo): void {
  const gpu = dw.gpu;
  const T = wgslType(dw.dtype);
  const hdr = header(dw.dtype);
  const { ncol, ks, rps } = dwSplit(g);
  const u = uniforms(g, ks, rps, ncol);
  const grid: [number, number] = [Math.ceil((ks * ncol) / WX), Math.ceil(g.o / TO)];
  if (ks === 1) {
    const k = gpu.kernel("conv2d_tex_dw", T, () => dwShader(T, hdr));
    gpu.dispatch(k, [texDy.view, texX.view, dw.buffer], u, grid);
    return;
  }
  const m = dw.size;
  const part = Tensor.empty(gpu, [ks * m], "f32");
  const k = gpu.kernel("conv2d_tex_dw", "f32", () => dwShader("f32", ""));
  gpu.dispatch(k, [texDy.view, texX.view, part.buffer], u, grid);
  const ks2 = gpu.kernel("conv2d_tex_dw_sum", T, () => sumShader(T, hdr));
  gpu.dispatch(ks2, [part.buffer, dw.buffer], packUniforms([m, ks, 0, 0]), grid1d(gpu, m, SUM_WG));
  part.dispose();
}

/**
 * Gradients of a convolution through packed textures, recorded in the current batch: dx into `dx`
 * [N, C, H, W] (needs `w`), dW into `dw` [O, C, kh, kw] (needs `x`); dy is packed once for both.
 */
export function convTexBackward(
  dy: Tensor,
  g: ConvGeo,
  d: { x?: Tensor; w?: Tensor; dx?: Tensor; dw?: Tensor },
): void {
  const gpu = dy.gpu;
  if (!d.dx && !d.dw) return;
  const texDy = packAct(dy, g.n, g.o, g.oh, g.ow);
  if (d.dx) runDx(texDy, d.w!, d.dx, g);
  if (d.dw) {
    const texX = packAct(d.x!, g.n, g.c, g.h, g.w);
    runDw(texDy, texX, d.dw, g);
    releaseTexture(gpu, texX);
  }
  releaseTexture(gpu, texDy);
}
