/**
 * Sinusoidal timestep embeddings with diffusers' `get_timestep_embedding` semantics:
 * freq_k = exp(-ln(max_period) * k / (half - downscale_freq_shift)), arg = scale * (t * freq_k),
 * out = [sin(arg), cos(arg)] (or [cos, sin] when flip_sin_to_cos), zero-padded when dim is odd.
 *
 * The frequency table is computed on the host with PyTorch's float32 rounding steps and cached per
 * GPU; the product t * freq is the same single f32 multiply as PyTorch's; sin/cos use our own range
 * reduction (wgsl_math.ts) because t * freq reaches ~1000 and driver sin/cos are not reliably
 * accurate there. Records nothing: timesteps are not trained.
 */
import type { Gpu } from "../gpu/device.ts";
import { GpuError } from "../gpu/errors.ts";
import { keep } from "../tensor/scope.ts";
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
import { MATH_WGSL } from "./wgsl_math.ts";

const WG = 256;

/** Options of {@link timestepEmbedding}, named as in diffusers. */
export interface TimestepEmbeddingOptions {
  flipSinToCos?: boolean;
  /** Default 1, as in diffusers' function signature (the UNet's Timesteps passes its config). */
  downscaleFreqShift?: number;
  scale?: number;
  maxPeriod?: number;
  /** Output dtype (default "f32"). */
  dtype?: "f32" | "f16";
}

/** freq_k as PyTorch computes it in float32: each step rounded to f32. */
export function timestepFrequencies(half: number, shift: number, maxPeriod: number): Float32Array {
  const f = Math.fround;
  const c = f(-Math.log(maxPeriod));
  const d = f(half - shift);
  const out = new Float32Array(half);
  for (let k = 0; k < half; k++) out[k] = f(Math.exp(f(f(c * k) / d)));
  return out;
}

const freqCache = new WeakMap<Gpu, Map<string, Tensor>>();

function frequencies(gpu: Gpu, half: number, shift: number, maxPeriod: number): Tensor {
  let m = freqCache.get(gpu);
  if (!m) freqCache.set(gpu, m = new Map());
  const key = `${half}|${shift}|${maxPeriod}`;
  let t = m.get(key);
  if (!t || t.isDisposed) {
    // Kept outside every scope: a few hundred bytes per configuration, made once.
    t = keep(Tensor.from(gpu, timestepFrequencies(half, shift, maxPeriod), [half], "f32"));
    m.set(key, t);
  }
  return t;
}

/**
 * Embeds timesteps [B] (f32 or f16) as [B, dim].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 *
 * const gpu = await Gpu.open();
 * const t = Tensor.from(gpu, [0, 999], [2]);
 * const emb = timestepEmbedding(t, 32, { flipSinToCos: true, downscaleFreqShift: 0 }); // [2, 32]
 * const e = await emb.toF32();
 * // flipSinToCos puts the cosines first: at t = 0 they are 1 and the sines 0
 * assert.deepEqual([...e.subarray(0, 32)], [...Array(16).fill(1), ...Array(16).fill(0)]);
 * ```
 */
export function timestepEmbedding(
  timesteps: Tensor,
  dim: number,
  opts: TimestepEmbeddingOptions = {},
): Tensor {
  const gpu = checkArgs("timestep_embedding", [timesteps], ["f32", "f16"]);
  if (timesteps.shape.length !== 1) {
    throw new GpuError(
      `timestep_embedding: timesteps must be 1-D [B], got [${timesteps.shape}]`,
    );
  }
  if (!Number.isInteger(dim) || dim < 1) {
    throw new GpuError(`timestep_embedding: dim ${dim} must be a positive integer`);
  }
  const shift = opts.downscaleFreqShift ?? 1;
  const half = Math.floor(dim / 2);
  if (half > 0 && half - shift === 0) {
    throw new GpuError(
      `timestep_embedding: half dim ${half} - downscale_freq_shift ${shift} is zero`,
    );
  }
  const dtype = opts.dtype ?? "f32";
  const B = timesteps.shape[0];
  const out = Tensor.empty(gpu, [B, dim], dtype);
  const freqs = half > 0 ? frequencies(gpu, half, shift, opts.maxPeriod ?? 10000) : null;
  const Ti = wgslType(timesteps.dtype), To = wgslType(dtype);
  const k = gpu.kernel("timestep_embedding", `${Ti}|${To}`, () =>
    `${header(timesteps.dtype, dtype)}
struct U { n: u32, dim: u32, half: u32, flip: u32, scale: f32 };
${uniformBinding()}
${bindings([["ts", "read", Ti], ["freq", "read", "f32"], ["y", "read_write", To]])}
${MATH_WGSL}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(WG)};
  if (i >= u.n) { return; }
  let b = i / u.dim;
  let j = i % u.dim;
  if (j >= 2u * u.half) { y[i] = ${To}(0.0); return; }
  let first = j < u.half;
  let kk = select(j - u.half, j, first);
  // Same f32 rounding order as PyTorch: (t * freq), then scale * that.
  let arg = u.scale * (f32(ts[b]) * freq[kk]);
  let sc = sincos_acc(arg);
  y[i] = ${To}(select(sc.y, sc.x, first != (u.flip != 0u)));
}`);
  const n = B * dim;
  // A 1-element stand-in keeps the binding valid when dim == 1 (all padding).
  const fb = freqs ?? timesteps;
  gpu.dispatch(
    k,
    [timesteps.buffer, fb.buffer, out.buffer],
    packUniforms([n, dim, half, opts.flipSinToCos ? 1 : 0, f32u(opts.scale ?? 1)]),
    grid1d(gpu, n, WG),
  );
  return out;
}
