/**
 * 2-D convolution (NCHW, PyTorch weight layout [O, C, kh, kw]) as an implicit GEMM on the
 * register-blocked kernel of `matmul_wgsl.ts`: no im2col buffer, the GEMM's K loop walks
 * (c, ky, kx) and gathers from x with zero padding. Backward uses the same machinery:
 * dx is an implicit GEMM of dy with the transposed weights (stride handled by a divisibility test),
 * dW an implicit GEMM over (n, oy, ox), dbias a reduction. f32 or f16 storage, f32 accumulation.
 * By default forward and backward take the texture-operand paths (conv2d_tex.ts,
 * conv2d_tex_backward.ts) when the operands fit the texture limits; `path: "storage"` forces these.
 */
import { GpuError } from "../gpu/errors.ts";
import type { Gpu } from "../gpu/device.ts";
import { record, save } from "../tensor/autograd.ts";
import { Tensor } from "../tensor/tensor.ts";
import type { DType } from "../tensor/tensor.ts";
import { checkArgs, sameDtype, wgslType } from "./common.ts";
import { opt, uniformBinding } from "./bindings.ts";
import { sumTo } from "./reduce.ts";
import { type ConvGeo, convTexFits, convTexForward, convUniforms } from "./conv2d_tex.ts";
import { convTexBackward, convTexBackwardFits } from "./conv2d_tex_backward.ts";
import { convTiledDw, convTiledDx, convTiledForward } from "./conv2d_tiled.ts";
import {
  type GemmOperands,
  gemmShader,
  type GemmTile,
  tileExtent,
  tileKey,
} from "./matmul_wgsl.ts";

/** Options of {@link conv2d}. */
export interface Conv2dOptions {
  /** Stride in both directions (default 1). */
  stride?: number;
  /** Zero padding on every side (default 0). */
  padding?: number;
  /** Override the GEMM tile (benchmarks). */
  tile?: GemmTile;
  /**
   * Operand path of forward and backward: "tiled" (workgroup-memory tiles, the GPU-shaped kernels
   * of conv2d_tiled.ts), "texture" (packed textures, much faster on lavapipe; conv2d_tex.ts,
   * conv2d_tex_backward.ts) or "storage" (the implicit GEMMs here). Default: tiled where the
   * adapter's caps say `tiledKernels`, else texture when the operands fit the texture limits (and
   * no `tile` is given).
   */
  path?: "texture" | "storage" | "tiled";
}

/** Tile for the convolution GEMMs: gathers are costly, so each invocation owns a large block. */
export const CONV_TILE: GemmTile = { tm: 16, nv: 2, wx: 8, wy: 1, uk: 2 };

type Geo = ConvGeo;

/** Output spatial size of a convolution. */
export function convOutSize(size: number, k: number, stride: number, pad: number): number {
  return Math.floor((size + 2 * pad - k) / stride) + 1;
}

function geometry(x: Tensor, w: Tensor, bias: Tensor | undefined, o: Conv2dOptions): Geo {
  const s = o.stride ?? 1, p = o.padding ?? 0;
  const what = `x [${x.shape}], weight [${w.shape}]${bias ? `, bias [${bias.shape}]` : ""}`;
  if (x.shape.length !== 4 || w.shape.length !== 4) {
    throw new GpuError(`conv2d: expects x [N, C, H, W] and weight [O, C, kh, kw], got ${what}`);
  }
  const [n, c, h, wd] = x.shape;
  const [oc, ic, kh, kw] = w.shape;
  if (ic !== c) {
    throw new GpuError(`conv2d: x has ${c} channels but weight expects ${ic} (${what})`);
  }
  if (bias && (bias.shape.length !== 1 || bias.shape[0] !== oc)) {
    throw new GpuError(`conv2d: bias must have shape [${oc}] (${what})`);
  }
  if (!Number.isInteger(s) || s < 1 || !Number.isInteger(p) || p < 0) {
    throw new GpuError(`conv2d: invalid stride ${s} / padding ${p} (${what})`);
  }
  const oh = convOutSize(h, kh, s, p), ow = convOutSize(wd, kw, s, p);
  if (oh < 1 || ow < 1) throw new GpuError(`conv2d: empty output for ${what}, padding ${p}`);
  return { n, c, h, w: wd, o: oc, kh, kw, oh, ow, s, p };
}

const U_DECL = `
struct U { N: u32, C: u32, H: u32, W: u32, O: u32, OH: u32, OW: u32, KH: u32,
  KW: u32, S: u32, P: u32, GM: u32, GN: u32, GK: u32, p0: u32, p1: u32 };
${uniformBinding()}`;

