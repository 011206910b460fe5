/**
 * Nearest-neighbour resizing of [N, C, H, W] with PyTorch's `F.interpolate(mode='nearest')` index
 * rule: src = dst when sizes match, dst >> 1 when the output is exactly twice the input, else
 * min(floor(f32(dst) * f32(in / out)), in - 1) in float32 arithmetic (as ATen computes it). The
 * backward gathers: each input pixel sums the output gradients of the pixels that copied it (a small
 * window of rows and columns), deterministically and without atomics.
 */
import { GpuError } from "../gpu/errors.ts";
import { record } from "../tensor/autograd.ts";
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
import { bindings, uniformBinding } from "./bindings.ts";

const WG = 256;

/** WGSL: PyTorch's nearest source index of `dst` for sizes (inp, out) with scale = f32(inp/out). */
const NEAREST_IDX = `
fn nearest_idx(dst: u32, inp: u32, out: u32, scale: f32) -> u32 {
  if (out == inp) { return dst; }
  if (out == 2u * inp) { return dst >> 1u; }
  return min(u32(floor(f32(dst) * scale)), inp - 1u);
}`;

/** The same rule on the host (for references and window sizes). */
export function nearestIndex(dst: number, inp: number, out: number): number {
  if (out === inp) return dst;
  if (out === 2 * inp) return dst >> 1;
  return Math.min(Math.floor(Math.fround(dst * Math.fround(inp / out))), inp - 1);
}

/** Largest number of consecutive output indices that map to one input index. */
function maxRun(inp: number, out: number): number {
  let best = 0, run = 0, prev = -1;
  for (let d = 0; d < out; d++) {
    const s = nearestIndex(d, inp, out);
    run = s === prev ? run + 1 : 1;
    prev = s;
    best = Math.max(best, run);
  }
  return best;
}

function uniforms(
  n: number,
  inH: number,
  inW: number,
  outH: number,
  outW: number,
  extra: (number | { f32: number })[],
) {
  return packUniforms([
    n,
    inH,
    inW,
    outH,
    outW,
    f32u(Math.fround(inH / outH)),
    f32u(Math.fround(inW / outW)),
    ...extra,
  ]);
}

const STRUCT = `struct U { n: u32, ih: u32, iw: u32, oh: u32, ow: u32, sh: f32, sw: f32,
  wy: u32, wx: u32, y0: f32, x0: f32 };`;

function forwardRaw(x: Tensor, outH: number, outW: number): Tensor {
  const gpu = x.gpu;
  const [N, C, H, W] = x.shape;
  const out = Tensor.empty(gpu, [N, C, outH, outW], x.dtype);
  const T = wgslType(x.dtype);
  const k = gpu.kernel("interpolate_nearest", T, () =>
    `${header(x.dtype)}
${STRUCT}
${uniformBinding()}
${bindings([["x", "read", T], ["y", "read_write", T]])}
${NEAREST_IDX}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(WG)};
  if (i >= u.n) { return; }
  let ox = i % u.ow;
  let oy = (i / u.ow) % u.oh;
  let plane = i / (u.ow * u.oh);
  let sy = nearest_idx(oy, u.ih, u.oh, u.sh);
  let sx = nearest_idx(ox, u.iw, u.ow, u.sw);
  y[i] = x[(plane * u.ih + sy) * u.iw + sx];
}`);
  const n = N * C * outH * outW;
  gpu.dispatch(
    k,
    [x.buffer, out.buffer],
    uniforms(n, H, W, outH, outW, [0, 0, 0, 0]),
    grid1d(gpu, n, WG),
  );
  return out;
}

function backwardRaw(g: Tensor, inH: number, inW: number): Tensor {
  const gpu = g.gpu;
  const [N, C, outH, outW] = g.shape;
  const out = Tensor.empty(gpu, [N, C, inH, inW], g.dtype);
  const T = wgslType(g.dtype);
  const k = gpu.kernel("interpolate_nearest_backward", T, () =>
    `${header(g.dtype)}
${STRUCT}
${uniformBinding()}
${bindings([["g", "read", T], ["gx", "read_write", T]])}
${NEAREST_IDX}
// First output index whose source could be s: an estimate s * out / in, backed off by one so f32
// rounding in nearest_idx cannot make us miss a child; the loop checks each candidate exactly.
fn first_child(s: u32, inp: u32, out: u32, ratio: f32) -> u32 {
  let e = u32(max(floor(f32(s) * ratio) - 1.0, 0.0));
  return min(e, out);
}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(WG)};
  if (i >= u.n) { return; }
  let sx = i % u.iw;
  let sy = (i / u.iw) % u.ih;
  let plane = i / (u.iw * u.ih);
  let y0 = first_child(sy, u.ih, u.oh, u.y0);
  let x0 = first_child(sx, u.iw, u.ow, u.x0);
  var acc = 0.0;
  for (var oy = y0; oy < min(y0 + u.wy, u.oh); oy++) {
    if (nearest_idx(oy, u.ih, u.oh, u.sh) != sy) { continue; }
    for (var ox = x0; ox < min(x0 + u.wx, u.ow); ox++) {
      if (nearest_idx(ox, u.iw, u.ow, u.sw) == sx) {
        acc += f32(g[(plane * u.oh + oy) * u.ow + ox]);
      }
    }
  }
  gx[i] = ${T}(acc);
}`);
  const n = N * C * inH * inW;
  // Window: the longest run of children plus slack for the backed-off start and f32 rounding.
  const wy = maxRun(inH, outH) + 3, wx = maxRun(inW, outW) + 3;
  gpu.dispatch(
    k,
    [g.buffer, out.buffer],
    uniforms(n, inH, inW, outH, outW, [wy, wx, f32u(outH / inH), f32u(outW / inW)]),
    grid1d(gpu, n, WG),
  );
  return out;
}

/**
 * Resizes [N, C, H, W] to [N, C, outH, outW] by nearest neighbour (diffusers' Upsample2D with an
 * explicit `output_size`).
 */
export function interpolateNearest(x: Tensor, outH: number, outW: number): Tensor {
  checkArgs("interpolate_nearest", [x], ["f32", "f16"]);
  if (x.shape.length !== 4) {
    throw new GpuError(`interpolate_nearest: expects [N, C, H, W], got [${x.shape}]`);
  }
  for (const v of [outH, outW]) {
    if (!Number.isInteger(v) || v < 1) {
      throw new GpuError(`interpolate_nearest: invalid output size ${outH}x${outW}`);
    }
  }
  const [, , H, W] = x.shape;
  if (H < 1 || W < 1) throw new GpuError(`interpolate_nearest: empty input [${x.shape}]`);
  const out = forwardRaw(x, outH, outW);
  return record("interpolate_nearest", out, [x], (g) => [backwardRaw(g, H, W)]);
}

/**
 * `F.interpolate(x, scale_factor=2, mode='nearest')` on [N, C, H, W].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 *
 * const gpu = await Gpu.open();
 * const h = Tensor.from(gpu, [1, 2, 3, 4], [1, 1, 2, 2]);
 * const up = upsampleNearest2x(h); // [1, 1, 2, 2] -> [1, 1, 4, 4]
 * assert.deepEqual([...await up.toF32()], [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
 * ```
 */
export function upsampleNearest2x(x: Tensor): Tensor {
  checkArgs("upsample_nearest2x", [x], ["f32", "f16"]);
  if (x.shape.length !== 4) {
    throw new GpuError(`upsample_nearest2x: expects [N, C, H, W], got [${x.shape}]`);
  }
  return interpolateNearest(x, 2 * x.shape[2], 2 * x.shape[3]);
}
