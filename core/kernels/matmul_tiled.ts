/**
 * The GPU-shaped GEMM: workgroup-memory tiling. A workgroup of (BN/TN) x (BM/TM) invocations owns a
 * BM x BN block of C. K advances BK at a time: the workgroup copies an A tile [BM x BK] and a B tile
 * [BK x BN] into workgroup memory (vec4 loads where the layout allows, f16 widened to f32 on the
 * way), waits at a barrier, and every invocation then accumulates its TM x TN micro-tile in f32
 * registers from workgroup memory only. Each operand element is read from global memory once per
 * workgroup instead of once per invocation, which is what a GPU's memory system needs; on lavapipe
 * (where workgroup memory and barriers are slow and the CPU caches already do this job) the texture
 * path stays the default, and this one runs only when asked for (`path: "tiled"`, tests).
 *
 * Micro-tiles are interleaved: invocation (tx, ty) owns rows ty + i*WY and vec4 column groups
 * tx + j*WX, so neighbouring invocations read neighbouring vec4s of workgroup memory (no bank
 * conflicts) and write neighbouring 16-byte chunks of C (coalesced stores).
 *
 * The generator takes operand loaders as WGSL expressions of a (row, k) or (k, col) pair, so the
 * implicit-GEMM convolutions (conv2d_tiled.ts) reuse it with gathers instead of plain loads.
 */
import type { DType } from "../tensor/tensor.ts";
import { header, packUniforms, wgslType } from "./common.ts";
import { BATCH_OFFSETS_WGSL, batchedGemmBindings } from "./matmul_wgsl.ts";
import { type Binding, bindings } from "./bindings.ts";
import type { TexGemm } from "./matmul_tex.ts";

/** Block and micro-tile shape of one tiled GEMM variant. */
export interface TiledTile {
  /** Rows and columns of C per workgroup. */
  bm: number;
  bn: number;
  /** K step per workgroup-memory tile (a multiple of 4). */
  bk: number;
  /** Rows and columns of C per invocation (tn a multiple of 4). */
  tm: number;
  tn: number;
}

/**
 * The default: 64 x 64 blocks, K steps of 16, 4 x 4 per invocation (256 invocations, 8 KiB of
 * workgroup memory). Not tuned on a GPU yet (no session had one): the tile is a parameter so the
 * benchmark can try others.
 */
export const TILED_TILE: TiledTile = { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 };

/** A stable cache-key fragment for a tile. */
export function tiledKey(t: TiledTile): string {
  return `${t.bm}x${t.bn}x${t.bk}|${t.tm}x${t.tn}`;
}

/** Workgroup size of a tile. */
export function tiledWorkgroup(t: TiledTile): { wx: number; wy: number } {
  return { wx: t.bn / t.tn, wy: t.bm / t.tm };
}

/** Throws unless the tile is well formed and fits the device's workgroup limits. */
export function checkTile(
  t: TiledTile,
  limits: { maxComputeInvocationsPerWorkgroup: number; maxComputeWorkgroupStorageSize: number },
): void {
  const { wx, wy } = tiledWorkgroup(t);
  const ok = [t.bm, t.bn, t.bk, t.tm, t.tn].every((v) => Number.isInteger(v) && v > 0) &&
    t.bk % 4 === 0 && t.tn % 4 === 0 && t.bm % t.tm === 0 && t.bn % t.tn === 0;
  if (!ok) throw new Error(`tiled GEMM: malformed tile ${JSON.stringify(t)}`);
  if (wx * wy > limits.maxComputeInvocationsPerWorkgroup) {
    throw new Error(
      `tiled GEMM: tile ${tiledKey(t)} needs ${wx * wy} invocations per workgroup, the device ` +
        `allows ${limits.maxComputeInvocationsPerWorkgroup}`,
    );
  }
  const bytes = 4 * (t.bm * t.bk + t.bk * t.bn);
  if (bytes > limits.maxComputeWorkgroupStorageSize) {
    throw new Error(
      `tiled GEMM: tile ${tiledKey(t)} needs ${bytes} bytes of workgroup memory, the device ` +
        `allows ${limits.maxComputeWorkgroupStorageSize}`,
    );
  }
}