function uniforms(g: Geo, gm: number, gn: number, gk: number): Uint32Array {
  return convUniforms(g, [gm, gn, gk]);
}

type Mode = "fwd" | "dx" | "dw";

/** Per-mode operand loaders of the implicit GEMM. */
function operands(mode: Mode, T: string, tile: GemmTile, bias: boolean): GemmOperands {
  const tn = 4 * tile.nv;
  const cols = (f: (j: number) => string) => Array.from({ length: tn }, (_, j) => f(j)).join("\n");
  const rows = (f: (i: number) => string) =>
    Array.from({ length: tile.tm }, (_, i) => f(i)).join("\n");
  const base = { kExtent: "u.GK", mExtent: "u.GM", nExtent: "u.GN" };
  if (mode === "fwd") {
    // C[o, (n, oy, ox)] = sum_(c, ky, kx) w[o, c, ky, kx] * x[n, c, oy*s-p+ky, ox*s-p+kx]
    return {
      ...base,
      decls: U_DECL,
      inputs: [["x", "read", T], ["wt", "read", T], opt(bias, ["bias", "read", T])],
      prologue: `
  let ohw = u.OH * u.OW;
  let khw = u.KH * u.KW;
${
        cols((j) =>
          `  let xb${j} = (n${j} / ohw) * u.C * u.H * u.W;
  let iy${j} = i32(((n${j} % ohw) / u.OW) * u.S) - i32(u.P);
  let ix${j} = i32((n${j} % u.OW) * u.S) - i32(u.P);`
        )
      }
${rows((i) => `  let wr${i} = m${i} * K;`)}
  var kc = 0u; var ky = 0u; var kx = 0u;`,
      kStep: `
    kc = kk / khw; ky = (kk % khw) / u.KW; kx = kk % u.KW;`,
      loadA: (i, kk) => `f32(wt[wr${i} + ${kk}])`,
      loadB: (j) => `xg(xb${j} + kc * u.H * u.W, iy${j} + i32(ky), ix${j} + i32(kx))`,
      helpers: `
fn xg(b: u32, iy: i32, ix: i32) -> f32 {
  let ok = iy >= 0 && iy < i32(u.H) && ix >= 0 && ix < i32(u.W);
  let idx = b + u32(clamp(iy, 0, i32(u.H) - 1)) * u.W + u32(clamp(ix, 0, i32(u.W) - 1));
  return select(0.0, f32(x[idx]), ok);
}`,
      outIndex: (r, c) =>
        `(${c} / (u.OH * u.OW)) * u.O * u.OH * u.OW + ${r} * u.OH * u.OW + ${c} % (u.OH * u.OW)`,
      rowBias: bias ? (r) => `f32(bias[min(${r}, M - 1u)])` : undefined,
    };
  }
  if (mode === "dx") {
    // dx[c, (n, iy, ix)] = sum_(o, ky, kx) w[o, c, ky, kx] * dy[n, o, (iy+p-ky)/s, (ix+p-kx)/s]
    return {
      ...base,
      decls: U_DECL,
      inputs: [["dy", "read", T], ["wt", "read", T]],
      prologue: `
  let hw = u.H * u.W;
  let khw = u.KH * u.KW;
${
        cols((j) =>
          `  let db${j} = (n${j} / hw) * u.O * u.OH * u.OW;
  let ty${j} = i32((n${j} % hw) / u.W + u.P);
  let tx${j} = i32(n${j} % u.W + u.P);`
        )
      }
${rows((i) => `  let wr${i} = m${i} * khw;`)}
  var ko = 0u; var kr = 0u; var ky = 0u; var kx = 0u;`,
      kStep: `
    ko = kk / khw; kr = kk % khw; ky = kr / u.KW; kx = kr % u.KW;`,
      loadA: (i) => `f32(wt[ko * u.C * khw + wr${i} + kr])`,
      loadB: (j) => `dyg(db${j} + ko * u.OH * u.OW, ty${j} - i32(ky), tx${j} - i32(kx))`,
      helpers: `
fn dyg(b: u32, ty: i32, tx: i32) -> f32 {
  let s = i32(u.S);
  let oy = ty / s;
  let ox = tx / s;
  let ok = ty >= 0 && tx >= 0 && ty % s == 0 && tx % s == 0 && oy < i32(u.OH) && ox < i32(u.OW);
  let idx = b + u32(clamp(oy, 0, i32(u.OH) - 1)) * u.OW + u32(clamp(ox, 0, i32(u.OW) - 1));
  return select(0.0, f32(dy[idx]), ok);
}`,
      outIndex: (r, c) =>
        `(${c} / (u.H * u.W)) * u.C * u.H * u.W + ${r} * u.H * u.W + ${c} % (u.H * u.W)`,
    };
  }
  // dW[o, (c, ky, kx)] = sum_(n, oy, ox) dy[n, o, oy, ox] * x[n, c, oy*s-p+ky, ox*s-p+kx]
  return {
    ...base,
    decls: U_DECL,
    inputs: [["dy", "read", T], ["x", "read", T]],
    prologue: `
  let ohw = u.OH * u.OW;
  let khw = u.KH * u.KW;
${
      cols((j) =>
        `  let xc${j} = (n${j} / khw) * u.H * u.W;
  let ky${j} = i32((n${j} % khw) / u.KW) - i32(u.P);
  let kx${j} = i32(n${j} % u.KW) - i32(u.P);`
      )
    }
${rows((i) => `  let dr${i} = m${i} * ohw;`)}
  var qn = 0u; var qp = 0u; var oy = 0; var ox = 0;`,
    kStep: `
    qn = kk / ohw; qp = kk % ohw; oy = i32((qp / u.OW) * u.S); ox = i32((qp % u.OW) * u.S);`,
    loadA: (i) => `f32(dy[qn * u.O * ohw + dr${i} + qp])`,
    loadB: (j) => `xg(qn * u.C * u.H * u.W + xc${j}, oy + ky${j}, ox + kx${j})`,
    helpers: `
fn xg(b: u32, iy: i32, ix: i32) -> f32 {
  let ok = iy >= 0 && iy < i32(u.H) && ix >= 0 && ix < i32(u.W);
  let idx = b + u32(clamp(iy, 0, i32(u.H) - 1)) * u.W + u32(clamp(ix, 0, i32(u.W) - 1));
  return select(0.0, f32(x[idx]), ok);
}`,
    outIndex: (r, c) => `${r} * N + ${c}`,
  };
}

