/**
 * The GPU-shaped convolutions: the three implicit GEMMs of conv2d (forward, dx, dW) on the
 * workgroup-memory tiled GEMM of matmul_tiled.ts. No im2col buffer: the tile loaders gather from x
 * (or dy) with zero padding while staging a tile in workgroup memory, so every gathered element is
 * read from global memory once per workgroup. f32 or f16 storage, f32 accumulation.
 *
 * GEMM views (rows x columns, summed over k), as in conv2d.ts:
 * - forward: y[o, (n, oy, ox)] = sum_(c, ky, kx) w[o, c, ky, kx] x[n, c, oy*s-p+ky, ox*s-p+kx]
 * - dx: dx[c, (n, iy, ix)] = sum_(o, ky, kx) w[o, c, ky, kx] dy[n, o, (iy+p-ky)/s, (ix+p-kx)/s]
 *   (only where the division is exact and in range)
 * - dW: dw[o, (c, ky, kx)] = sum_(n, oy, ox) dy[n, o, oy, ox] x[n, c, oy*s-p+ky, ox*s-p+kx]
 */
import { GpuError } from "../gpu/errors.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { wgslType } from "./common.ts";
import { opt, uniformBinding } from "./bindings.ts";
import { type ConvGeo, convUniforms } from "./conv2d_tex.ts";
import {
  checkTile,
  TILED_TILE,
  tiledGemmShader,
  tiledKey,
  type TiledOperands,
  type TiledTile,
} from "./matmul_tiled.ts";

const U_DECL = `
struct U { N: u32, C: u32, H: u32, W: u32, O: u32, OH: u32, OW: u32, KH: u32,
  KW: u32, S: u32, P: u32, GM: u32, GN: u32, GK: u32, p0: u32, p1: u32 };
${uniformBinding()}`;

/** x[n, c, iy, ix] with zero padding outside the image (b: element offset of image n, channel c). */
const X_GATHER = `
fn xg(b: u32, iy: i32, ix: i32) -> f32 {
  if (iy < 0 || iy >= i32(u.H) || ix < 0 || ix >= i32(u.W)) { return 0.0; }
  return f32(x[b + u32(iy) * u.W + u32(ix)]);
}`;

type Mode = "fwd" | "dx" | "dw";

function operands(mode: Mode, T: string, bias: boolean, w4: boolean): TiledOperands {
  const ext = { mExtent: "u.GM", nExtent: "u.GN", kExtent: "u.GK" };
  if (mode === "fwd") {
    return {
      ...ext,
      decls: U_DECL,
      inputs: [
        ["x", "read", T],
        ["wt", "read", w4 ? `vec4<${T}>` : T],
        opt(bias, ["bias", "read", T]),
      ],
      helpers: X_GATHER,
      prologue: `
  let ohw = u.OH * u.OW;
  let khw = u.KH * u.KW;`,
      // A = weights [O, C*KH*KW], row-major: vec4 loads along k when K is a multiple of 4.
      loadA: (r, k) =>
        w4 ? `f32(wt[(${r} * K + ${k}) / 4u][(${r} * K + ${k}) % 4u])` : `f32(wt[${r} * K + ${k}])`,
      loadA4k: w4 ? (r, k) => `vec4<f32>(wt[(${r} * K + ${k}) / 4u])` : undefined,
      loadB: (k, col) =>
        `xg(((${col} / ohw) * u.C + ${k} / khw) * u.H * u.W, ` +
        `i32(((${col} % ohw) / u.OW) * u.S + (${k} % khw) / u.KW) - i32(u.P), ` +
        `i32((${col} % u.OW) * u.S + ${k} % u.KW) - i32(u.P))`,
      outIndex: (r, col) => `((${col} / ohw) * u.O + ${r}) * ohw + ${col} % ohw`,
      rowBias: bias ? (r) => `f32(bias[${r}])` : undefined,
    };
  }
  if (mode === "dx") {
    return {
      ...ext,
      decls: U_DECL,
      inputs: [["dy", "read", T], ["wt", "read", T]],
      helpers: `
fn dyg(b: u32, ty: i32, tx: i32) -> f32 {
  let s = i32(u.S);
  if (ty < 0 || tx < 0 || ty % s != 0 || tx % s != 0) { return 0.0; }
  let oy = ty / s;
  let ox = tx / s;
  if (oy >= i32(u.OH) || ox >= i32(u.OW)) { return 0.0; }
  return f32(dy[b + u32(oy) * u.OW + u32(ox)]);
}`,
      prologue: `
  let hw = u.H * u.W;
  let khw = u.KH * u.KW;`,
      // A[c, (o, ky, kx)] = w[o, c, ky, kx].
      loadA: (r, k) => `f32(wt[((${k} / khw) * u.C + ${r}) * khw + ${k} % khw])`,
      loadB: (k, col) =>
        `dyg(((${col} / hw) * u.O + ${k} / khw) * u.OH * u.OW, ` +
        `i32((${col} % hw) / u.W + u.P) - i32((${k} % khw) / u.KW), ` +
        `i32(${col} % u.W + u.P) - i32(${k} % u.KW))`,
      outIndex: (r, col) => `((${col} / hw) * u.C + ${r}) * hw + ${col} % hw`,
    };
  }
  return {
    ...ext,
    decls: U_DECL,
    inputs: [["dy", "read", T], ["x", "read", T]],
    helpers: X_GATHER,
    prologue: `
  let ohw = u.OH * u.OW;
  let khw = u.KH * u.KW;`,
    // A[o, (n, p)] = dy[n, o, p]: contiguous along k within an image.
    loadA: (r, k) => `f32(dy[((${k} / ohw) * u.O + ${r}) * ohw + ${k} % ohw])`,
    loadB: (k, col) =>
      `xg(((${k} / ohw) * u.C + ${col} / khw) * u.H * u.W, ` +
      `i32(((${k} % ohw) / u.OW) * u.S + (${col} % khw) / u.KW) - i32(u.P), ` +
      `i32((${k} % u.OW) * u.S + ${col} % u.KW) - i32(u.P))`,
    // Neighbouring k are neighbouring output pixels: x is read along its rows.
    bKContiguous: true,
    outIndex: (r, col) => `${r} * N + ${col}`,
  };
}