/**
 * How the kernel reads its operands and writes C. Loaders are WGSL expressions given WGSL names of
 * a row/column and a k index that are in range (the generator zero-fills outside); `prologue` runs
 * once per invocation after `batch`, `M`, `N` and `K` are defined.
 */
export interface TiledOperands {
  /** WGSL declarations: struct U and its binding. */
  decls: string;
  /** Operand bindings before C, in the order the launcher passes their buffers. */
  inputs: (Binding | null)[];
  helpers?: string;
  prologue?: string;
  /** WGSL expressions of the GEMM extents. */
  mExtent: string;
  nExtent: string;
  kExtent: string;
  /** f32 A[row, k]. */
  loadA: (row: string, k: string) => string;
  /** vec4<f32> of A[row, k..k+3] (only used when set; K must be a multiple of 4). */
  loadA4k?: (row: string, k: string) => string;
  /** A is contiguous along rows (A^T layout): scalar tile loads walk rows fastest. */
  aRowsContiguous?: boolean;
  /** f32 B[k, col]. */
  loadB: (k: string, col: string) => string;
  /** vec4<f32> of B[k, col..col+3] (N must be a multiple of 4). */
  loadB4n?: (k: string, col: string) => string;
  /** vec4<f32> of B[k..k+3, col] (B^T layout; K must be a multiple of 4). */
  loadB4k?: (k: string, col: string) => string;
  /** B is contiguous along k (B^T layout): scalar tile loads walk k fastest. */
  bKContiguous?: boolean;
  /** WGSL expression: flat index of C[row, col]. */
  outIndex: (row: string, col: string) => string;
  /** f32 bias of column `col` (matmul) ... */
  bias?: (col: string) => string;
  /** ... or of row `row` (convolutions, where rows are output channels). */
  rowBias?: (row: string) => string;
}

