/** Fills a tensor with a constant, in place (no autograd: used for zeros, ones and gradient seeds). */
import type { Tensor } from "../tensor/tensor.ts";
import { f32u, grid1d, GRID_ARGS, header, linearIndex, packUniforms, wgslType } from "./common.ts";
import { bindings, uniformBinding } from "./bindings.ts";

const WG = 256;

export function fill(t: Tensor, value: number): void {
  const gpu = t.gpu;
  const T = wgslType(t.dtype);
  const k = gpu.kernel("fill", T, () =>
    `${header(t.dtype)}
struct U { n: u32, v: f32 };
${uniformBinding()}
${bindings([["y", "read_write", T]])}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(WG)};
  if (i < u.n) { y[i] = ${T}(u.v); }
}`);
  gpu.dispatch(k, [t.buffer], packUniforms([t.size, f32u(value)]), grid1d(gpu, t.size, WG));
}
