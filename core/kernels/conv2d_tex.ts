/// <reference types="@webgpu/types" />
/**
 * Texture-operand forward path of conv2d (see matmul_tex.ts for why textures: on lavapipe a
 * `textureLoad` is a branchless SIMD fetch, a storage load a per-lane loop). x is packed into a 3-D
 * rgba32float texture, texel (ix, iy, n*CQ + cq) = channels 4cq..4cq+3 of pixel (n, iy, ix), by the
 * activation pack the backward uses too (conv2d_tex_backward.ts: an f32 x goes through a staging
 * texture, about twice as fast as packing from storage loads); the weight into a 2-D texture, texel
 * ((ky*kw + kx)*CQ + cq, o) = w[o, 4cq..4cq+3, ky, kx]. The implicit GEMM then walks (ky, kx)
 * outside and channel quads inside, so the zero-padding mask of each output pixel is computed once
 * per tap, and each invocation accumulates 8 channels x 8 pixels in registers.
 */
import type { Gpu } from "../gpu/device.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { acquireTexture, releaseTexture } from "../gpu/texture_pool.ts";
import { header, packUniforms, wgslType } from "./common.ts";
import { bindings, opt, uniformBinding } from "./bindings.ts";
import { packAct } from "./conv2d_tex_backward.ts";

const TM = 8, NP = 8, WX = 8, PACK_WG = 8;

/** Geometry of a convolution (as conv2d.ts computes it). */
export interface ConvGeo {
  n: number;
  c: number;
  h: number;
  w: number;
  o: number;
  kh: number;
  kw: number;
  oh: number;
  ow: number;
  s: number;
  p: number;
}

/**
 * The uniforms every conv kernel starts with (N, C, H, W, O, OH, OW, KH, KW, S, P), then `extra`
 * (the kernel's own fields), zero-padded to 16 words.
 */
export function convUniforms(g: ConvGeo, extra: number[]): Uint32Array {
  const head = [g.n, g.c, g.h, g.w, g.o, g.oh, g.ow, g.kh, g.kw, g.s, g.p, ...extra];
  if (head.length > 16) throw new Error("convUniforms: more than 16 words");
  return packUniforms([...head, ...new Array(16 - head.length).fill(0)]);
}

/** Whether the packed operands fit the device's texture limits. */
export function convTexFits(gpu: Gpu, g: ConvGeo): boolean {
  const l = gpu.limits;
  const cq = Math.ceil(g.c / 4);
  const d3 = l.maxTextureDimension3D;
  return g.w <= d3 && g.h <= d3 && g.n * cq <= d3 &&
    g.kh * g.kw * cq <= l.maxTextureDimension2D && g.o <= l.maxTextureDimension2D;
}

const U_DECL = `
struct U { N: u32, C: u32, H: u32, W: u32, O: u32, OH: u32, OW: u32, KH: u32,
  KW: u32, S: u32, P: u32, CQ: u32, p0: u32, p1: u32, p2: u32, p3: u32 };
${uniformBinding()}`;

function packWShader(T: string, hdr: string): string {
  return `${hdr}${U_DECL}
${bindings([["wt", "read", T], ["dst", "texture", "texture_storage_2d<rgba32float, write>"]])}
@compute @workgroup_size(${PACK_WG}, ${PACK_WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let kq = gid.x;
  let o = gid.y;
  if (kq >= u.KH * u.KW * u.CQ || o >= u.O) { return; }
  let r = kq / u.CQ;
  let cq = kq % u.CQ;
  var v = vec4<f32>(0.0);
  for (var q = 0u; q < 4u; q++) {
    let c = cq * 4u + q;
    if (c < u.C) { v[q] = f32(wt[(o * u.C + c) * u.KH * u.KW + r]); }
  }
  textureStore(dst, vec2<u32>(kq, o), v);
}`;
}

/** How {@link tapGemmWgsl} reads one tap. */
export interface TapGemm {
  /** Invocation tile: output rows (texels of `tw` at rows m0..) and pixels (b0..). */
  tm: number;
  np: number;
  /** WGSL i32 row/column of pixel j's activation texel at this tap (may be out of range). */
  y: (j: number) => string;
  x: (j: number) => string;
  /** WGSL u32 height and width of the activation texture, and its channel quads per image. */
  h: string;
  w: string;
  quads: string;
  /** Name of the 3-D activation texture; `tw` (2-D, texel (r * quads + q, m)) is the weight. */
  act: string;
}

/**
 * WGSL lines of one tap (r, a u32 in scope) of the texture implicit GEMM shared by the forward and
 * dx kernels: the zero-padding mask and clamped coordinates of each pixel, fixed for all channel
 * quads, then the walk over quads accumulating `tm` x `np` products in `acc{i}_{v}` (z{j}: pixel
 * j's first texture layer).
 */