/** Generates the tiled GEMM shader for `ops`; C is the last storage binding. */
export function tiledGemmShader(dt: DType, tile: TiledTile, ops: TiledOperands): string {
  const T = wgslType(dt);
  const { bm, bn, bk, tm, tn } = tile;
  const { wx, wy } = tiledWorkgroup(tile);
  const wg = wx * wy;
  const bk4 = bk / 4, bn4 = bn / 4, tn4 = tn / 4;
  const L: string[] = [];
  L.push(header(dt) + ops.decls);
  L.push(bindings([...ops.inputs, ["c", "read_write", T]]));
  if (ops.helpers) L.push(ops.helpers);
  L.push(`
// A tile as [row][k / 4] vec4 (four k per vec4); B tile as [k][col / 4] vec4 (four columns).
var<workgroup> As: array<vec4<f32>, ${bm * bk4}>;
var<workgroup> Bs: array<vec4<f32>, ${bk * bn4}>;
@compute @workgroup_size(${wx}, ${wy})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let batch = wid.z;
  let M = ${ops.mExtent};
  let N = ${ops.nExtent};
  let K = ${ops.kExtent};
  let rowBase = wid.y * ${bm}u;
  let colBase = wid.x * ${bn}u;
${ops.prologue ?? ""}`);
  for (let i = 0; i < tm; i++) {
    for (let j = 0; j < tn4; j++) L.push(`  var acc${i}_${j} = vec4<f32>(0.0);`);
  }
  // A tile loads.
  let loadATile: string;
  if (ops.loadA4k) {
    loadATile = `
    for (var s = li; s < ${bm * bk4}u; s += ${wg}u) {
      let row = rowBase + s / ${bk4}u;
      let k = k0 + (s % ${bk4}u) * 4u;
      var v = vec4<f32>(0.0);
      if (row < M && k < K) { v = ${ops.loadA4k("row", "k")}; }
      As[s] = v;
    }`;
  } else {
    const [r, kx] = ops.aRowsContiguous
      ? [`s % ${bm}u`, `s / ${bm}u`]
      : [`s / ${bk}u`, `s % ${bk}u`];
    loadATile = `
    for (var s = li; s < ${bm * bk}u; s += ${wg}u) {
      let r = ${r};
      let kx = ${kx};
      let row = rowBase + r;
      let k = k0 + kx;
      var v = 0.0;
      if (row < M && k < K) { v = ${ops.loadA("row", "k")}; }
      As[r * ${bk4}u + kx / 4u][kx % 4u] = v;
    }`;
  }
  // B tile loads.
  let loadBTile: string;
  if (ops.loadB4n) {
    loadBTile = `
    for (var s = li; s < ${bk * bn4}u; s += ${wg}u) {
      let k = k0 + s / ${bn4}u;
      let col = colBase + (s % ${bn4}u) * 4u;
      var v = vec4<f32>(0.0);
      if (k < K && col < N) { v = ${ops.loadB4n("k", "col")}; }
      Bs[s] = v;
    }`;
  } else if (ops.loadB4k) {
    loadBTile = `
    for (var s = li; s < ${bk4 * bn}u; s += ${wg}u) {
      let kq = s % ${bk4}u;
      let cx = s / ${bk4}u;
      let k = k0 + kq * 4u;
      let col = colBase + cx;
      var v = vec4<f32>(0.0);
      if (k < K && col < N) { v = ${ops.loadB4k("k", "col")}; }
      for (var q = 0u; q < 4u; q++) { Bs[(kq * 4u + q) * ${bn4}u + cx / 4u][cx % 4u] = v[q]; }
    }`;
  } else {
    const [kx, cx] = ops.bKContiguous ? [`s % ${bk}u`, `s / ${bk}u`] : [`s / ${bn}u`, `s % ${bn}u`];
    loadBTile = `
    for (var s = li; s < ${bk * bn}u; s += ${wg}u) {
      let kx = ${kx};
      let cx = ${cx};
      let k = k0 + kx;
      let col = colBase + cx;
      var v = 0.0;
      if (k < K && col < N) { v = ${ops.loadB("k", "col")}; }
      Bs[kx * ${bn4}u + cx / 4u][cx % 4u] = v;
    }`;
  }
  // The K loop counts from a per-workgroup base, not the constant 0: lavapipe (Mesa 22) specialises
  // a constant-start loop's uniform bound at each dispatch and recompiles (see matmul_wgsl.ts).
  L.push(`  let kBase = wid.x;
  for (var kPos = kBase; kPos < kBase + K; kPos += ${bk}u) {
    let k0 = kPos - kBase;${loadATile}${loadBTile}
    workgroupBarrier();
    for (var kq = 0u; kq < ${bk4}u; kq++) {`);
  for (let i = 0; i < tm; i++) {
    L.push(`      let a${i} = As[(lid.y + ${i * wy}u) * ${bk4}u + kq];`);
  }
  for (let q = 0; q < 4; q++) {
    for (let j = 0; j < tn4; j++) {
      L.push(`      let b${q}_${j} = Bs[(kq * 4u + ${q}u) * ${bn4}u + lid.x + ${j * wx}u];`);
    }
    for (let i = 0; i < tm; i++) {
      for (let j = 0; j < tn4; j++) {
        L.push(`      acc${i}_${j} = fma(vec4<f32>(a${i}[${q}]), b${q}_${j}, acc${i}_${j});`);
      }
    }
  }
  L.push(`    }
    workgroupBarrier();
  }`);
  // Epilogue: bias, bounds-checked stores.
  for (let i = 0; i < tm; i++) {
    L.push(`  {
    let row = rowBase + lid.y + ${i * wy}u;
    if (row < M) {`);
    if (ops.rowBias) L.push(`      let rb = ${ops.rowBias("row")};`);
    for (let j = 0; j < tn4; j++) {
      for (let q = 0; q < 4; q++) {
        let val = `acc${i}_${j}[${q}]`;
        if (ops.bias) val += ` + ${ops.bias("col")}`;
        if (ops.rowBias) val += " + rb";
        L.push(`      {
        let col = colBase + (lid.x + ${j * wx}u) * 4u + ${q}u;
        if (col < N) { c[${ops.outIndex("row", "col")}] = ${T}(${val}); }
      }`);
      }
    }
    L.push(`    }
  }`);
  }
  L.push(`}`);
  return L.join("\n");
}

