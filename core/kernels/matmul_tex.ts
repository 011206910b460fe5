/// <reference types="@webgpu/types" />
/**
 * The texture-operand GEMM path of {@link matmulRaw}. On lavapipe (Mesa 22.x) every storage-buffer
 * load becomes a per-lane scalar loop with a branch per element, while `textureLoad` is the
 * rasteriser's branchless SIMD texel fetch: the same register-blocked kernel runs ~6x faster reading
 * its operands from rgba32float textures. So both operands are first packed (one pass, transposes
 * and f16 widening folded in) into 2-D array textures: A as texels of 4 consecutive k of a row, B as
 * texels of 4 consecutive columns of a k row, one layer per batch matrix, zero-padded in k.
 * Textures are pooled per size and recycled once the batch that used them has been submitted.
 */
import type { Gpu } from "../gpu/device.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { header, packUniforms, wgslType } from "./common.ts";
import { bindings, opt, uniformBinding } from "./bindings.ts";
import {
  acquireTexture,
  type PooledTexture,
  releaseTexture,
  trimTextures,
} from "../gpu/texture_pool.ts";

/** Rows x columns of C per invocation and workgroup width of the texture GEMM. */
const TM = 8, NV = 4, WX = 8;
const PACK_WG = 8;

/**
 * Destroys the pooled operand textures of `gpu` (they are kept per size for reuse, at most two per
 * size); call after a phase with many one-off shapes to return their memory.
 */
export function trimMatmulTextures(gpu: Gpu): void {
  trimTextures(gpu);
}

/** Whether operands of these extents fit the device's texture limits. */
export function texPathFits(gpu: Gpu, m: number, n: number, k: number, layers: number): boolean {
  const l = gpu.limits;
  const maxDim = l.maxTextureDimension2D;
  return Math.ceil(k / 4) <= maxDim && Math.ceil(n / 4) <= maxDim && m <= maxDim &&
    k <= maxDim && layers <= l.maxTextureArrayLayers;
}

/** Parameters of one texture-path GEMM launch. */
export interface TexGemm {
  a: Tensor;
  b: Tensor;
  bias?: Tensor;
  out: Tensor;
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  /** Batch shape of C (padded to 4), and each operand's batch strides in elements (0: broadcast). */
  batch: number[];
  aStrides: number[];
  bStrides: number[];
}

function packShader(T: string, dtHeader: string): string {
  return `${dtHeader}
struct U { rows: u32, cols: u32, rs: u32, cs: u32, wq: u32, p0: u32, p1: u32, p2: u32,
  ls: vec4<u32>, lst: vec4<u32> };
${uniformBinding()}
${
    bindings([["src", "read", T], [
      "dst",
      "texture",
      "texture_storage_2d_array<rgba32float, write>",
    ]])
  }
@compute @workgroup_size(${PACK_WG}, ${PACK_WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x >= u.wq || gid.y >= u.rows) { return; }
  var rem = gid.z;
  var off = 0u;
  for (var d = 3; d >= 0; d--) {
    off += (rem % u.ls[d]) * u.lst[d];
    rem = rem / u.ls[d];
  }
  var v = vec4<f32>(0.0);
  for (var q = 0u; q < 4u; q++) {
    let c = gid.x * 4u + q;
    if (c < u.cols) { v[q] = f32(src[off + gid.y * u.rs + c * u.cs]); }
  }
  textureStore(dst, vec2<u32>(gid.x, gid.y), gid.z, v);
}`;
}

function gemmShader(T: string, dtHeader: string, bias: boolean): string {
  const L: string[] = [];
  L.push(`${dtHeader}
struct U { M: u32, N: u32, K: u32, KQ: u32, NQ: u32, p0: u32, p1: u32, p2: u32,
  bs: vec4<u32>, la: vec4<u32>, lb: vec4<u32> };
${uniformBinding()}
${
    bindings([
      ["ta", "texture", "texture_2d_array<f32>"],
      ["tb", "texture", "texture_2d_array<f32>"],
      opt(bias, ["bias", "read", T]),
      ["c", "read_write", T],
    ])
  }
@compute @workgroup_size(${WX})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let M = u.M;
  let N = u.N;
  let K = u.K;
  // Workgroups consecutive in x share a column panel of B (which stays in cache) and walk down
  // the rows: A then streams once per column panel instead of B once per row block.
  let row0 = wid.x * ${TM}u;
  let cq0 = (wid.y * ${WX}u + lid.x) * ${NV}u;
  var rem = wid.z;
  var layA = 0u;
  var layB = 0u;
  for (var d = 3; d >= 0; d--) {
    let cd = rem % u.bs[d];
    rem = rem / u.bs[d];
    layA += cd * u.la[d];
    layB += cd * u.lb[d];
  }`);
  for (let i = 0; i < TM; i++) L.push(`  let m${i} = min(row0 + ${i}u, M - 1u);`);
  for (let v = 0; v < NV; v++) L.push(`  let q${v} = min(cq0 + ${v}u, u.NQ - 1u);`);
  for (let i = 0; i < TM; i++) {
    for (let v = 0; v < NV; v++) L.push(`  var acc${i}_${v} = vec4<f32>(0.0);`);
  }
  // kq counts from a per-workgroup base, not the constant 0: lavapipe (Mesa 22) specialises the
  // uniform bound of a constant-start loop at each dispatch and can end up recompiling per dispatch.
  L.push(`  let kqBase = wid.y;
  for (var kqPos = kqBase; kqPos < kqBase + u.KQ; kqPos++) {
    let kq = kqPos - kqBase;
    let k0 = kq * 4u;`);
  for (let i = 0; i < TM; i++) {
    L.push(`    let a${i} = textureLoad(ta, vec2<u32>(kq, m${i}), layA, 0);`);
  }
  // B rows past K are clamped; A is zero there, so they add nothing.
  for (let q = 0; q < 4; q++) {
    L.push(`    let kr${q} = min(k0 + ${q}u, K - 1u);`);
    for (let v = 0; v < NV; v++) {
      L.push(`    let b${q}_${v} = textureLoad(tb, vec2<u32>(q${v}, kr${q}), layB, 0);`);
    }
    for (let i = 0; i < TM; i++) {
      for (let v = 0; v < NV; v++) {
        L.push(`    acc${i}_${v} = fma(vec4<f32>(a${i}[${q}]), b${q}_${v}, acc${i}_${v});`);
      }
    }
  }
  L.push(`  }
  let cOff = wid.z * M * N;`);
  for (let i = 0; i < TM; i++) {
    L.push(`  if (row0 + ${i}u < M) {`);
    for (let v = 0; v < NV; v++) {
      for (let q = 0; q < 4; q++) {
        const col = `(cq0 * 4u + ${4 * v + q}u)`;
        const val = `acc${i}_${v}[${q}]${bias ? ` + f32(bias[${col}])` : ""}`;
        L.push(`    if (${col} < N) { c[cOff + (row0 + ${i}u) * N + ${col}] = ${T}(${val}); }`);
      }
    }
    L.push(`  }`);
  }
  L.push(`}`);
  return L.join("\n");
}

