/// <reference types="@webgpu/types" />
/**
 * Sums over axes: `sum`, `mean`, and `sumTo` (reduce a broadcast gradient back to an input's shape).
 *
 * The host first simplifies the problem: size-1 dims are dropped and neighbouring kept dims, and
 * neighbouring reduced dims, are merged (row-major data stays contiguous under both). Nearly every
 * call then fits one view `x[K1, R1, K2, R2] -> y[K1, K2]` (sum over R1 and R2): a full or row sum is
 * [1, 1, K, R] (each output owns a contiguous run), a linear bias gradient [rows, n] -> [n] is
 * [1, R, K, 1] (a column sum), a conv bias gradient [N, O, H, W] -> [O] is [1, N, O, HW], and a
 * channel sum of NCHW is [N, C, HW, 1]. Shapes that alternate more often are summed one group of
 * reduced dims at a time, each pass shrinking the data.
 *
 * Each thread sums a slice of one output's elements serially in f32 (f16 storage is widened), with
 * no division in its loop; adjacent threads read adjacent addresses wherever the layout allows
 * (coalesced on GPUs). A long reduction is split into P partial sums per output, which either one
 * workgroup sums at once (a tree in workgroup memory, P <= 256) or a further pass sums as columns of
 * an f32 `[P, K]` array.
 *
 * Two tunings, picked by the adapter. On a GPU the split aims at ~32k threads, mostly in one
 * cooperative pass, and reads the storage buffer. A CPU (fallback) adapter such as Mesa's lavapipe
 * runs few workgroups at a time (one per core), pays ~0.05-0.1 ms per dispatch and far more for
 * workgroup barriers (each 8-lane slice of a workgroup becomes a coroutine), and turns every
 * storage-buffer load into a per-lane scalar loop with a branch (~10 ns an element). There a sum is
 * one barrier-free pass unless it is long (then a few hundred partials and a second pass), and where
 * the layout allows, its input is first copied into an rgba texture (a plain memory copy) and read
 * with `textureLoad`, a branchless SIMD fetch of 4 elements: ~1-2 ns an element, copy included.
 */
