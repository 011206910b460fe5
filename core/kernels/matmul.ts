/**
 * Batched matrix multiply C = op(A) op(B) (+ bias) and `linear` (PyTorch layout), f32 or f16 storage
 * with f32 accumulation, on the register-blocked GEMM of `matmul_wgsl.ts`. Batch dimensions broadcast
 * (numpy rules, up to 4 of them); a 2-D right operand is folded into one big GEMM. Shapes travel as
 * uniforms, so one pipeline per (dtype, transposes, bias, tile) serves every shape.
 */
import { GpuError } from "../gpu/errors.ts";
import { record, save } from "../tensor/autograd.ts";
import { numel, Tensor } from "../tensor/tensor.ts";
import { checkArgs, packUniforms, sameDtype, wgslType } from "./common.ts";
import { broadcastShape } from "./broadcast.ts";
import { sumTo } from "./reduce.ts";
import { reshape } from "./strided_copy.ts";
import { texGemm, texPathFits } from "./matmul_tex.ts";
import {
  BATCH_OFFSETS_WGSL,
  batchedGemmBindings,
  DEFAULT_TILE,
  gemmShader,
  type GemmTile,
  tileExtent,
  tileKey,
} from "./matmul_wgsl.ts";
import { tiledMatmul, type TiledTile } from "./matmul_tiled.ts";

const MAX_BATCH_RANK = 4;
/** GEMMs at least this big (M*N*K) take the texture path: packing costs one pass over A and B. */
const TEX_MIN_WORK = 32 * 32 * 32;

/** Options of {@link matmul}. */
export interface MatmulOptions {
  /** Treat the last two axes of `a` as [K, M] (use A^T). */
  transA?: boolean;
  /** Treat the last two axes of `b` as [N, K] (use B^T). */
  transB?: boolean;
  /** Added to every row of C: shape [N]. */
  bias?: Tensor;
  /** Override the kernel tile (benchmarks and experiments). */
  tile?: GemmTile;
  /** Set false to force scalar loads (tests of the general path). */
  vec4?: boolean;
  /**
   * Operand path: "tiled" stages tiles in workgroup memory (matmul_tiled.ts, the GPU-shaped kernel),
   * "texture" packs operands into textures first (much faster on lavapipe, see matmul_tex.ts),
   * "storage" reads storage buffers directly. Default: tiled where the adapter's caps say
   * `tiledKernels` (a hardware adapter), else texture for large GEMMs that fit the texture limits.
   */
  path?: "texture" | "storage" | "tiled";
  /** Tile of the tiled path (benchmarks and experiments). */
  tiledTile?: TiledTile;
}

interface Dims {
  batch: number[];
  m: number;
  k: number;
  n: number;
}

function describe(a: Tensor, b: Tensor, o: MatmulOptions): string {
  return `a [${a.shape}]${o.transA ? "^T" : ""}, b [${b.shape}]${o.transB ? "^T" : ""}` +
    (o.bias ? `, bias [${o.bias.shape}]` : "");
}

/** Checks operand shapes and returns the GEMM extents; errors name the op and the shapes. */
function gemmDims(op: string, a: Tensor, b: Tensor, o: MatmulOptions): Dims {
  if (a.shape.length < 2 || b.shape.length < 2) {
    throw new GpuError(`${op}: operands need at least 2 dims (${describe(a, b, o)})`);
  }
  const ra = a.shape.length, rb = b.shape.length;
  const [m, ka] = o.transA
    ? [a.shape[ra - 1], a.shape[ra - 2]]
    : [a.shape[ra - 2], a.shape[ra - 1]];
  const [kb, n] = o.transB
    ? [b.shape[rb - 1], b.shape[rb - 2]]
    : [b.shape[rb - 2], b.shape[rb - 1]];
  if (ka !== kb) {
    throw new GpuError(`${op}: inner dimensions differ (${ka} vs ${kb}) for ${describe(a, b, o)}`);
  }
  let batch: number[];
  try {
    batch = broadcastShape(op, a.shape.slice(0, -2), b.shape.slice(0, -2));
  } catch {
    throw new GpuError(`${op}: batch dimensions do not broadcast for ${describe(a, b, o)}`);
  }
  if (batch.length > MAX_BATCH_RANK) {
    throw new GpuError(`${op}: more than ${MAX_BATCH_RANK} batch dims in ${describe(a, b, o)}`);
  }
  if (o.bias && (o.bias.shape.length !== 1 || o.bias.shape[0] !== n)) {
    throw new GpuError(`${op}: bias must have shape [${n}] for ${describe(a, b, o)}`);
  }
  return { batch, m, k: ka, n };
}