/**
 * Runs C = op(A) op(B) (+ bias) through packed textures, recorded in the current batch.
 */
export function texGemm(p: TexGemm): void {
  const gpu = p.out.gpu;
  const { m, n, k } = p;
  const dt = p.a.dtype;
  const T = wgslType(dt);
  const hdr = header(dt);
  const layers = p.batch.reduce((x, y) => x * y, 1);
  const layerCount = (s: number[]) => p.batch.reduce((acc, d, i) => acc * (s[i] === 0 ? 1 : d), 1);
  const packK = gpu.kernel("matmul_pack", T, () => packShader(T, hdr));
  const gemmK = gpu.kernel(
    "matmul_tex",
    `${T}|${!!p.bias}|${TM}x${NV}x${WX}`,
    () => gemmShader(T, hdr, !!p.bias),
  );
  // Row-major f32 operands whose rows are 256-byte multiples are already in texel order: copy them.
  const copyable = (rows: number, cols: number, cs: number) =>
    dt === "f32" && cs === 1 && (cols * 4) % 256 === 0 && rows > 0;
  const copyOne = (src: Tensor, rows: number, cols: number, strides: number[]): PooledTexture => {
    const nl = layerCount(strides);
    const t = acquireTexture(gpu, "2d-array", cols / 4, rows, nl);
    gpu.copyToTexture(src.buffer, { bytesPerRow: cols * 4, rowsPerImage: rows }, t.tex, [
      cols / 4,
      rows,
      nl,
    ]);
    return t;
  };
  const aRs = p.transA ? 1 : k, aCs = p.transA ? m : 1;
  const bRs = p.transB ? 1 : n, bCs = p.transB ? k : 1;
  const packOne = (
    src: Tensor,
    rows: number,
    cols: number,
    rs: number,
    cs: number,
    strides: number[],
  ): PooledTexture => {
    // Only the distinct (non-broadcast) batch matrices are packed: layers follow the source.
    const shape = p.batch.map((d, i) => (strides[i] === 0 ? 1 : d));
    const nl = layerCount(strides);
    const wq = Math.ceil(cols / 4);
    const t = acquireTexture(gpu, "2d-array", wq, rows, nl);
    const u = packUniforms([rows, cols, rs, cs, wq, 0, 0, 0, ...shape, ...strides]);
    gpu.dispatch(packK, [src.buffer, t.view], u, [
      Math.ceil(wq / PACK_WG),
      Math.ceil(rows / PACK_WG),
      nl,
    ]);
    return t;
  };
  // A as [M, K] rows of k-texels; B as [K, N] rows of column texels.
  const ta = copyable(m, k, aCs)
    ? copyOne(p.a, m, k, p.aStrides)
    : packOne(p.a, m, k, aRs, aCs, p.aStrides);
  const tb = copyable(k, n, bCs)
    ? copyOne(p.b, k, n, p.bStrides)
    : packOne(p.b, k, n, bRs, bCs, p.bStrides);
  const la = denseLayerStrides(p.batch, p.aStrides);
  const lb = denseLayerStrides(p.batch, p.bStrides);
  const u = packUniforms([
    m,
    n,
    k,
    Math.ceil(k / 4),
    Math.ceil(n / 4),
    0,
    0,
    0,
    ...p.batch,
    ...la,
    ...lb,
  ]);
  const bufs = [ta.view, tb.view, ...(p.bias ? [p.bias.buffer] : []), p.out.buffer];
  gpu.dispatch(gemmK, bufs, u, [
    Math.ceil(m / TM),
    Math.ceil(Math.ceil(n / 4) / (WX * NV)),
    layers,
  ]);
  releaseTexture(gpu, ta);
  releaseTexture(gpu, tb);
}

/**
 * Layer strides of a packed operand: its textures hold only its own (non-broadcast) matrices, densely
 * numbered in batch order, so the stride of batch dim i is the product of its later kept dims.
 */
function denseLayerStrides(batch: number[], strides: number[]): number[] {
  const out = new Array(batch.length).fill(0);
  let s = 1;
  for (let i = batch.length - 1; i >= 0; i--) {
    if (strides[i] !== 0) {
      out[i] = s;
      s *= batch[i];
    }
  }
  return out;
}