function run(
  mode: Mode,
  dt: DType,
  g: Geo,
  bufs: GPUBuffer[],
  out: Tensor,
  gm: number,
  gn: number,
  gk: number,
  tile: GemmTile,
  bias = false,
): void {
  const gpu = out.gpu;
  const T = wgslType(dt);
  const kern = gpu.kernel(
    `conv2d_${mode}`,
    `${T}|${bias}|${tileKey(tile)}`,
    () => gemmShader(dt, tile, operands(mode, T, tile, bias)),
  );
  const { bm, bn } = tileExtent(tile);
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  const gx = Math.ceil(gn / bn), gy = Math.ceil(gm / bm);
  if (gx > max || gy > max) {
    throw new GpuError(`conv2d: problem too large for one dispatch (${gm} x ${gn})`);
  }
  gpu.dispatch(kern, [...bufs, out.buffer], uniforms(g, gm, gn, gk), [gx, gy, 1]);
}

/** Whether `o` asks for (or defaults to) the tiled path. */
function wantsTiled(gpu: Gpu, o: Conv2dOptions): boolean {
  return o.path === "tiled" || (o.path === undefined && !o.tile && gpu.caps.tiledKernels);
}

/** Whether `o` asks for (or defaults to) the texture path, and the adapter has it. */
function wantsTexture(gpu: Gpu, o: Conv2dOptions): boolean {
  return !wantsTiled(gpu, o) && gpu.texturePathAllowed("conv2d", o.path) &&
    (o.path === "texture" || !o.tile);
}

/** Forward convolution without autograd. */
export function conv2dRaw(x: Tensor, w: Tensor, bias?: Tensor, o: Conv2dOptions = {}): Tensor {
  const ts = bias ? [x, w, bias] : [x, w];
  const gpu = checkArgs("conv2d", ts, ["f32", "f16"]);
  const dt = sameDtype("conv2d", ts);
  const g = geometry(x, w, bias, o);
  const out = Tensor.empty(gpu, [g.n, g.o, g.oh, g.ow], dt);
  if (wantsTiled(gpu, o)) {
    convTiledForward(x, w, bias, out, g);
    return out;
  }
  if (wantsTexture(gpu, o) && convTexFits(gpu, g)) {
    convTexForward(x, w, bias, out, g);
    return out;
  }
  run(
    "fwd",
    dt,
    g,
    ts.map((t) => t.buffer),
    out,
    g.o,
    g.n * g.oh * g.ow,
    g.c * g.kh * g.kw,
    o.tile ?? CONV_TILE,
    !!bias,
  );
  return out;
}