import { record } from "../tensor/autograd.ts";
import { type DType, numel, Tensor } from "../tensor/tensor.ts";
import { GpuError } from "../gpu/errors.ts";
import type { Gpu } from "../gpu/device.ts";
import { acquireTexture, releaseTexture } from "../gpu/texture_pool.ts";
import {
  axisIndex,
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
import { broadcastTo } from "./broadcast.ts";

const WG = 64;

/** How reductions are split for one kind of adapter. */
interface Tuning {
  /** Threads a split aims for. */
  threads: number;
  /** Loads a thread performs at least before a reduction is split over more threads. */
  minWork: number;
  /** Largest number of partial sums per output of one pass. */
  maxParts: number;
  /** Whether the input is read through a texture copy where the layout allows. */
  texture: boolean;
  /** Whether up to 256 partials of an output may be summed in one workgroup (with barriers). */
  coop: boolean;
}

const GPU_TUNING: Tuning = {
  threads: 32768,
  minWork: 16,
  maxParts: 16384,
  texture: false,
  coop: true,
};
const CPU_TUNING: Tuning = {
  threads: 512,
  minWork: 512,
  maxParts: 512,
  texture: true,
  coop: false,
};

/** Options for tests and benchmarks; by default both follow the adapter (CPU or GPU). */
export interface SumOptions {
  /** Split rules: "gpu" or "cpu" (a fallback adapter such as lavapipe). */
  tuning?: "gpu" | "cpu";
  /** Read the input from the storage buffer, or through a texture copy when the layout allows. */
  path?: "storage" | "texture";
}

/** `x[k1, r1, k2, r2]` summed over r1 and r2 into `y[k1, k2]`. */
export interface View {
  k1: number;
  r1: number;
  k2: number;
  r2: number;
}

/** A dim group after simplification: its extent and whether it is reduced. */
interface Group {
  n: number;
  red: boolean;
}

/**
 * How a pass reads its input: "s" one element per load from the storage buffer; "ti" texels of 4
 * consecutive elements along R2; "tc" texels of 4 consecutive outputs along K2 (R2 = 1).
 */
export type Mode = "s" | "ti" | "tc";

/** One dispatch of a sum: reads the previous step's output (or x), writes `outSize` values. */
export interface SumStep {
  mode: Mode;
  /** The view of the input in units of loads (texels in the texture modes). */
  view: View;
  /** The split: P1 contiguous blocks of R1 times P2 interleaved slices of R2. */
  p1: number;
  p2: number;
  /** Values written: K1 * K2 outputs (in elements), times P1 * P2 partials unless `coop`. */
  outSize: number;
  alpha: number;
  /** Texture width (texels, a power of two) and height, in the texture modes. */
  texW: number;
  texH: number;
  /** The partials of each output are summed in its workgroup: the step writes final sums. */
  coop: boolean;
}

/** Drops size-1 dims and merges neighbours of the same kind. */
function simplify(shape: readonly number[], reduced: readonly boolean[]): Group[] {
  const g: Group[] = [];
  shape.forEach((n, i) => {
    if (n === 1) return;
    const last = g[g.length - 1];
    if (last && last.red === reduced[i]) last.n *= n;
    else g.push({ n, red: reduced[i] });
  });
  return g;
}

/** The [K1, R1, K2, R2] view of alternating groups (right-aligned), or null past four groups. */
function viewOf(g: Group[]): View | null {
  const slots = [1, 1, 1, 1];
  let pos = g.length && !g[g.length - 1].red ? 2 : 3;
  for (let i = g.length - 1; i >= 0; i--, pos--) {
    if (pos < 0) return null;
    slots[pos] = g[i].n;
  }
  return { k1: slots[0], r1: slots[1], k2: slots[2], r2: slots[3] };
}

/** The split of view `v` (in loads) with `outs` threads per partial slot. */
function splitOf(v: View, outs: number, t: Tuning): { p1: number; p2: number } {
  const red = v.r1 * v.r2;
  let p = Math.min(Math.floor(red / t.minWork), Math.floor(t.threads / outs), t.maxParts);
  // Splitting pays only when it multiplies the parallelism by a useful factor.
  if (p < 4) return { p1: 1, p2: 1 };
  p = 2 ** Math.floor(Math.log2(p));
  if (v.r2 >= p) return { p1: 1, p2: p };
  const p2 = v.r2;
  return { p1: Math.min(v.r1, Math.ceil(p / p2)), p2 };
}

/** Texture extent [W, H] holding `n` elements of `dtype` as rgba texels, or null if none fits. */
function texExtent(gpu: Gpu, n: number, dtype: DType): [number, number] | null {
  if (dtype !== "f32" && dtype !== "f16") return null;
  if (n % 4 !== 0) return null;
  const texels = n / 4;
  // Rows of a buffer-to-texture copy are 256-byte multiples; W divides the texel count exactly.
  const minW = dtype === "f32" ? 16 : 32;
  const maxDim = gpu.limits.maxTextureDimension2D;
  const w = Math.min(texels & -texels, 2 ** Math.floor(Math.log2(maxDim)));
  if (w < minW || texels / w > maxDim) return null;
  return [w, texels / w];
}

function tuningOf(gpu: Gpu, o: SumOptions): Tuning {
  if (o.tuning) return o.tuning === "cpu" ? CPU_TUNING : GPU_TUNING;
  let cpu = cpuAdapter.get(gpu);
  if (cpu === undefined) cpuAdapter.set(gpu, cpu = gpu.describe().fallback);
  return cpu ? CPU_TUNING : GPU_TUNING;
}
const cpuAdapter = new WeakMap<Gpu, boolean>();

/** The steps that sum view `v` of an input of `n` elements (dtype `dtype`) scaled by `alpha`. */
function viewSteps(
  gpu: Gpu,
  v: View,
  n: number,
  dtype: DType,
  alpha: number,
  t: Tuning,
  o: SumOptions,
): SumStep[] {
  const outs = v.k1 * v.k2;
  let mode: Mode = "s";
  let lv = v;
  let tex: [number, number] | null = null;
  if (gpu.texturePathAllowed("sum", o.path) && (o.path === "texture" || t.texture)) {
    tex = texExtent(gpu, n, dtype);
    if (tex && v.r2 % 4 === 0) {
      mode = "ti";
      lv = { ...v, r2: v.r2 / 4 };
    } else if (tex && v.r2 === 1 && v.k2 % 4 === 0) {
      mode = "tc";
      lv = { ...v, k2: v.k2 / 4 };
    }
  }
  const lanes = lv.k1 * lv.k2;
  const { p1, p2 } = splitOf(lv, lanes, t);
  const parts = p1 * p2;
  // One workgroup sums all partials of its outputs when they fit, and (outputs adjacent) when
  // enough outputs sit side by side for coalesced reads.
  const pp = 2 ** Math.ceil(Math.log2(parts));
  const coop = t.coop && parts > 1 && pp <= COOP_WG &&
    (p2 > 1 || COOP_WG / pp >= Math.min(32, lanes));
  const step: SumStep = {
    mode,
    view: lv,
    p1,
    p2,
    outSize: coop ? outs : outs * parts,
    alpha: parts === 1 || coop ? alpha : 1,
    texW: mode === "s" ? 0 : tex![0],
    texH: mode === "s" ? 0 : tex![1],
    coop,
  };
  if (parts === 1 || coop) return [step];
  return [
    step,
    ...viewSteps(gpu, { k1: 1, r1: parts, k2: outs, r2: 1 }, outs * parts, "f32", alpha, t, {
      ...o,
      path: "storage",
    }),
  ];
}

/**
 * The dispatches that sum `shape` (dtype `dtype`) over `axes`, scaled by `alpha`: exposed so tests
 * can check which kernels a shape takes.
 */
export function planSum(
  gpu: Gpu,
  shape: readonly number[],
  axes: readonly number[],
  dtype: DType,
  alpha = 1,
  o: SumOptions = {},
): SumStep[] {
  const t = tuningOf(gpu, o);
  let groups = simplify(shape, shape.map((_, i) => axes.includes(i)));
  let n = numel(shape);
  let dt = dtype;
  const steps: SumStep[] = [];
  // More alternations: sum the first group of reduced dims on its own (a column sum, after which
  // its neighbouring kept groups merge), until the rest fits the view.
  for (let v = viewOf(groups); !v; v = viewOf(groups)) {
    const j = groups.findIndex((g) => g.red);
    const before = numel(groups.slice(0, j).map((g) => g.n));
    const after = numel(groups.slice(j + 1).map((g) => g.n));
    const peel = viewOf(simplify([before, groups[j].n, after], [false, true, false]))!;
    steps.push(...viewSteps(gpu, peel, n, dt, 1, t, o));
    const rest = groups.filter((_, i) => i !== j);
    groups = simplify(rest.map((g) => g.n), rest.map((g) => g.red));
    n = before * after;
    dt = "f32";
  }
  steps.push(...viewSteps(gpu, viewOf(groups)!, n, dt, alpha, t, o));
  return steps;
}

type Variant = "inner" | "column" | "both";

/** Threads of a cooperative workgroup (power of two). */
const COOP_WG = 256;

function kernelFor(gpu: Gpu, mode: Mode, tin: DType, tout: DType, variant: Variant, coop: boolean) {
  const TI = wgslType(tin);
  const TO = wgslType(tout);
  const tex = mode !== "s";
  const ACC = tex ? "vec4<f32>" : "f32";
  const load = tex
    ? `fn ld(i: u32) -> vec4<f32> { return textureLoad(x, vec2<u32>(i & u.wm, i >> u.ws), 0); }`
    : `fn ld(i: u32) -> f32 { return f32(x[i]); }`;
  // This thread's rows a in [a0, a1), and of each row the loads b = p2, p2 + P2, ... < R2.
  const loop = variant === "column"
    ? `var off = base + a0 * rowStride;
  for (var a = a0; a < a1; a++) {
    acc += ld(off);
    off += rowStride;
  }`
    : variant === "inner"
    ? `let end = base + a0 * rowStride + u.r2;
  for (var off = end - u.r2 + p2; off < end; off += u.p2) {
    acc += ld(off);
  }`
    : `for (var a = a0; a < a1; a++) {
    let end = base + a * rowStride + u.r2;
    for (var off = end - u.r2 + p2; off < end; off += u.p2) {
      acc += ld(off);
    }
  }`;
  // Partial sum number s = p1 * P2 + p2 of output (k1, k2).
  const partial = `fn partial(k1: u32, k2: u32, p1: u32, p2: u32) -> ${ACC} {
  let rowStride = u.k2 * u.r2;
  let base = k1 * u.r1 * rowStride + k2 * u.r2;
  let a0 = p1 * u.chunk;
  let a1 = min(a0 + u.chunk, u.r1);
  var acc = ${ACC}(0.0);
  ${loop}
  return acc;
}`;
  // Stores v (scaled) as slot s of output o = k1 * K2 + k2 (four outputs per texel in mode tc).
  const store = mode === "tc"
    ? `fn store(s: u32, o: u32, v: vec4<f32>) {
  let i = s * u.kout + 4u * o;
  y[i] = ${TO}(v.x * u.alpha);
  y[i + 1u] = ${TO}(v.y * u.alpha);
  y[i + 2u] = ${TO}(v.z * u.alpha);
  y[i + 3u] = ${TO}(v.w * u.alpha);
}`
    : `fn store(s: u32, o: u32, v: ${ACC}) {
  y[s * u.kout + o] = ${TO}(${tex ? "dot(v, vec4<f32>(1.0))" : "v"} * u.alpha);
}`;
  const main = coop
    ? `var<workgroup> part: array<${ACC}, ${COOP_WG}>;
@compute @workgroup_size(${COOP_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  // The workgroup holds PP (padded) partial slots of each of C outputs, slots adjacent when they
  // interleave along R2 (sfast), outputs adjacent otherwise; a tree then sums the slots.
  var s: u32;
  var c: u32;
  if (u.sfast != 0u) {
    s = li & (u.pp - 1u);
    c = li >> u.ppLog;
  } else {
    s = li >> u.ccLog;
    c = li & ((1u << u.ccLog) - 1u);
  }
  let o = (wid.x + wid.y * nwg.x) * (1u << u.ccLog) + c;
  var acc = ${ACC}(0.0);
  if (o < u.n && s < u.p1 * u.p2) {
    acc = partial(o / u.k2, o % u.k2, s / u.p2, s % u.p2);
  }
  part[li] = acc;
  workgroupBarrier();
  let unit = select(1u << u.ccLog, 1u, u.sfast != 0u);
  for (var st = u.pp >> 1u; st > 0u; st = st >> 1u) {
    if (s < st) { part[li] += part[li + st * unit]; }
    workgroupBarrier();
  }
  if (s == 0u && o < u.n) { store(0u, o, part[li]); }
}`
    : `@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let t = ${linearIndex(WG)};
  if (t >= u.n) { return; }
  // t = ((p1 * K1 + k1) * K2 + k2) * P2 + p2: adjacent threads take adjacent loads.
  let p2 = t % u.p2;
  let q = t / u.p2;
  let k2 = q % u.k2;
  let q2 = q / u.k2;
  let k1 = q2 % u.k1;
  let p1 = q2 / u.k1;
  store(p1 * u.p2 + p2, k1 * u.k2 + k2, partial(k1, k2, p1, p2));
}`;
  return gpu.kernel(
    "sum",
    `${mode}|${TI}|${TO}|${variant}|${coop}`,
    () =>
      `${header(tex ? "f32" : tin, tout)}
struct U {
  n: u32, k1: u32, r1: u32, k2: u32, r2: u32, p1: u32, p2: u32, chunk: u32,
  kout: u32, wm: u32, ws: u32, alpha: f32, pp: u32, ppLog: u32, ccLog: u32, sfast: u32,
};
${uniformBinding()}
${
        bindings([
          tex ? ["x", "texture", "texture_2d<f32>"] : ["x", "read", TI],
          ["y", "read_write", TO],
        ])
      }
${load}
${partial}
${store}
${main}`,
  );
}

/** Records one step reading `src` (dtype `tin`) into `dst`. */
function runStep(gpu: Gpu, s: SumStep, src: GPUBuffer, tin: DType, dst: Tensor): void {
  const v = s.view;
  const variant: Variant = v.r2 === 1 ? "column" : v.r1 === 1 ? "inner" : "both";
  const k = kernelFor(gpu, s.mode, tin, dst.dtype, variant, s.coop);
  const outs = v.k1 * v.k2;
  const parts = s.p1 * s.p2;
  const pp = 2 ** Math.ceil(Math.log2(parts));
  const ccLog = Math.log2(COOP_WG / pp);
  const u = packUniforms([
    s.coop ? outs : outs * parts,
    v.k1,
    v.r1,
    v.k2,
    v.r2,
    s.p1,
    s.p2,
    Math.ceil(v.r1 / s.p1),
    s.outSize / (s.coop ? 1 : parts),
    s.texW - 1,
    Math.log2(Math.max(s.texW, 1)),
    f32u(s.alpha),
    pp,
    Math.log2(pp),
    ccLog,
    s.p2 > 1 ? 1 : 0,
  ]);
  const groups = s.coop ? grid1d(gpu, outs, COOP_WG / pp) : grid1d(gpu, outs * parts, WG);
  if (s.mode === "s") {
    gpu.dispatch(k, [src, dst.buffer], u, groups);
    return;
  }
  const format = tin === "f16" ? "rgba16float" : "rgba32float";
  const t = acquireTexture(gpu, "2d", s.texW, s.texH, 1, format);
  const texelBytes = tin === "f16" ? 8 : 16;
  gpu.copyToTexture(src, { bytesPerRow: s.texW * texelBytes, rowsPerImage: s.texH }, t.tex, [
    s.texW,
    s.texH,
    1,
  ]);
  gpu.dispatch(k, [t.view, dst.buffer], u, groups);
  releaseTexture(gpu, t);
}

/** Sums x over `axes` (kept dims removed unless keepDims), scaled by `alpha`. Records nothing. */
function reduceRaw(
  x: Tensor,
  axes: number[],
  keepDims: boolean,
  alpha: number,
  o: SumOptions = {},
): Tensor {
  const gpu = x.gpu;
  const red = new Set(axes);
  const outShape = keepDims
    ? x.shape.map((d, i) => (red.has(i) ? 1 : d))
    : x.shape.filter((_, i) => !red.has(i));
  const out = Tensor.empty(gpu, outShape, x.dtype);
  if (x.size === 0) return out;
  const steps = planSum(gpu, x.shape, axes, x.dtype, alpha, o);
  let src = x.buffer;
  let tin = x.dtype;
  let prev: Tensor | null = null;
  steps.forEach((s, i) => {
    const dst = i === steps.length - 1 ? out : Tensor.empty(gpu, [s.outSize], "f32");
    runStep(gpu, s, src, tin, dst);
    // Commands run in recording order, so a buffer may be reused once its last read is recorded.
    prev?.dispose();
    prev = dst === out ? null : dst;
    src = dst.buffer;
    tin = "f32";
  });
  return out;
}

function normAxes(op: string, x: Tensor, axes?: number | number[]): number[] {
  if (axes === undefined) return [...Array(x.shape.length).keys()];
  const a = Array.isArray(axes) ? axes : [axes];
  return [...new Set(a.map((v) => axisIndex(op, v, x.shape.length)))];
}

/** Sum over `axes` (all when omitted). */
export function sum(
  x: Tensor,
  axes?: number | number[],
  keepDims = false,
  opts: SumOptions = {},
): Tensor {
  checkArgs("sum", [x], ["f32", "f16"]);
  const ax = normAxes("sum", x, axes);
  const out = reduceRaw(x, ax, keepDims, 1, opts);
  const kept = x.shape.map((d, i) => (ax.includes(i) ? 1 : d));
  const shape = [...x.shape];
  return record("sum", out, [x], (g) => [broadcastTo(g.alias(kept), shape)]);
}

/** Mean over `axes` (all when omitted). */
export function mean(
  x: Tensor,
  axes?: number | number[],
  keepDims = false,
  opts: SumOptions = {},
): Tensor {
  checkArgs("mean", [x], ["f32", "f16"]);
  const ax = normAxes("mean", x, axes);
  const count = numel(ax.map((i) => x.shape[i]));
  const out = reduceRaw(x, ax, keepDims, 1 / count, opts);
  const kept = x.shape.map((d, i) => (ax.includes(i) ? 1 : d));
  const shape = [...x.shape];
  return record("mean", out, [x], (g) => {
    const gb = broadcastTo(g.alias(kept), shape, 1 / count);
    return [gb];
  });
}

/** Sums a broadcast result back to `shape` (the reverse of broadcasting). Records nothing. */
export function sumTo(x: Tensor, shape: readonly number[], opts: SumOptions = {}): Tensor {
  if (x.shape.length === shape.length && x.shape.every((d, i) => d === shape[i])) {
    return x.alias();
  }
  const lead = x.shape.length - shape.length;
  if (lead < 0) throw new GpuError(`sumTo: cannot reduce [${x.shape}] to [${shape}]`);
  const axes: number[] = [];
  x.shape.forEach((d, i) => {
    const t = i < lead ? 1 : shape[i - lead];
    if (i < lead || (t === 1 && d !== 1)) axes.push(i);
    else if (t !== d) throw new GpuError(`sumTo: cannot reduce [${x.shape}] to [${shape}]`);
  });
  const out = reduceRaw(x, axes, true, 1, opts);
  const res = out.alias([...shape]);
  out.dispose();
  return res;
}