/** Element strides of each batch dim of `shape` (0 where broadcast), padded to 4 leading dims. */
function batchStrides(shape: readonly number[], batch: number[], mat: number): number[] {
  const lead = shape.slice(0, -2);
  const out: number[] = [];
  let s = mat;
  for (let i = batch.length - 1; i >= 0; i--) {
    const j = i - (batch.length - lead.length);
    const d = j >= 0 ? lead[j] : 1;
    out.unshift(d === 1 ? 0 : s);
    s *= d;
  }
  while (out.length < MAX_BATCH_RANK) out.unshift(0);
  return out;
}

/**
 * Computes the GEMM without recording autograd. Exposed for other kernels' backward passes and for
 * benchmarks.
 */
export function matmulRaw(a: Tensor, b: Tensor, o: MatmulOptions = {}): Tensor {
  const op = "matmul";
  const tensors = o.bias ? [a, b, o.bias] : [a, b];
  const gpu = checkArgs(op, tensors, ["f32", "f16"]);
  const dt = sameDtype(op, tensors);
  const { batch, m, k, n } = gemmDims(op, a, b, o);
  const out = Tensor.empty(gpu, [...batch, m, n], dt);
  const nb = numel(batch);
  if (out.size === 0) return out;
  const pad = [...Array(MAX_BATCH_RANK - batch.length).fill(1), ...batch];
  const aStrides = batchStrides(a.shape, batch, m * k);
  const bStrides = batchStrides(b.shape, batch, k * n);
  const launch = {
    a,
    b,
    bias: o.bias,
    out,
    m,
    n,
    k,
    transA: !!o.transA,
    transB: !!o.transB,
    batch: pad,
    aStrides,
    bStrides,
  };
  if (o.path === "tiled" || (o.path === undefined && !o.tile && gpu.caps.tiledKernels)) {
    tiledMatmul({ ...launch, tile: o.tiledTile });
    return out;
  }
  const useTex = gpu.texturePathAllowed("matmul", o.path) &&
    (o.path === "texture" || (!o.tile && m * n * k >= TEX_MIN_WORK));
  if (useTex && k > 0 && texPathFits(gpu, m, n, k, nb)) {
    texGemm(launch);
    return out;
  }
  const tile = o.tile ?? DEFAULT_TILE;
  const { bm, bn } = tileExtent(tile);
  const ta = !!o.transA, tb = !!o.transB, hasBias = !!o.bias;
  const T = wgslType(dt);
  // vec4 loads along K of A and along N of B where the layout allows (all UNet shapes do).
  const vec = !ta && !tb && k % 4 === 0 && n % 4 === 0 && o.vec4 !== false;
  const AT = vec ? `vec4<${T}>` : T;
  const kern = gpu.kernel(
    "matmul",
    `${T}|${ta}|${tb}|${hasBias}|${vec}|${tileKey(tile)}`,
    () =>
      gemmShader(dt, tile, {
        ...batchedGemmBindings(AT, AT, T, hasBias),
        prologue: `${BATCH_OFFSETS_WGSL}
${
          Array.from(
            { length: tile.tm },
            (_, i) => ta ? `  let ar${i} = aOff + m${i};` : `  let ar${i} = aOff + m${i} * K;`,
          ).join("\n")
        }
${
          Array.from(
            { length: 4 * tile.nv },
            (_, j) => tb ? `  let bc${j} = bOff + n${j} * K;` : `  let bc${j} = bOff + n${j};`,
          ).join("\n")
        }
${
          Array.from(
            { length: tile.nv },
            (_, v) => `  let bv${v} = bOff + min(col0 + ${4 * v}u, N - 4u);`,
          ).join("\n")
        }`,
        loadA4: vec ? (i, kk) => `a[(ar${i} + ${kk}) / 4u]` : undefined,
        loadB4: vec ? (v, kk) => `b[(bv${v} + ${kk} * N) / 4u]` : undefined,
        loadA: (i, kk) => ta ? `f32(a[ar${i} + ${kk} * M])` : `f32(a[ar${i} + ${kk}])`,
        loadB: (j, kk) => tb ? `f32(b[bc${j} + ${kk}])` : `f32(b[bc${j} + ${kk} * N])`,
        kExtent: "u.K",
        mExtent: "u.M",
        nExtent: "u.N",
        outIndex: (r, c) => `cOff + ${r} * N + ${c}`,
        bias: hasBias ? (c) => `f32(bias[${c}])` : undefined,
      }),
  );
  const u = packUniforms([m, n, k, 0, ...pad, ...aStrides, ...bStrides]);
  const groups: [number, number, number] = [Math.ceil(n / bn), Math.ceil(m / bm), nb];
  gpu.dispatch(kern, tensors.map((t) => t.buffer).concat(out.buffer), u, groups);
  return out;
}

