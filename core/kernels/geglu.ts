/**
 * GEGLU as in diffusers' FeedForward: the (already projected) input [..., 2D] splits into
 * (h, gate) = chunk(2, dim=-1), first half h, and out = h * gelu(gate) with the exact erf GELU.
 * One fused kernel forward, one backward writing both halves of the input gradient.
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
import { bindings, opt, uniformBinding } from "./bindings.ts";
import { ERF_WGSL, GELU_WGSL } from "./wgsl_math.ts";

const WG = 256;

function launch(x: Tensor, g: Tensor | null): Tensor {
  const gpu = x.gpu;
  const D2 = x.shape[x.shape.length - 1];
  const D = D2 / 2;
  const rows = x.size / D2;
  const outShape = g ? x.shape : [...x.shape.slice(0, -1), D];
  const out = Tensor.empty(gpu, outShape, x.dtype);
  const T = wgslType(x.dtype);
  const body = g
    ? `let go = f32(gy[i]);
  gx[h_at] = ${T}(go * gelu_(gate));
  gx[h_at + u.d] = ${T}(go * h * dgelu_(gate));`
    : `y[i] = ${T}(h * gelu_(gate));`;
  const k = gpu.kernel(`geglu${g ? "_backward" : ""}`, T, () =>
    `${header(x.dtype)}
struct U { n: u32, d: u32 };
${uniformBinding()}
${
      bindings([
        ["x", "read", T],
        opt(!!g, ["gy", "read", T]),
        g ? ["gx", "read_write", T] : ["y", "read_write", T],
      ])
    }
${ERF_WGSL}${GELU_WGSL}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(WG)};
  if (i >= u.n) { return; }
  let h_at = (i / u.d) * 2u * u.d + i % u.d;
  let h = f32(x[h_at]);
  let gate = f32(x[h_at + u.d]);
  ${body}
}`);
  const bufs = g ? [x.buffer, g.buffer, out.buffer] : [x.buffer, out.buffer];
  gpu.dispatch(k, bufs, packUniforms([rows * D, D]), grid1d(gpu, rows * D, WG));
  return out;
}

/**
 * h * gelu(gate) for x = [h, gate] along the last axis: [..., 2D] -> [..., D].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { linear } from "./matmul.ts";
 *
 * const gpu = await Gpu.open();
 * const x = Tensor.from(gpu, [1, -2, 0.5], [1, 1, 3]); // [B, L, dim]
 * // proj [2 * inner, dim]: h = (x0, x1), gate = (4 x0, 4 x0)
 * const projWeight = Tensor.from(gpu, [1, 0, 0, 0, 1, 0, 4, 0, 0, 4, 0, 0], [4, 3]);
 * const projBias = Tensor.from(gpu, [0, 0, 0, 0], [4]);
 * const y = geglu(linear(x, projWeight, projBias)); // diffusers' GEGLU: [1, 1, 4] -> [1, 1, 2]
 * const [a, b] = await y.toF32(); // h * gelu(4), gelu(4) = 4 * Phi(4) = 3.99987
 * assert.ok(Math.abs(a - 3.99987) < 1e-4 && Math.abs(b + 2 * 3.99987) < 2e-4);
 * ```
 */
export function geglu(x: Tensor): Tensor {
  checkArgs("geglu", [x], ["f32", "f16"]);
  const last = x.shape[x.shape.length - 1];
  if (x.shape.length === 0 || last % 2 !== 0) {
    throw new GpuError(`geglu: last dimension must be even (h and gate halves), got [${x.shape}]`);
  }
  const out = launch(x, null);
  const sx = save(x);
  return record("geglu", out, [x], (g) => [launch(sx, g)], [sx]);
}