function run(
  mode: Mode,
  g: ConvGeo,
  bufs: GPUBuffer[],
  out: Tensor,
  gm: number,
  gn: number,
  gk: number,
  tile: TiledTile,
  bias = false,
): void {
  const gpu = out.gpu;
  checkTile(tile, gpu.limits);
  const T = wgslType(out.dtype);
  const w4 = mode === "fwd" && gk % 4 === 0;
  const kern = gpu.kernel(
    `conv2d_tiled_${mode}`,
    `${T}|${bias}|${w4}|${tiledKey(tile)}`,
    () => tiledGemmShader(out.dtype, tile, operands(mode, T, bias, w4)),
  );
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  const gx = Math.ceil(gn / tile.bn), gy = Math.ceil(gm / tile.bm);
  if (gx > max || gy > max) {
    throw new GpuError(`conv2d: problem too large for one dispatch (${gm} x ${gn})`);
  }
  gpu.dispatch(kern, [...bufs, out.buffer], convUniforms(g, [gm, gn, gk]), [gx, gy, 1]);
}

/** Forward convolution into `out` [N, O, OH, OW]. */
export function convTiledForward(
  x: Tensor,
  w: Tensor,
  bias: Tensor | undefined,
  out: Tensor,
  g: ConvGeo,
  tile: TiledTile = TILED_TILE,
): void {
  const bufs = bias ? [x.buffer, w.buffer, bias.buffer] : [x.buffer, w.buffer];
  run("fwd", g, bufs, out, g.o, g.n * g.oh * g.ow, g.c * g.kh * g.kw, tile, !!bias);
}

/** Gradient with respect to x into `dx` [N, C, H, W]. */
export function convTiledDx(
  dy: Tensor,
  w: Tensor,
  dx: Tensor,
  g: ConvGeo,
  tile: TiledTile = TILED_TILE,
): void {
  run("dx", g, [dy.buffer, w.buffer], dx, g.c, g.n * g.h * g.w, g.o * g.kh * g.kw, tile);
}

/** Gradient with respect to the weight into `dw` [O, C, KH, KW]. */
export function convTiledDw(
  dy: Tensor,
  x: Tensor,
  dw: Tensor,
  g: ConvGeo,
  tile: TiledTile = TILED_TILE,
): void {
  run("dw", g, [dy.buffer, x.buffer], dw, g.o, g.c * g.kh * g.kw, g.n * g.oh * g.ow, tile);
}