/**
 * Batched matrix multiply: a [..., M, K] (or [..., K, M] with transA) times b [..., K, N] (or
 * [..., N, K] with transB), batch dims broadcast, plus an optional bias [N]. Differentiable in all
 * operands.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 *
 * const gpu = await Gpu.open();
 * const a = Tensor.from(gpu, [1, 2, 3, 4, 5, 6], [1, 2, 3]); // [B, M, K]
 * const b = Tensor.from(gpu, [1, 0, 0, 0, 1, 1], [1, 2, 3]); // [B, N, K]
 * const c = matmul(a, b, { transB: true }); // a [B, M, K], b [B, N, K] -> c [B, M, N]
 * assert.deepEqual(c.shape, [1, 2, 2]);
 * assert.deepEqual([...await c.toF32()], [1, 5, 4, 11]);
 * ```
 */
export function matmul(a: Tensor, b: Tensor, o: MatmulOptions = {}): Tensor {
  const { batch, m, n } = gemmDims("matmul", a, b, o);
  // A shared 2-D right operand with a non-transposed left one: fold a's batch into M, one GEMM.
  if (b.shape.length === 2 && a.shape.length > 2 && !o.transA) {
    const flat = reshape(a, [-1, a.shape[a.shape.length - 1]]);
    const c = matmul(flat, b, o);
    return reshape(c, [...batch, m, n]);
  }
  const out = matmulRaw(a, b, o);
  const ta = !!o.transA, tb = !!o.transB;
  const sa = save(a), sb = save(b);
  const aShape = [...a.shape], bShape = [...b.shape];
  const bias = o.bias;
  // A forced path holds for the backward GEMMs too.
  const via = { path: o.path, tiledTile: o.tiledTile };
  return record("matmul", out, [a, b, bias], (g) => {
    let ga: Tensor | null = null, gb: Tensor | null = null, gbias: Tensor | null = null;
    if (a.requiresGrad) {
      // C = op(A) op(B): dA follows from the transposes (see the table in the module docs).
      const full = !ta
        ? matmulRaw(g, sb, { transB: !tb, ...via })
        : matmulRaw(sb, g, { transA: tb, transB: true, ...via });
      ga = reduceBatch(full, aShape);
    }
    if (b.requiresGrad) {
      const full = !tb
        ? matmulRaw(sa, g, { transA: !ta, ...via })
        : matmulRaw(g, sa, { transA: true, transB: ta, ...via });
      gb = reduceBatch(full, bShape);
    }
    if (bias?.requiresGrad) gbias = sumTo(g, [n]);
    return [ga, gb, gbias];
  }, [sa, sb]);
}

/** Sums a per-batch gradient over the batch dims its operand was broadcast along. */
function reduceBatch(full: Tensor, shape: readonly number[]): Tensor {
  if (full.shape.length === shape.length && full.shape.every((d, i) => d === shape[i])) {
    return full;
  }
  return sumTo(full, shape);
}

/**
 * A fully connected layer with PyTorch's layout: y = x W^T + b for x [..., in], weight [out, in],
 * bias [out]. Differentiable in x, weight and bias.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 *
 * const gpu = await Gpu.open();
 * const x = Tensor.from(gpu, [1, 2, 3], [1, 1, 3]); // [B, T, in]
 * const weight = Tensor.from(gpu, [1, 1, 1, 0, 0, 2], [2, 3]); // [out, in]
 * const bias = Tensor.from(gpu, [0.5, -1], [2]);
 * const y = linear(x, weight, bias); // x [1, 1, 3], weight [2, 3] -> y [1, 1, 2]
 * assert.deepEqual([...await y.toF32()], [6.5, 5]);
 * ```
 */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor): Tensor {
  if (x.shape.length < 1 || weight.shape.length !== 2) {
    throw new GpuError(
      `linear: expects x [..., in] and weight [out, in], got x [${x.shape}], weight [${weight.shape}]`,
    );
  }
  const inF = x.shape[x.shape.length - 1];
  if (weight.shape[1] !== inF) {
    throw new GpuError(
      `linear: x [${x.shape}] has ${inF} features but weight [${weight.shape}] expects ${
        weight.shape[1]
      }`,
    );
  }
  if (bias && (bias.shape.length !== 1 || bias.shape[0] !== weight.shape[0])) {
    throw new GpuError(`linear: bias [${bias.shape}] does not match weight [${weight.shape}]`);
  }
  const lead = x.shape.slice(0, -1);
  const x2 = reshape(x, [-1, inF]);
  const y = matmul(x2, weight, { transB: true, bias });
  return reshape(y, [...lead, weight.shape[0]]);
}
