/**
 * The benchmark cases: one entry per (op, shape, dtype). A new kernel adds its cases to
 * {@link BENCH_CASES}; each case builds its inputs once and returns a function that records one
 * launch of the op.
 */
import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import type { DType } from "../tensor/tensor.ts";
import { matmulRaw } from "../kernels/matmul.ts";
import { conv2dRaw } from "../kernels/conv2d.ts";
import { attention } from "../kernels/attention.ts";
import { groupNorm } from "../kernels/group_norm.ts";
import { layerNorm } from "../kernels/layer_norm.ts";

/** One benchmark case. */
export interface BenchCase {
  /** Op name, e.g. "matmul". */
  name: string;
  /** Human-readable shape, e.g. "1024x1024x1024". */
  shape: string;
  dtype: DType;
  /** Floating-point operations of one launch (0 for memory-bound ops: no GFLOP/s is reported). */
  flops: number;
  /** Part of the `--quick` subset. */
  quick: boolean;
  /** Allocates inputs; returns a launcher (recording one op, returning its output) and a cleanup. */
  setup: (gpu: Gpu) => { run: () => Tensor; dispose: () => void };
}

/** Random uniform(-1, 1) tensor (host-generated; benchmarks only). */
export function randomTensor(gpu: Gpu, shape: number[], dtype: DType): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let s = 12345;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    data[i] = (s / 4294967296) * 2 - 1;
  }
  return Tensor.from(gpu, data, shape, dtype);
}

/** Builds a case from input shapes and an op over those inputs. */
function opCase(
  name: string,
  shape: string,
  dtype: DType,
  flops: number,
  quick: boolean,
  inputs: number[][],
  op: (xs: Tensor[]) => Tensor,
): BenchCase {
  return {
    name,
    shape,
    dtype,
    flops,
    quick,
    setup: (gpu) => {
      const xs = inputs.map((s) => randomTensor(gpu, s, dtype));
      return { run: () => op(xs), dispose: () => xs.forEach((x) => x.dispose()) };
    },
  };
}

function matmulCase(n: number, dtype: DType, quick: boolean): BenchCase {
  return opCase(
    "matmul",
    `${n}x${n}x${n}`,
    dtype,
    2 * n ** 3,
    quick,
    [[n, n], [n, n]],
    ([a, b]) => matmulRaw(a, b),
  );
}

function conv3x3Case(
  n: number,
  c: number,
  o: number,
  hw: number,
  dtype: DType,
  quick: boolean,
): BenchCase {
  const flops = 2 * n * o * hw * hw * c * 9;
  return opCase(
    "conv2d_3x3",
    `N${n} C${c} O${o} ${hw}x${hw}`,
    dtype,
    flops,
    quick,
    [[n, c, hw, hw], [o, c, 3, 3], [o]],
    ([x, w, b]) => conv2dRaw(x, w, b, { stride: 1, padding: 1 }),
  );
}

/** Every case, in run order. Append new ones at the end. */
export const BENCH_CASES: BenchCase[] = [
  matmulCase(512, "f32", true),
  matmulCase(512, "f16", true),
  matmulCase(1024, "f32", true),
  matmulCase(1024, "f16", false),
  matmulCase(2048, "f32", false),
  matmulCase(2048, "f16", false),
  conv3x3Case(2, 64, 64, 64, "f32", true),
  conv3x3Case(2, 320, 320, 32, "f32", false),
  conv3x3Case(2, 320, 320, 32, "f16", false),
  conv3x3Case(2, 640, 640, 16, "f32", false),

  // Attention (core/kernels/attention.ts). 16x16 latent tokens (SD at 128 px), 320 ch, 8 heads;
  // L = 1024 (256 px) takes ~40 s a launch on lavapipe, too long for the whole run's 3 minutes.
  opCase(
    "attention",
    "B2 L256 C320 h8",
    "f32",
    4 * 2 * 256 * 256 * 320,
    true,
    [[2, 256, 320], [2, 256, 320], [2, 256, 320]],
    ([q, k, v]) => attention(q, k, v, { heads: 8 }),
  ),
  opCase(
    "attention_cross",
    "B2 L1024x77 C320 h8",
    "f32",
    4 * 2 * 1024 * 77 * 320,
    false,
    [[2, 1024, 320], [2, 77, 320], [2, 77, 320]],
    ([q, k, v]) => attention(q, k, v, { heads: 8 }),
  ),
  // Normalisation (core/kernels/group_norm.ts, layer_norm.ts): memory-bound, ms only.
  opCase(
    "group_norm_silu",
    "N2 C320 32x32 g32",
    "f32",
    0,
    true,
    [[2, 320, 32, 32], [320], [320]],
    ([x, w, b]) => groupNorm(x, 32, w, b, 1e-5, { silu: true }),
  ),
  opCase(
    "layer_norm",
    "B2 L1024 C320",
    "f32",
    0,
    true,
    [[2, 1024, 320], [320], [320]],
    ([x, w, b]) => layerNorm(x, w, b, 1e-5),
  ),
];
