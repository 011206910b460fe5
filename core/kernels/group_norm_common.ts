/**
 * Pieces shared by the GroupNorm forward (group_norm.ts) and backward (group_norm_backward.ts)
 * kernels: extents, uniforms, thread layouts and the affine/SiLU WGSL snippets.
 */
import type { Gpu } from "../gpu/device.ts";
import { f32u, packUniforms } from "./common.ts";
import { uniformBinding } from "./bindings.ts";
import { MAX_REGS, ROW_ELEMS, ROW_WG, rowGrid, rowThreads, segIndex } from "./row_reduce.ts";

export const WG = ROW_WG;
/** Groups of up to this many elements take the fused kernels (one segment of threads per group). */
export const FUSED_MAX = 2048;

/** Options of {@link groupNorm}. */
export interface GroupNormOptions {
  /** Apply SiLU to the normalised output (y = silu(gn(x))), with its derivative in backward. */
  silu?: boolean;
}

export interface Dims {
  n: number;
  c: number;
  g: number;
  s: number;
}

/**
 * WGSL uniform struct shared by the GroupNorm kernels (rows = N*C, ng = N*G, cg = C/G, lpc = threads
 * per channel row of the fused backward's partial sums, 1 for the per-row ones).
 */
export const UNIFORMS = `struct U {
  rows: u32, c: u32, g: u32, s: u32, cg: u32, ng: u32, lpc: u32, eps: f32, chunks: u32, span: u32,
};
${uniformBinding()}`;

export function uniforms(d: Dims, eps = 0, lpc = 1, rc: RowChunks | null = null): Uint32Array {
  return packUniforms([
    d.n * d.c,
    d.c,
    d.g,
    d.s,
    d.c / d.g,
    d.n * d.g,
    lpc,
    f32u(eps),
    rc?.chunks ?? 1,
    rc?.span ?? d.s,
  ]);
}

/**
 * Elementwise row kernels (no reduction) spread each long row over `chunks` workgroups of `span`
 * elements (about ROW_WG * ROW_ELEMS), so large activations keep many threads in flight on GPUs;
 * shorter rows take `tpr` threads, several rows per workgroup.
 */
export interface RowChunks {
  tpr: number;
  chunks: number;
  span: number;
}

export function rowChunks(s: number): RowChunks {
  const tpr = rowThreads(s);
  const chunks = tpr === WG ? Math.ceil(s / (WG * ROW_ELEMS)) : 1;
  return { tpr, chunks, span: Math.ceil(s / chunks) };
}

/** WGSL prologue of a {@link rowChunks} kernel: `lane`, `row` and this thread's `start`/`stop`. */
export function chunkPrologue(tpr: number): string {
  return `let wi = wid.x + wid.y * nwg.x;
  let lane = li & ${tpr - 1}u;
  let row = (wi / u.chunks) * ${WG / tpr}u + (li >> ${Math.log2(tpr)}u);
  if (row >= u.rows) { return; }
  let start = row * u.s + (wi % u.chunks) * u.span;
  let stop = min(start + u.span, row * u.s + u.s);`;
}

export function chunkGrid(gpu: Gpu, rows: number, rc: RowChunks): [number, number] {
  return rowGrid(gpu, Math.ceil(rows / (WG / rc.tpr)) * rc.chunks);
}

/** Smallest power of two >= n. */
export function pow2ceil(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** WGSL: the affine output (and SiLU) of `v`, with the channel's `wv` and `bv`. */
export function outWgsl(hw: boolean, hb: boolean, silu: boolean): string {
  return `${hw ? "v = v * wv;" : ""}
    ${hb ? "v = v + bv;" : ""}
    ${silu ? "v = v / (1.0 + exp(-v));" : ""}`;
}

/** WGSL: channel `ch`, group `grp` and that group's `mean`/`rstd` (from `st`) of row `row`. */
export function rowGroupStats(row: string): string {
  return `let ch = ${row} % u.c;
  let grp = ${row} / u.cg;
  let mean = st[2u * grp];
  let rstd = st[2u * grp + 1u];`;
}

/** WGSL: `wv` and `bv` of channel `ch` (1 and 0 without weight or bias). */
export function channelAffine(hw: boolean, hb: boolean): string {
  return `let wv = ${hw ? "f32(w[ch])" : "1.0"};
  let bv = ${hb ? "f32(b[ch])" : "0.0"};`;
}

/**
 * WGSL: `gy` (the gradient at the affine output, through SiLU's derivative when fused) from `xh`,
 * the incoming gradient `gv` and the channel's `wv`/`bv`.
 */
export function gradAtAffine(silu: boolean, xh: string, gv: string, gy: string): string {
  if (!silu) return `let ${gy} = ${gv};`;
  return `let ${gy} = silu_grad(${xh} * wv + bv, ${gv});`;
}

export const SILU_GRAD = `fn silu_grad(yv: f32, g: f32) -> f32 {
  let sg = 1.0 / (1.0 + exp(-yv));
  return g * sg * (1.0 + yv * (1.0 - sg));
}`;

/**
 * Thread layout of the fused kernels: a segment of `p` threads per (n, group), `lpc` per channel
 * (channel-major; `p` = lpc * cg rounded up to a power of two, the extra threads idle), each holding
 * `k` elements of its channel row in registers. Null when groups are too large.
 */
export interface Fused {
  cg: number;
  lpc: number;
  p: number;
  k: number;
}

export function fusedLayout(d: Dims): Fused | null {
  const cg = d.c / d.g;
  if (cg * d.s > FUSED_MAX || cg > WG) return null;
  const lpc = Math.min(rowThreads(d.s), WG / pow2ceil(cg));
  const k = Math.ceil(d.s / lpc);
  // FUSED_MAX keeps k within MAX_REGS (k <= 2 * FUSED_MAX / WG); the check guards a change of it.
  if (k > MAX_REGS) return null;
  return { cg, lpc, p: pow2ceil(cg) * lpc, k };
}

/** WGSL prologue of the fused kernels: this thread's group, channel row `r`, channel and `base`. */
export function fusedPrologue(f: Fused, s: number): string {
  return `${segIndex(f.p)}
  let cl = lane >> ${Math.log2(f.lpc)}u;
  let sl = lane & ${f.lpc - 1}u;
  let okg = row < u.ng;
  let ok = okg && cl < ${f.cg}u;
  let grp = select(0u, row, okg);
  let r = grp * ${f.cg}u + min(cl, ${f.cg - 1}u);
  let ch = r % u.c;
  let base = r * ${s}u + sl;`;
}