/** Gradient of conv2d with respect to x, given dy [N, O, OH, OW]. */
export function conv2dBackwardInput(
  dy: Tensor,
  w: Tensor,
  xShape: readonly number[],
  o: Conv2dOptions = {},
): Tensor {
  const dt = sameDtype("conv2d_backward", [dy, w]);
  const g = geometry({ shape: xShape } as Tensor, w, undefined, o);
  const dx = Tensor.empty(dy.gpu, xShape, dt);
  if (wantsTiled(dy.gpu, o)) {
    convTiledDx(dy, w, dx, g);
    return dx;
  }
  if (wantsTexture(dy.gpu, o) && convTexBackwardFits(dy.gpu, g)) {
    convTexBackward(dy, g, { w, dx });
    return dx;
  }
  run(
    "dx",
    dt,
    g,
    [dy.buffer, w.buffer],
    dx,
    g.c,
    g.n * g.h * g.w,
    g.o * g.kh * g.kw,
    o.tile ?? CONV_TILE,
  );
  return dx;
}

/** Gradient of conv2d with respect to the weight, given dy and x. */
export function conv2dBackwardWeight(
  dy: Tensor,
  x: Tensor,
  wShape: readonly number[],
  o: Conv2dOptions = {},
): Tensor {
  const dt = sameDtype("conv2d_backward", [dy, x]);
  const g = geometry(x, { shape: wShape } as Tensor, undefined, o);
  const dw = Tensor.empty(dy.gpu, wShape, dt);
  if (wantsTiled(dy.gpu, o)) {
    convTiledDw(dy, x, dw, g);
    return dw;
  }
  if (wantsTexture(dy.gpu, o) && convTexBackwardFits(dy.gpu, g)) {
    convTexBackward(dy, g, { x, dw });
    return dw;
  }
  run(
    "dw",
    dt,
    g,
    [dy.buffer, x.buffer],
    dw,
    g.o,
    g.c * g.kh * g.kw,
    g.n * g.oh * g.ow,
    o.tile ?? CONV_TILE,
  );
  return dw;
}

/** Both gradients of conv2d (dx, dW); the texture path packs dy once for the two. */
export function conv2dBackward(
  dy: Tensor,
  x: Tensor,
  w: Tensor,
  o: Conv2dOptions = {},
): [Tensor, Tensor] {
  const dt = sameDtype("conv2d_backward", [dy, x, w]);
  const g = geometry(x, w, undefined, o);
  if (wantsTexture(dy.gpu, o) && convTexBackwardFits(dy.gpu, g)) {
    const dx = Tensor.empty(dy.gpu, x.shape, dt);
    const dw = Tensor.empty(dy.gpu, w.shape, dt);
    convTexBackward(dy, g, { x, w, dx, dw });
    return [dx, dw];
  }
  return [conv2dBackwardInput(dy, w, x.shape, o), conv2dBackwardWeight(dy, x, w.shape, o)];
}

/**
 * 2-D convolution of x [N, C, H, W] with weight [O, C, kh, kw] (+ bias [O]), PyTorch semantics
 * (cross-correlation, zero padding). Differentiable in x, weight and bias.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 *
 * const gpu = await Gpu.open();
 * const x = Tensor.from(gpu, Float32Array.from({ length: 16 }, (_, i) => i), [1, 1, 4, 4]);
 * const w = Tensor.from(gpu, new Float32Array(9).fill(1), [1, 1, 3, 3]); // a 3x3 box sum
 * const b = Tensor.from(gpu, [0.5], [1]);
 * const y = conv2d(x, w, b, { stride: 1, padding: 1 }); // 3x3 "same" convolution
 * assert.deepEqual(y.shape, [1, 1, 4, 4]);
 * const out = await y.toF32(); // corner: 0 + 1 + 4 + 5 (+ zero padding); inner: 9 neighbours
 * assert.equal(out[0], 10.5);
 * assert.equal(out[5], 0 + 1 + 2 + 4 + 5 + 6 + 8 + 9 + 10 + 0.5);
 * ```
 */
export function conv2d(x: Tensor, w: Tensor, bias?: Tensor, o: Conv2dOptions = {}): Tensor {
  const out = conv2dRaw(x, w, bias, o);
  const sx = save(x), sw = save(w);
  const xShape = [...x.shape], wShape = [...w.shape];
  return record("conv2d", out, [x, w, bias], (g) => {
    const [dx, dw] = x.requiresGrad && w.requiresGrad ? conv2dBackward(g, sx, sw, o) : [
      x.requiresGrad ? conv2dBackwardInput(g, sw, xShape, o) : null,
      w.requiresGrad ? conv2dBackwardWeight(g, sx, wShape, o) : null,
    ];
    return [dx, dw, bias?.requiresGrad ? sumTo(g, [wShape[0], 1, 1]).alias([wShape[0]]) : null];
  }, [sx, sw]);
}
