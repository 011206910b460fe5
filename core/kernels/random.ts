/**
 * Seeded counter-based random tensors on the GPU (Philox-4x32-10). Element i of a draw uses counter
 * offset + i and a key made from the seed, exactly as {@link philoxUniform} / {@link philoxNormal} in
 * core/tensor/philox.ts, so the same (seed, offset, i) gives the same number on any adapter (uniforms
 * bit for bit; normals to ~1e-6, since log/sqrt/cos round differently in f32). Records nothing.
 */
import type { Gpu } from "../gpu/device.ts";
import { GpuError } from "../gpu/errors.ts";
import { splitU53 } from "../tensor/philox.ts";
import { type DType, numel, Tensor } from "../tensor/tensor.ts";
import { grid1d, GRID_ARGS, header, linearIndex, packUniforms, wgslType } from "./common.ts";
import { bindings, uniformBinding } from "./bindings.ts";
import { MATH_WGSL, PHILOX_WGSL } from "./wgsl_math.ts";

const WG = 256;

/** Options of a random draw. */
export interface RandomOptions {
  /** Key of the stream: an integer in [0, 2^53). */
  seed: number;
  /** Counter of element 0 (default 0): draws at disjoint offsets are independent. */
  offset?: number;
  /** Storage dtype of the result (default "f32"); values are computed in f32. */
  dtype?: "f32" | "f16";
}

type Dist = "uniform" | "normal";

const VALUE: Record<Dist, string> = {
  uniform: "f32(w.x >> 8u) * 5.9604644775390625e-8",
  normal: `sqrt(-2.0 * log_acc(f32((w.x >> 8u) + 1u) * 5.9604644775390625e-8)) *
    sincos_turns(f32(w.y >> 8u) * 5.9604644775390625e-8).y`,
};

function draw(dist: Dist, gpu: Gpu, shape: readonly number[], opts: RandomOptions): Tensor {
  const dtype: DType = opts.dtype ?? "f32";
  if (dtype !== "f32" && dtype !== "f16") {
    throw new GpuError(`random_${dist}: dtype ${dtype} not supported (expects f32/f16)`);
  }
  if (dtype === "f16" && !gpu.hasF16) {
    throw new GpuError(`random_${dist}: f16 storage needs the adapter feature 'shader-f16'`);
  }
  const n = numel(shape);
  const offset = opts.offset ?? 0;
  const [k0, k1] = splitU53(opts.seed, `random_${dist}: seed`);
  splitU53(offset + Math.max(n - 1, 0), `random_${dist}: offset + size`);
  const [o0, o1] = splitU53(offset);
  const out = Tensor.empty(gpu, shape, dtype);
  const T = wgslType(dtype);
  const k = gpu.kernel(`random_${dist}`, T, () =>
    `${header(dtype)}
struct U { n: u32, k0: u32, k1: u32, o0: u32, o1: u32 };
${uniformBinding()}
${bindings([["y", "read_write", T]])}
${PHILOX_WGSL}
${MATH_WGSL}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(WG)};
  if (i >= u.n) { return; }
  // 64-bit counter offset + i with carry.
  let lo = u.o0 + i;
  let hi = u.o1 + select(0u, 1u, lo < i);
  let w = philox4x32_10(vec4<u32>(lo, hi, 0u, 0u), vec2<u32>(u.k0, u.k1));
  y[i] = ${T}(${VALUE[dist]});
}`);
  gpu.dispatch(k, [out.buffer], packUniforms([n, k0, k1, o0, o1]), grid1d(gpu, n, WG));
  return out;
}

/**
 * Uniform numbers in [0, 1) (multiples of 2^-24).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu } from "../gpu/device.ts";
 *
 * const gpu = await Gpu.open();
 * const u = await randomUniform(gpu, [4, 8, 8], { seed: 2333 }).toF32();
 * assert.ok(u.every((v) => v >= 0 && v < 1));
 * const again = await randomUniform(gpu, [4, 8, 8], { seed: 2333 }).toF32();
 * assert.deepEqual(again, u); // the same seed gives the same numbers
 * ```
 */
export function randomUniform(gpu: Gpu, shape: readonly number[], opts: RandomOptions): Tensor {
  return draw("uniform", gpu, shape, opts);
}

/**
 * Standard normal numbers (Box-Muller, one per element).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu } from "../gpu/device.ts";
 *
 * const gpu = await Gpu.open();
 * const z0 = await randomNormal(gpu, [1, 4, 16, 16], { seed: 2333, offset: 1 << 20 }).toF32();
 * const mean = z0.reduce((a, b) => a + b) / z0.length;
 * const variance = z0.reduce((a, b) => a + (b - mean) ** 2, 0) / z0.length;
 * assert.ok(Math.abs(mean) < 0.2 && Math.abs(variance - 1) < 0.2); // 1024 draws of N(0, 1)
 * ```
 */
export function randomNormal(gpu: Gpu, shape: readonly number[], opts: RandomOptions): Tensor {
  return draw("normal", gpu, shape, opts);
}

/**
 * Raw Philox-4x32-10 blocks on the GPU for known-answer tests: `ctrs` holds 4 words per block and
 * `keys` 2 words per block; returns 4 words per block. A sync point (reads back).
 */
export async function philoxBlocksGpu(
  gpu: Gpu,
  ctrs: Uint32Array,
  keys: Uint32Array,
): Promise<Uint32Array> {
  const n = ctrs.length / 4;
  if (!Number.isInteger(n) || keys.length !== 2 * n) {
    throw new GpuError(`philox_blocks: ${ctrs.length} counter words and ${keys.length} key words`);
  }
  const c = Tensor.from(
    gpu,
    new Int32Array(ctrs.buffer, ctrs.byteOffset, ctrs.length),
    [n, 4],
    "i32",
  );
  const kt = Tensor.from(
    gpu,
    new Int32Array(keys.buffer, keys.byteOffset, keys.length),
    [n, 2],
    "i32",
  );
  const out = Tensor.empty(gpu, [n, 4], "i32");
  const k = gpu.kernel("philox_blocks", "", () =>
    `struct U { n: u32 };
${uniformBinding()}
${
      bindings([["ctr", "read", "vec4<u32>"], ["key", "read", "vec2<u32>"], [
        "y",
        "read_write",
        "vec4<u32>",
      ]])
    }
${PHILOX_WGSL}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x < u.n) { y[gid.x] = philox4x32_10(ctr[gid.x], key[gid.x]); }
}`);
  gpu.dispatch(k, [c.buffer, kt.buffer, out.buffer], packUniforms([n]), [Math.ceil(n / 64)]);
  const res = await out.data();
  c.dispose();
  kt.dispose();
  out.dispose();
  return new Uint32Array(res.buffer);
}
