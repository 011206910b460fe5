/**
 * WGSL source generator for the register-blocked GEMM used by {@link matmul} (and, with a different
 * operand loader, by conv2d's implicit GEMM). Each invocation owns a TM x (4*NV) block of C kept in
 * vec4 registers and walks K reading its operands straight from storage: on lavapipe (LLVM SIMD over
 * the workgroup) the CPU caches already play the role of workgroup memory, so skipping the staging
 * copy and its barriers wins; on real GPUs the same code is still register-blocked and coalesced.
 *
 * Edges are handled without branches in the K loop: row and column indices are clamped into range,
 * so every load is valid, and out-of-range results are simply not stored.
 */
import type { DType } from "../tensor/tensor.ts";
import { header, wgslType } from "./common.ts";
import { type Binding, bindings, opt, uniformBinding } from "./bindings.ts";

/** Tile shape of one GEMM kernel variant. */
export interface GemmTile {
  /** Rows of C per invocation. */
  tm: number;
  /** vec4 column groups of C per invocation (columns = 4 * nv). */
  nv: number;
  /** Workgroup size in x (columns) and y (rows). */
  wx: number;
  wy: number;
  /** K-loop unroll factor. */
  uk: number;
}

/**
 * The default tile of the storage-buffer path: 8 rows x 8 columns per invocation, 8x4 invocations
 * (32x64 of C per group). On lavapipe every storage load is a per-lane loop, so this path is load-bound
 * whatever the tile (larger blocks measured within 2x, at several times the compile time); it serves
 * shapes beyond the texture limits and conv2d's backward passes, and is a plain tiled GEMM on GPUs.
 */
export const DEFAULT_TILE: GemmTile = { tm: 8, nv: 2, wx: 8, wy: 4, uk: 2 };

/** Rows and columns of C one workgroup covers. */
export function tileExtent(t: GemmTile): { bm: number; bn: number } {
  return { bm: t.tm * t.wy, bn: 4 * t.nv * t.wx };
}

/** A stable cache-key fragment for a tile. */
export function tileKey(t: GemmTile): string {
  return `${t.tm}x${t.nv}v|${t.wx}x${t.wy}|u${t.uk}`;
}

/**
 * How the kernel fetches operands. `loadA(r, k)` / `loadB(k, c)` return WGSL f32 expressions given
 * WGSL names of a (clamped) row/column "handle" and the k index; `prologue` declares per-invocation
 * handles (it may reference `m<i>` rows and `n<j>` columns, already clamped), `aHandle(i)` and
 * `bHandle(j)` name them.
 */
export interface GemmOperands {
  /** WGSL declarations: struct U and its binding. */
  decls: string;
  /** Operand bindings before C, in the order the launcher passes their buffers. */
  inputs: (Binding | null)[];
  /** Per-invocation setup after `batch`, `m<i>`, `n<j>` are defined. */
  prologue: string;
  /** f32 expression of A[row i of this invocation, k]. */
  loadA: (i: number, k: string) => string;
  /** f32 expression of B[k, column j of this invocation]. */
  loadB: (j: number, k: string) => string;
  /** vec4 of A[row i, k..k+3] (when set, K must be a multiple of 4 and uk 4). */
  loadA4?: (i: number, k: string) => string;
  /** vec4 of B[k, columns 4v..4v+3] (when set, N must be a multiple of 4). */
  loadB4?: (v: number, k: string) => string;
  /** WGSL run at the start of each k step (after `kk` is defined), e.g. index decomposition. */
  kStep?: string;
  /** Extra WGSL functions. */
  helpers?: string;
  /** Name of the K extent in uniforms. */
  kExtent: string;
  /** Names of the M and N extents and the output offset of (batch, row, col). */
  mExtent: string;
  nExtent: string;
  /** WGSL expression: flat index of C[row, col] in batch `batch`. */
  outIndex: (row: string, col: string) => string;
  /** WGSL expression of the bias for column `col` (absent: no bias). */
  bias?: (col: string) => string;
  /** WGSL expression of the bias for row `row` (conv2d's per-channel bias when rows are channels). */
  rowBias?: (row: string) => string;
}

