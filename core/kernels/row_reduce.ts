/**
 * Shared pieces of the row-wise normalisation kernels (softmax, LayerNorm, GroupNorm, MSE).
 *
 * Row kernels split a workgroup of {@link ROW_WG} threads into segments of `tpr` threads (a power of
 * two), one segment per row, so a workgroup handles ROW_WG / tpr rows. Short rows get few threads
 * (down to one thread per row, with no barrier at all) and long rows up to a whole workgroup; the
 * threads of a segment read their row interleaved (thread `lane` takes elements lane, lane + tpr, ...)
 * so a warp's loads stay contiguous. {@link rowThreads} picks `tpr` from the row length.
 *
 * Segment reductions use few barriers: every lane writes its value to workgroup memory, and after one
 * barrier each lane sums its segment's (at most 16) values itself, in the same order, so all lanes
 * get the same result. Segments of more than 16 lanes first fold groups of 8 values (one more barrier
 * per level). Consecutive reductions alternate between two halves of the workgroup arrays, so no
 * trailing barrier is needed before the next reduction overwrites them. On CPU Vulkan drivers
 * (lavapipe) every barrier switches between the workgroup's SIMD slices, and the old tree reduction
 * (log2(64) barriers plus two, per reduction) dominated short rows.
 */
import type { Gpu } from "../gpu/device.ts";

/** Threads per workgroup of the row kernels. */
export const ROW_WG = 64;

/**
 * Elements each thread of a row should take: short rows keep one thread per row (no barriers, few
 * invocations, which is what CPU drivers want), long rows spread over up to {@link ROW_WG} threads.
 */
export const ROW_ELEMS = 32;

/** Threads per row (a power of two in [1, ROW_WG]) for rows of `len` elements. */
export function rowThreads(len: number, elems: number = ROW_ELEMS): number {
  let t = 1;
  while (t < ROW_WG && t * 2 * elems <= len) t *= 2;
  return t;
}

/** Most elements of a row one thread keeps in registers ({@link rowRegisters}). */
export const MAX_REGS = 64;

/**
 * A row of `len` elements held in registers by the `stride` threads of a segment: `{name}{k}` is
 * element `{lane} + k * stride`, loaded as f32 from `{src}[{base} + k * stride]` (`base`, default
 * "base", must include the lane) where `valid(k)` holds (`{ok}` and inside the row), `fill`
 * elsewhere. The row is read once, and nothing loops after a barrier (on lavapipe, code after a
 * barrier runs in a resumed coroutine, where loops are markedly slower). The code is unrolled, so it
 * suits rows of at most {@link MAX_REGS} elements per thread, and needs a pipeline variant per row
 * length (each a one-time compile; lavapipe takes up to a second or two for the largest).
 */
export function rowRegisters(
  name: string,
  src: string,
  len: number,
  stride: number,
  opts: { lane?: string; ok?: string; fill?: string; base?: string } = {},
): { count: number; valid: (k: number) => string; wgsl: string } {
  const lane = opts.lane ?? "lane", ok = opts.ok ?? "ok", fill = opts.fill ?? "0.0";
  const base = opts.base ?? "base";
  const count = Math.ceil(len / stride);
  // Only a thread's last element may be past the end.
  const full = Math.floor(len / stride);
  const valid = (k: number) => (k < full ? ok : `${ok} && ${lane} + ${k * stride}u < ${len}u`);
  const wgsl = Array.from({ length: count }, (_, k) =>
    `var ${name}${k} = ${fill};
  if (${valid(k)}) { ${name}${k} = f32(${src}[${base} + ${k * stride}u]); }`).join("\n  ");
  return { count, valid, wgsl };
}

/** WGSL combining the terms pairwise with `op` (a balanced tree: short rounding chains). */
export function treeWgsl(terms: string[], op: (a: string, b: string) => string): string {
  if (terms.length === 1) return terms[0];
  const h = terms.length >> 1;
  return op(treeWgsl(terms.slice(0, h), op), treeWgsl(terms.slice(h), op));
}

/** WGSL: the sum of the terms, pairwise. */
export function sumWgsl(terms: string[]): string {
  return treeWgsl(terms, (a, b) => `(${a} + ${b})`);
}

/**
 * WGSL: `mean` and `m2` (the sum of squared deviations about the mean, from a second pass over the
 * registers: exact, unlike E[x^2] - E[x]^2) of the `n` elements a segment holds in registers
 * {name}0.. ({@link rowRegisters}), with two segment reductions.
 */
export function meanM2Wgsl(
  name: string,
  count: number,
  valid: (k: number) => string,
  n: number,
): string {
  const ks = Array.from({ length: count }, (_, k) => k);
  const sq = ks.map((k) => `select(0.0, (${name}${k} - mean) * (${name}${k} - mean), ${valid(k)})`);
  return `let mean = segSum(${sumWgsl(ks.map((k) => `${name}${k}`))}, li) / ${n}.0;
  let m2 = segSum(${sumWgsl(sq)}, li);`;
}

/** Values each lane combines directly; longer segments fold by {@link RADIX} first. */
const DIRECT = 16;
const RADIX = 8;

/** Partial counts per level of a segment reduction over `tpr` lanes: [tpr, tpr / 8, ...]. */
function levels(tpr: number): number[] {
  const out = [tpr];
  while (out[out.length - 1] > DIRECT) out.push(out[out.length - 1] / RADIX);
  return out;
}

function log2(n: number): number {
  return Math.round(Math.log2(n));
}

