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

const WG = 256;

/**
 * erf with |error| < 2e-7: a series near zero, Abramowitz-Stegun 7.1.26 beyond (the same
 * approximation as the GELU in unary.ts, so both GELUs agree).
 */
const ERF_WGSL = `
fn erf_geglu(x: f32) -> f32 {
  if (abs(x) < 0.5) {
    let x2 = x * x;
    return 1.1283791671 * x * (1.0 + x2 * (-0.3333333333 + x2 * (0.1 + x2 * (-0.0238095238 + x2 * 0.0046296296))));
  }
  let a = abs(x);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let p = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(x) * (1.0 - p * exp(-a * a));
}
fn gelu_(x: f32) -> f32 { return 0.5 * x * (1.0 + erf_geglu(x * 0.7071067811865476)); }
fn dgelu_(x: f32) -> f32 {
  return 0.5 * (1.0 + erf_geglu(x * 0.7071067811865476)) + x * 0.3989422804014327 * exp(-0.5 * x * x);
}`;

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
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read> x: array<${T}>;
${
      g
        ? `@group(0) @binding(2) var<storage, read> gy: array<${T}>;
@group(0) @binding(3) var<storage, read_write> gx: array<${T}>;`
        : `@group(0) @binding(2) var<storage, read_write> y: array<${T}>;`
    }
${ERF_WGSL}
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