export function tapGemmWgsl(o: TapGemm): string[] {
  const L: string[] = [];
  for (let j = 0; j < o.np; j++) {
    L.push(`    let yy${j} = ${o.y(j)};
    let xx${j} = ${o.x(j)};
    let ok${j} = select(0.0, 1.0, yy${j} >= 0 && yy${j} < i32(${o.h}) && xx${j} >= 0 && xx${j} < i32(${o.w}));
    let cy${j} = u32(clamp(yy${j}, 0, i32(${o.h}) - 1));
    let cx${j} = u32(clamp(xx${j}, 0, i32(${o.w}) - 1));`);
  }
  // kq counts from r * quads (a per-workgroup value), not from the constant 0: lavapipe (Mesa 22)
  // specialises the uniform bound of a constant-start loop at each dispatch and can end up
  // recompiling per dispatch.
  L.push(`    let kqBase = r * ${o.quads};
    for (var kq = kqBase; kq < kqBase + ${o.quads}; kq++) {
      let q4 = kq - kqBase;`);
  for (let i = 0; i < o.tm; i++) {
    L.push(`      let a${i} = textureLoad(tw, vec2<u32>(kq, m${i}), 0);`);
  }
  for (let j = 0; j < o.np; j++) {
    L.push(
      `      let b${j} = textureLoad(${o.act}, vec3<u32>(cx${j}, cy${j}, z${j} + q4), 0) * ok${j};`,
    );
  }
  for (let q = 0; q < 4; q++) {
    const c = "xyzw"[q];
    for (let v = 0; v < o.np / 4; v++) {
      const js = [0, 1, 2, 3].map((t) => `b${4 * v + t}.${c}`).join(", ");
      L.push(`      let bq${q}_${v} = vec4<f32>(${js});`);
    }
    for (let i = 0; i < o.tm; i++) {
      for (let v = 0; v < o.np / 4; v++) {
        L.push(`      acc${i}_${v} = fma(vec4<f32>(a${i}.${c}), bq${q}_${v}, acc${i}_${v});`);
      }
    }
  }
  L.push(`    }`);
  return L;
}

function gemmShader(T: string, hdr: string, bias: boolean): string {
  const L: string[] = [];
  L.push(`${hdr}${U_DECL}
${
    bindings([
      ["tx", "texture", "texture_3d<f32>"],
      ["tw", "texture", "texture_2d<f32>"],
      opt(bias, ["bias", "read", T]),
      ["y", "read_write", T],
    ])
  }
@compute @workgroup_size(${WX})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let ohw = u.OH * u.OW;
  let P = u.N * ohw;
  let row0 = wid.y * ${TM}u;
  let col0 = (wid.x * ${WX}u + lid.x) * ${NP}u;`);
  for (let i = 0; i < TM; i++) L.push(`  let m${i} = min(row0 + ${i}u, u.O - 1u);`);
  for (let j = 0; j < NP; j++) {
    L.push(`  let p${j} = min(col0 + ${j}u, P - 1u);
  let z${j} = (p${j} / ohw) * u.CQ;
  let iy${j} = i32(((p${j} % ohw) / u.OW) * u.S) - i32(u.P);
  let ix${j} = i32((p${j} % u.OW) * u.S) - i32(u.P);`);
  }
  for (let i = 0; i < TM; i++) {
    for (let v = 0; v < NP / 4; v++) L.push(`  var acc${i}_${v} = vec4<f32>(0.0);`);
  }
  // Both loops count from per-workgroup bases, not the constant 0: lavapipe (Mesa 22) specialises
  // the uniform bound of a constant-start loop at each dispatch and can end up recompiling per
  // dispatch.
  L.push(`  let rBase = wid.x;
  for (var rPos = rBase; rPos < rBase + u.KH * u.KW; rPos++) {
    let r = rPos - rBase;
    let ky = i32(r / u.KW);
    let kx = i32(r % u.KW);`);
  L.push(
    ...tapGemmWgsl({
      tm: TM,
      np: NP,
      y: (j) => `iy${j} + ky`,
      x: (j) => `ix${j} + kx`,
      h: "u.H",
      w: "u.W",
      quads: "u.CQ",
      act: "tx",
    }),
  );
  L.push(`  }`);
  for (let i = 0; i < TM; i++) {
    L.push(`  if (row0 + ${i}u < u.O) {`);
    L.push(`    let o = row0 + ${i}u;`);
    if (bias) L.push(`    let bo = f32(bias[o]);`);
    for (let j = 0; j < NP; j++) {
      const val = `acc${i}_${j >> 2}[${j & 3}]${bias ? " + bo" : ""}`;
      L.push(`    if (col0 + ${j}u < P) {
      let pj = col0 + ${j}u;
      y[((pj / ohw) * u.O + o) * ohw + pj % ohw] = ${T}(${val});
    }`);
    }
    L.push(`  }`);
  }
  L.push(`}`);
  return L.join("\n");
}

/**
 * Forward convolution through packed textures into `out` [N, O, OH, OW], recorded in the current
 * batch like any other op.
 */
export function convTexForward(
  x: Tensor,
  w: Tensor,
  bias: Tensor | undefined,
  out: Tensor,
  g: ConvGeo,
): void {
  const gpu = out.gpu;
  const T = wgslType(x.dtype);
  const hdr = header(x.dtype);
  const cq = Math.ceil(g.c / 4);
  const kw = gpu.kernel("conv2d_tex_pack_w", T, () => packWShader(T, hdr));
  const kg = gpu.kernel("conv2d_tex", `${T}|${!!bias}`, () => gemmShader(T, hdr, !!bias));
  // x is packed by the backward's activation pack (f32 through a staging texture, see there).
  const texX = packAct(x, g.n, g.c, g.h, g.w);
  const kq = g.kh * g.kw * cq;
  const texW = acquireTexture(gpu, "2d", kq, g.o, 1);
  const u = convUniforms(g, [cq]);
  gpu.dispatch(kw, [w.buffer, texW.view], u, [Math.ceil(kq / PACK_WG), Math.ceil(g.o / PACK_WG)]);
  const P = g.n * g.oh * g.ow;
  gpu.dispatch(
    kg,
    [texX.view, texW.view, ...(bias ? [bias.buffer] : []), out.buffer],
    u,
    [Math.ceil(P / (WX * NP)), Math.ceil(g.o / TM)],
  );
  releaseTexture(gpu, texX);
  releaseTexture(gpu, texW);
}