/**
 * WGSL reductions over segments of `tpr` consecutive threads of a `wg`-thread workgroup:
 * `segSum(v: f32, li) -> f32`, `segMax(v: f32, li) -> f32` and `segSum2(v: vec2<f32>, li) -> vec2<f32>`,
 * `li` being the local invocation index. Every lane of a segment gets its segment's result. Call from
 * uniform control flow only when `tpr > 1` (they contain barriers), the same sequence of reductions
 * in every thread of the workgroup.
 */
export function segReduceWgsl(tpr: number, wg: number = ROW_WG): string {
  if (
    !(tpr >= 1 && tpr <= wg && Number.isInteger(Math.log2(tpr)) && Number.isInteger(Math.log2(wg)))
  ) {
    throw new Error(`segReduceWgsl: bad segment ${tpr} of workgroup ${wg}`);
  }
  if (tpr === 1) {
    return `fn segSum(v: f32, li: u32) -> f32 { return v; }
fn segMax(v: f32, li: u32) -> f32 { return v; }
fn segSum2(v: vec2<f32>, li: u32) -> vec2<f32> { return v; }`;
  }
  const lv = levels(tpr);
  // Entries of level i per workgroup (per half): one per partial of each segment.
  const size = lv.map((n) => (wg / tpr) * n);
  const decls = size.map((n, i) => `var<workgroup> rd${i}_: array<vec2<f32>, ${2 * n}>;`).join(
    "\n",
  );
  const fn = (
    name: string,
    ty: string,
    wrap: string,
    unwrap: string,
    op: (a: string, b: string) => string,
  ) => {
    const body: string[] = [
      `  let h = rslot_;`,
      `  rslot_ = 1u - h;`,
      `  let seg = li >> ${log2(tpr)}u;`,
      `  let lane = li & ${tpr - 1}u;`,
      `  rd0_[h * ${size[0]}u + li] = ${wrap};`,
      `  workgroupBarrier();`,
    ];
    for (let i = 1; i < lv.length; i++) {
      const src = `h * ${size[i - 1]}u + seg * ${lv[i - 1]}u + lane * ${RADIX}u`;
      const terms = Array.from({ length: RADIX }, (_, k) => `rd${i - 1}_[q + ${k}u]`);
      body.push(
        `  if (lane < ${lv[i]}u) {`,
        `    let q = ${src};`,
        `    rd${i}_[h * ${size[i]}u + seg * ${lv[i]}u + lane] = ${treeWgsl(terms, op)};`,
        `  }`,
        `  workgroupBarrier();`,
      );
    }
    const last = lv.length - 1;
    const terms = Array.from({ length: lv[last] }, (_, k) => `rd${last}_[q + ${k}u]`);
    body.push(
      `  let q = h * ${size[last]}u + seg * ${lv[last]}u;`,
      `  let r = ${treeWgsl(terms, op)};`,
      `  return ${unwrap};`,
    );
    return `fn ${name}(v: ${ty}, li: u32) -> ${ty} {\n${body.join("\n")}\n}`;
  };
  const add = (a: string, b: string) => `(${a} + ${b})`;
  const max = (a: string, b: string) => `max(${a}, ${b})`;
  return `${decls}
var<private> rslot_: u32 = 0u;
${fn("segSum", "f32", "vec2<f32>(v, 0.0)", "r.x", add)}
${fn("segMax", "f32", "vec2<f32>(v, 0.0)", "r.x", max)}
${fn("segSum2", "vec2<f32>", "v", "r", add)}`;
}

/** Entry-point builtins of the row kernels (one workgroup per row, or segments). */
export const ROW_ARGS = "@builtin(workgroup_id) wid: vec3<u32>, " +
  "@builtin(local_invocation_index) li: u32, @builtin(num_workgroups) nwg: vec3<u32>";

/** WGSL expression: the row index of a {@link rowGrid} dispatch (one workgroup per row). */
export const ROW_INDEX = "wid.x + wid.y * nwg.x";

/**
 * WGSL statements of a {@link segGrid} dispatch with `tpr` threads per row: `lane` (0..tpr-1) and
 * `row`, which may be past the last row in the last workgroup (such threads must still join the
 * reductions).
 */
export function segIndex(tpr: number): string {
  return `let lane = li & ${tpr - 1}u;
  let row = (wid.x + wid.y * nwg.x) * ${ROW_WG / tpr}u + (li >> ${log2(tpr)}u);`;
}

/** Workgroup counts for `rows` rows of `tpr` threads each, folded into 2-D past the limit. */
export function segGrid(gpu: Gpu, rows: number, tpr: number): [number, number] {
  return rowGrid(gpu, Math.ceil(rows / (ROW_WG / tpr)));
}

/**
 * WGSL for `wgSum(v, li)` and `wgMax(v, li)`: reductions over a whole workgroup of `wg` threads (a
 * power of two). Every thread gets the result. Call from uniform control flow only (they contain
 * barriers), the same sequence of reductions in every thread.
 */
export function wgReduceWgsl(wg: number = ROW_WG): string {
  return `${segReduceWgsl(wg, wg)}
fn wgSum(v: f32, li: u32) -> f32 { return segSum(v, li); }
fn wgMax(v: f32, li: u32) -> f32 { return segMax(v, li); }`;
}

/** Workgroup counts for one workgroup per row, folded into 2-D past the per-dimension limit. */
export function rowGrid(gpu: Gpu, rows: number): [number, number] {
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (rows <= max) return [Math.max(rows, 1), 1];
  const y = Math.ceil(rows / max);
  return [Math.ceil(rows / y), y];
}

/** The WGSL literal used as minus infinity (WGSL has no infinity literal). */
export const NEG_BIG = "-3.0e38";
