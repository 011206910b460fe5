/**
 * 2x2 max pooling with stride 2 on [N, C, H, W] (torch's `nn.MaxPool2d(kernel_size=2, stride=2)`,
 * as in VGG): output [N, C, floor(H/2), floor(W/2)], a trailing odd row/column is dropped. The
 * backward gathers (no atomics, no index buffer): each input pixel recomputes its window's argmax
 * from the saved input and takes the output gradient if it is that argmax. Ties go to the first
 * maximum in row-major window order, as PyTorch's kernels pick it. f32 or f16 storage.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 *
 * const gpu = await Gpu.open();
 * const x = Tensor.from(gpu, [1, 5, 2, 0, 3, 4, 8, 7, 0, 0, 1, 1, 9, 0, 1, 2], [1, 1, 4, 4]);
 * const y = maxPool2x2(x); // [1, 1, 4, 4] -> [1, 1, 2, 2]
 * assert.deepEqual([...await y.toF32()], [5, 8, 9, 2]);
 * ```
 */
import { GpuError } from "../gpu/errors.ts";
import { record, save } from "../tensor/autograd.ts";
import { Tensor } from "../tensor/tensor.ts";
import {
  checkArgs,
  grid1d,
  GRID_ARGS,
  header,
  linearIndex,
  packUniforms,
  wgslType,
} from "./common.ts";
import { bindings, uniformBinding } from "./bindings.ts";

const WG = 256;

const STRUCT = `struct U { n: u32, h: u32, w: u32, oh: u32, ow: u32, p0: u32, p1: u32, p2: u32 };
${uniformBinding()}`;

/** WGSL: the flat input index of the first maximum of output pixel (plane, oy, ox)'s window. */
const ARGMAX = `
fn argmax_of(plane: u32, oy: u32, ox: u32) -> u32 {
  let b = (plane * u.h + 2u * oy) * u.w + 2u * ox;
  var best = b;
  var m = f32(x[b]);
  let c1 = b + 1u;
  let c2 = b + u.w;
  let c3 = b + u.w + 1u;
  // Strict comparisons keep the first maximum; a NaN wins and propagates as in torch.
  if (f32(x[c1]) > m || f32(x[c1]) != f32(x[c1])) { best = c1; m = f32(x[c1]); }
  if (m == m && (f32(x[c2]) > m || f32(x[c2]) != f32(x[c2]))) { best = c2; m = f32(x[c2]); }
  if (m == m && (f32(x[c3]) > m || f32(x[c3]) != f32(x[c3]))) { best = c3; }
  return best;
}`;

function forwardRaw(x: Tensor): Tensor {
  const gpu = x.gpu;
  const [N, C, H, W] = x.shape;
  const oh = Math.floor(H / 2), ow = Math.floor(W / 2);
  const out = Tensor.empty(gpu, [N, C, oh, ow], x.dtype);
  const T = wgslType(x.dtype);
  const k = gpu.kernel("max_pool2x2", T, () =>
    `${header(x.dtype)}
${STRUCT}
${bindings([["x", "read", T], ["y", "read_write", T]])}
${ARGMAX}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(WG)};
  if (i >= u.n) { return; }
  let ox = i % u.ow;
  let oy = (i / u.ow) % u.oh;
  let plane = i / (u.ow * u.oh);
  y[i] = x[argmax_of(plane, oy, ox)];
}`);
  const n = N * C * oh * ow;
  gpu.dispatch(k, [x.buffer, out.buffer], packUniforms([n, H, W, oh, ow]), grid1d(gpu, n, WG));
  return out;
}

function backwardRaw(x: Tensor, g: Tensor): Tensor {
  const gpu = x.gpu;
  const [N, C, H, W] = x.shape;
  const [, , oh, ow] = g.shape;
  const gx = Tensor.empty(gpu, x.shape, x.dtype);
  const T = wgslType(x.dtype);
  const k = gpu.kernel("max_pool2x2_backward", T, () =>
    `${header(x.dtype)}
${STRUCT}
${bindings([["x", "read", T], ["g", "read", T], ["gx", "read_write", T]])}
${ARGMAX}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(WG)};
  if (i >= u.n) { return; }
  let ix = i % u.w;
  let iy = (i / u.w) % u.h;
  let plane = i / (u.w * u.h);
  let oy = iy / 2u;
  let ox = ix / 2u;
  var v = 0.0;
  if (oy < u.oh && ox < u.ow && argmax_of(plane, oy, ox) == i) {
    v = f32(g[(plane * u.oh + oy) * u.ow + ox]);
  }
  gx[i] = ${T}(v);
}`);
  const n = N * C * H * W;
  gpu.dispatch(
    k,
    [x.buffer, g.buffer, gx.buffer],
    packUniforms([n, H, W, oh, ow]),
    grid1d(gpu, n, WG),
  );
  return gx;
}

/** 2x2, stride-2 max pooling of [N, C, H, W] (floor mode); records its backward. */
export function maxPool2x2(x: Tensor): Tensor {
  checkArgs("max_pool2x2", [x], ["f32", "f16"]);
  if (x.shape.length !== 4) {
    throw new GpuError(`max_pool2x2: expects [N, C, H, W], got [${x.shape}]`);
  }
  const [, , H, W] = x.shape;
  if (H < 2 || W < 2) {
    throw new GpuError(`max_pool2x2: input [${x.shape}] is smaller than the 2x2 window`);
  }
  const out = forwardRaw(x);
  const sx = save(x);
  return record("max_pool2x2", out, [x], (g) => [backwardRaw(sx, g)], [sx]);
}