/** Generates a full GEMM compute shader for `ops` with `tile`; C is the last storage binding. */
export function gemmShader(dt: DType, tile: GemmTile, ops: GemmOperands): string {
  const T = wgslType(dt);
  const { tm, nv, wx, wy, uk } = tile;
  const tn = 4 * nv;
  const L: string[] = [];
  L.push(header(dt) + ops.decls);
  L.push(bindings([...ops.inputs, ["c", "read_write", T]]));
  if (ops.helpers) L.push(ops.helpers);
  L.push(`@compute @workgroup_size(${wx}, ${wy})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let batch = wid.z;
  let row0 = (wid.y * ${wy}u + lid.y) * ${tm}u;
  let col0 = (wid.x * ${wx}u + lid.x) * ${tn}u;
  let M = ${ops.mExtent};
  let N = ${ops.nExtent};
  let K = ${ops.kExtent};`);
  for (let i = 0; i < tm; i++) L.push(`  let m${i} = min(row0 + ${i}u, M - 1u);`);
  for (let j = 0; j < tn; j++) L.push(`  let n${j} = min(col0 + ${j}u, N - 1u);`);
  L.push(ops.prologue);
  for (let i = 0; i < tm; i++) {
    for (let v = 0; v < nv; v++) L.push(`  var acc${i}_${v} = vec4<f32>(0.0);`);
  }
  const loadB = (v: number, k: string): string =>
    ops.loadB4
      ? `vec4<f32>(${ops.loadB4(v, k)})`
      : `vec4<f32>(${[0, 1, 2, 3].map((q) => ops.loadB(4 * v + q, k)).join(", ")})`;
  const body = (k: string, aExpr?: (i: number) => string): string => {
    const s: string[] = [];
    if (ops.kStep) s.push(ops.kStep);
    for (let v = 0; v < nv; v++) s.push(`    let b${v} = ${loadB(v, k)};`);
    for (let i = 0; i < tm; i++) {
      s.push(`    let a${i} = ${aExpr ? aExpr(i) : ops.loadA(i, k)};`);
      for (let v = 0; v < nv; v++) {
        s.push(`    acc${i}_${v} = fma(vec4<f32>(a${i}), b${v}, acc${i}_${v});`);
      }
    }
    return s.join("\n");
  };
  const loadA4 = ops.loadA4;
  // The K loops count kPos over [kBase, kBase + K) (kBase a per-workgroup value, k = kPos - kBase),
  // not k from the constant 0: lavapipe (Mesa 22) specialises a constant-start loop's uniform bound
  // to its value at each dispatch, and once that unrolled the loop (e.g. K = 8 on the first
  // dispatch) it recompiles the shader at every dispatch (~100 ms each).
  L.push(`  let kBase = wid.x;
  let kLim = kBase + K;`);
  if (loadA4) {
    // A read as vec4 along k: one load feeds four k steps.
    L.push(`  for (var kPos = kBase; kPos < kLim; kPos += 4u) {
    let k = kPos - kBase;`);
    for (let i = 0; i < tm; i++) L.push(`    let av${i} = vec4<f32>(${loadA4(i, "k")});`);
    for (let q = 0; q < 4; q++) {
      L.push(`   {\n    let kk = k + ${q}u;\n${body("kk", (i) => `av${i}[${q}]`)}\n   }`);
    }
    L.push(`  }`);
  } else {
    L.push(`  let kMain = kLim - K % ${uk}u;
  var kPos = kBase;
  for (; kPos < kMain; kPos += ${uk}u) {
    let k = kPos - kBase;`);
    for (let q = 0; q < uk; q++) L.push(`   {\n    let kk = k + ${q}u;\n${body("kk")}\n   }`);
    L.push(`  }
  for (; kPos < kLim; kPos++) {
    let kk = kPos - kBase;
${body("kk")}
  }`);
  }
  // Epilogue: optional bias, bounds-checked stores.
  for (let i = 0; i < tm; i++) {
    L.push(`  if (row0 + ${i}u < M) {`);
    if (ops.rowBias) L.push(`    let rb${i} = ${ops.rowBias(`(row0 + ${i}u)`)};`);
    for (let v = 0; v < nv; v++) {
      for (let q = 0; q < 4; q++) {
        const j = 4 * v + q;
        const col = `(col0 + ${j}u)`;
        let val = `acc${i}_${v}[${q}]`;
        if (ops.bias) val = `${val} + ${ops.bias(`n${j}`)}`;
        if (ops.rowBias) val = `${val} + rb${i}`;
        L.push(
          `    if (${col} < N) { c[${ops.outIndex(`(row0 + ${i}u)`, col)}] = ${T}(${val}); }`,
        );
      }
    }
    L.push(`  }`);
  }
  L.push(`}`);
  return L.join("\n");
}

/**
 * Bindings of a batched GEMM (A, B, optional bias) with the uniform header the batch offsets read:
 * shared by the storage and tiled matmul kernels.
 */
export function batchedGemmBindings(
  aType: string,
  bType: string,
  T: string,
  bias: boolean,
): { decls: string; inputs: (Binding | null)[] } {
  return {
    decls: `
struct U { M: u32, N: u32, K: u32, p0: u32, bs: vec4<u32>, sa: vec4<u32>, sb: vec4<u32> };
${uniformBinding()}`,
    inputs: [["a", "read", aType], ["b", "read", bType], opt(bias, ["bias", "read", T])],
  };
}

/** Element offsets of batch matrix `batch` in A, B (broadcast strides) and C. */
export const BATCH_OFFSETS_WGSL = `
  var rem = batch;
  var aOff = 0u;
  var bOff = 0u;
  for (var d = 3; d >= 0; d--) {
    let cd = rem % u.bs[d];
    rem = rem / u.bs[d];
    aOff += cd * u.sa[d];
    bOff += cd * u.sb[d];
  }
  let cOff = batch * M * N;`;
