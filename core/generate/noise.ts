/**
 * The noise z0 of a generated pair. Sample i of a run draws its C·H·W standard normals from the
 * host Philox generator at offset i·C·H·W of the run's seed stream, so z0 depends only on
 * (seed, part, i): never on the worker count, the batch size, or which pairs a resumed run skips.
 * As the original (which draws float16 noise), z0 is rounded to float16; the teacher starts from
 * exactly the stored values.
 *
 * @module
 */

import { philoxNormal } from "../tensor/philox.ts";
import { f16BitsToF32, f32ToF16Bits } from "../io/half.ts";

/** The seed of a run: the config's seed plus the part number (the original's `seed + part`). */
export function runSeed(seed: number, part: number | null): number {
  return seed + (part ?? 0);
}

/** z0 of pair `index` as float16 bits (`n` = C·H·W values). */
export function pairNoiseBits(seed: number, index: number, n: number): Uint16Array {
  const offset = index * n;
  if (!Number.isSafeInteger(offset)) {
    throw new Error(`noise offset ${index} x ${n} exceeds the safe integer range`);
  }
  return f32ToF16Bits(Float32Array.from(philoxNormal(seed, offset, n)));
}

/** z0 for pairs `indices` (sample-major): float16 bits and their float32 values. */
export function batchNoise(
  seed: number,
  indices: readonly number[],
  n: number,
): { bits: Uint16Array[]; values: Float32Array } {
  const bits = indices.map((i) => pairNoiseBits(seed, i, n));
  const values = new Float32Array(indices.length * n);
  bits.forEach((b, k) => values.set(f16BitsToF32(b), k * n));
  return { bits, values };
}
