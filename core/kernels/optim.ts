/**
 * Fused optimizer kernels: the global gradient norm (sum of squares per tensor into a partials
 * buffer, then one reduction), AdamW with torch's update order and the clip coefficient applied on
 * the GPU (no read-back needed to clip), and the EMA update.
 */
import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { f32u, grid1d, GRID_ARGS, linearIndex, packUniforms } from "./common.ts";
import { bindings, uniformBinding } from "./bindings.ts";

const WG = 256;
/** Partial sums per tensor: enough workgroups to keep lavapipe's threads busy, few to reduce. */
const MAX_PARTS = 64;

/** Accumulates sum(g^2) of `g` into `partials[slot * MAX_PARTS ..]`. */
function sumSquaresInto(gpu: Gpu, g: Tensor, partials: Tensor, slot: number): void {
  const k = gpu.kernel("grad_sq_partial", "f32", () =>
    `struct U { n: u32, slot: u32, parts: u32 };
${uniformBinding()}
${bindings([["g", "read", "f32"], ["part", "read_write", "f32"]])}
var<workgroup> acc: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  var s = 0.0;
  for (var i = wid.x * ${WG}u + li; i < u.n; i += u.parts * ${WG}u) { let v = g[i]; s += v * v; }
  acc[li] = s;
  workgroupBarrier();
  for (var w = ${WG / 2}u; w > 0u; w = w >> 1u) {
    if (li < w) { acc[li] += acc[li + w]; }
    workgroupBarrier();
  }
  if (li == 0u) { part[u.slot * ${MAX_PARTS}u + wid.x] = acc[0]; }
}`);
  const parts = Math.min(MAX_PARTS, Math.ceil(g.size / WG));
  gpu.dispatch(k, [g.buffer, partials.buffer], packUniforms([g.size, slot, parts]), [parts]);
}

/**
 * Global L2 norm of all gradients, as a 1-element GPU tensor (read it back only when logging).
 * Slots not written by a tensor stay zero.
 */
export function globalGradNorm(gpu: Gpu, grads: Tensor[]): Tensor {
  const partials = Tensor.empty(gpu, [grads.length * MAX_PARTS]);
  zero(gpu, partials);
  grads.forEach((g, i) => sumSquaresInto(gpu, g, partials, i));
  const out = Tensor.empty(gpu, [1]);
  const k = gpu.kernel("grad_norm_final", "f32", () =>
    `struct U { n: u32 };
${uniformBinding()}
${bindings([["part", "read", "f32"], ["norm", "read_write", "f32"]])}
var<workgroup> acc: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) li: u32) {
  var s = 0.0;
  for (var i = li; i < u.n; i += ${WG}u) { s += part[i]; }
  acc[li] = s;
  workgroupBarrier();
  for (var w = ${WG / 2}u; w > 0u; w = w >> 1u) {
    if (li < w) { acc[li] += acc[li + w]; }
    workgroupBarrier();
  }
  if (li == 0u) { norm[0] = sqrt(acc[0]); }
}`);
  gpu.dispatch(k, [partials.buffer, out.buffer], packUniforms([partials.size]), [1]);
  partials.dispose();
  return out;
}

function zero(gpu: Gpu, t: Tensor): void {
  const k = gpu.kernel("zero_f32", "f32", () =>
    `struct U { n: u32 };
${uniformBinding()}
${bindings([["y", "read_write", "f32"]])}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) { let i = ${linearIndex(WG)}; if (i < u.n) { y[i] = 0.0; } }`);
  gpu.dispatch(k, [t.buffer], packUniforms([t.size]), grid1d(gpu, t.size, WG));
}

export interface AdamWStep {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step count for bias correction. */
  step: number;
  /** Clip to this global norm (<= 0: no clipping). */
  maxNorm: number;
  /** Multiplies gradients first (1 / loss scale, 1 / accumulation). */
  gradScale: number;
}

/**
 * One AdamW update of p with gradient g and moments m, v (all f32, same size), torch's order:
 * decay, moments, bias-corrected step. The clip coefficient min(1, maxNorm / (norm + 1e-6)) is read
 * from `norm` (a 1-element tensor) on the GPU.
 */
export function adamwUpdate(
  p: Tensor,
  g: Tensor,
  m: Tensor,
  v: Tensor,
  norm: Tensor,
  s: AdamWStep,
): void {
  const gpu = p.gpu;
  const k = gpu.kernel(
    "adamw",
    "f32",
    () =>
      `struct U { n: u32, lr: f32, b1: f32, b2: f32, eps: f32, wd: f32, bc1: f32, bc2sqrt: f32,
  maxNorm: f32, gscale: f32 };
${uniformBinding()}
${
        bindings([["p", "read_write", "f32"], ["g", "read", "f32"], ["m", "read_write", "f32"], [
          "v",
          "read_write",
          "f32",
        ], ["norm", "read", "f32"]])
      }
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(WG)};
  if (i >= u.n) { return; }
  var coef = u.gscale;
  if (u.maxNorm > 0.0) { coef *= min(1.0, u.maxNorm / (norm[0] * u.gscale + 1e-6)); }
  let gi = g[i] * coef;
  var pi = p[i] * (1.0 - u.lr * u.wd);
  let mi = u.b1 * m[i] + (1.0 - u.b1) * gi;
  let vi = u.b2 * v[i] + (1.0 - u.b2) * gi * gi;
  m[i] = mi;
  v[i] = vi;
  let denom = sqrt(vi) / u.bc2sqrt + u.eps;
  p[i] = pi - (u.lr / u.bc1) * mi / denom;
}`,
  );
  const bc1 = 1 - s.beta1 ** s.step;
  const bc2 = 1 - s.beta2 ** s.step;
  gpu.dispatch(
    k,
    [p.buffer, g.buffer, m.buffer, v.buffer, norm.buffer],
    packUniforms([
      p.size,
      f32u(s.lr),
      f32u(s.beta1),
      f32u(s.beta2),
      f32u(s.eps),
      f32u(s.weightDecay),
      f32u(bc1),
      f32u(Math.sqrt(bc2)),
      f32u(s.maxNorm),
      f32u(s.gradScale),
    ]),
    grid1d(gpu, p.size, WG),
  );
}

/** shadow = decay * shadow + (1 - decay) * p, in place. */
export function emaUpdate(shadow: Tensor, p: Tensor, decay: number): void {
  const gpu = p.gpu;
  const k = gpu.kernel("ema_update", "f32", () =>
    `struct U { n: u32, d: f32 };
${uniformBinding()}
${bindings([["s", "read_write", "f32"], ["p", "read", "f32"]])}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(WG)};
  if (i < u.n) { s[i] = s[i] - (1.0 - u.d) * (s[i] - p[i]); }
}`);
  gpu.dispatch(
    k,
    [shadow.buffer, p.buffer],
    packUniforms([p.size, f32u(decay)]),
    grid1d(gpu, p.size, WG),
  );
}