/** Parameters of one tiled matmul launch (the layout {@link matmulRaw} computes). */
export interface TiledMatmul extends TexGemm {
  tile?: TiledTile;
}

/** Records one tiled GEMM C = op(A) op(B) (+ bias) for every batch matrix. */
export function tiledMatmul(p: TiledMatmul): void {
  const gpu = p.out.gpu;
  const dt = p.out.dtype;
  const T = wgslType(dt);
  const tile = p.tile ?? TILED_TILE;
  checkTile(tile, gpu.limits);
  const ta = p.transA, tb = p.transB, hasBias = !!p.bias;
  // vec4 loads along the contiguous axis where it is a multiple of 4 (batch offsets then are too).
  const a4 = !ta && p.k % 4 === 0;
  const b4n = !tb && p.n % 4 === 0;
  const b4k = tb && p.k % 4 === 0;
  const av = a4 ? `vec4<${T}>` : T;
  const bv = b4n || b4k ? `vec4<${T}>` : T;
  const key = `${T}|${ta}|${tb}|${hasBias}|${a4}|${b4n}|${b4k}|${tiledKey(tile)}`;
  const kern = gpu.kernel("matmul_tiled", key, () =>
    tiledGemmShader(dt, tile, {
      ...batchedGemmBindings(av, bv, T, hasBias),
      prologue: BATCH_OFFSETS_WGSL,
      mExtent: "u.M",
      nExtent: "u.N",
      kExtent: "u.K",
      loadA: (r, k) => {
        const idx = ta ? `aOff + ${k} * M + ${r}` : `aOff + ${r} * K + ${k}`;
        return a4 ? `f32(a[(${idx}) / 4u][(${idx}) % 4u])` : `f32(a[${idx}])`;
      },
      loadA4k: a4 ? (r, k) => `vec4<f32>(a[(aOff + ${r} * K + ${k}) / 4u])` : undefined,
      aRowsContiguous: ta,
      loadB: (k, c) => {
        const idx = tb ? `bOff + ${c} * K + ${k}` : `bOff + ${k} * N + ${c}`;
        return b4n || b4k ? `f32(b[(${idx}) / 4u][(${idx}) % 4u])` : `f32(b[${idx}])`;
      },
      loadB4n: b4n ? (k, c) => `vec4<f32>(b[(bOff + ${k} * N + ${c}) / 4u])` : undefined,
      loadB4k: b4k ? (k, c) => `vec4<f32>(b[(bOff + ${c} * K + ${k}) / 4u])` : undefined,
      bKContiguous: tb,
      outIndex: (r, c) => `cOff + ${r} * N + ${c}`,
      bias: hasBias ? (c) => `f32(bias[${c}])` : undefined,
    }));
  const u = packUniforms([p.m, p.n, p.k, 0, ...p.batch, ...p.aStrides, ...p.bStrides]);
  const nb = p.batch.reduce((x, y) => x * y, 1);
  const groups: [number, number, number] = [
    Math.ceil(p.n / tile.bn),
    Math.ceil(p.m / tile.bm),
    nb,
  ];
  const bufs = [p.a.buffer, p.b.buffer, ...(p.bias ? [p.bias.buffer] : []), p.out.buffer];
  gpu.dispatch(kern, bufs, u, groups);
}
