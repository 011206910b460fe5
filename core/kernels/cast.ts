/**
 * Dtype conversion: f32 <-> f16 (mixed-precision storage) and i32 -> f32/f16 (ids or counts used as
 * values). The gradient of a float cast is the output gradient cast back to the input's dtype; i32
 * inputs get none. Casting to the same dtype is a view.
 */
import { GpuError } from "../gpu/errors.ts";
import { record } from "../tensor/autograd.ts";
import { type DType, Tensor } from "../tensor/tensor.ts";
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

/** Converts without recording. */
function castRaw(x: Tensor, dtype: DType): Tensor {
  const gpu = x.gpu;
  if (dtype === "f16" && !gpu.hasF16) {
    throw new GpuError("cast: f16 storage needs the adapter feature 'shader-f16'");
  }
  const out = Tensor.empty(gpu, x.shape, dtype);
  const S = wgslType(x.dtype), D = wgslType(dtype);
  const k = gpu.kernel("cast", `${S}|${D}`, () =>
    `${header(x.dtype, dtype)}
struct U { n: u32 };
${uniformBinding()}
${bindings([["x", "read", S], ["y", "read_write", D]])}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(WG)};
  if (i < u.n) { y[i] = ${D}(x[i]); }
}`);
  gpu.dispatch(k, [x.buffer, out.buffer], packUniforms([x.size]), grid1d(gpu, x.size, WG));
  return out;
}

/**
 * `x` converted to `dtype`: "f32" <-> "f16", or "i32" -> "f32"/"f16". f32 -> f16 rounds to the nearest
 * f16 as the adapter converts (values beyond the f16 range are undefined in WGSL: scale first).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 *
 * const gpu = await Gpu.open();
 * const ids = cast(Tensor.from(gpu, [3, 7], [2], "i32"), "f32");
 * assert.deepEqual([...await ids.toF32()], [3, 7]);
 * if (gpu.hasF16) { // f16 storage needs the adapter feature shader-f16
 *   const latents = Tensor.from(gpu, [0.1, -2.5], [2]);
 *   const h = cast(latents, "f16");
 *   assert.deepEqual([...await h.toF32()], [0.0999755859375, -2.5]); // 0.1 rounded to f16
 * }
 * ```
 */
export function cast(x: Tensor, dtype: DType): Tensor {
  checkArgs("cast", [x]);
  if (dtype === "i32" && x.dtype !== "i32") {
    throw new GpuError(`cast: ${x.dtype} -> i32 is not supported`);
  }
  if (x.dtype === dtype) {
    return record("cast", x.alias(), [x], (g) => [g.alias()]);
  }
  const out = castRaw(x, dtype);
  if (x.dtype === "i32") return out;
  const from = x.dtype;
  return record("cast", out, [x], (g) => [castRaw(g, from)]);
}
