/**
 * Fused multi-head attention, flash-attention style: out = softmax(q k^T * scale) v per head, on the
 * layout diffusers' Attention has before it splits heads (q [B, Lq, H*D], k/v [B, Lk, H*D]).
 *
 * Nothing of size Lq x Lk ever reaches global memory. Forward: a workgroup takes 64 query rows of one
 * (batch, head), one thread per row holding its q row and output accumulator in registers; key/value
 * tiles stream through workgroup memory and an online softmax (running max and sum, in base 2)
 * rescales the accumulator tile by tile. Only the per-row log-sum-exp is saved for backward.
 *
 * Backward (FlashAttention-2's recomputation): delta_i = rowsum(dO_i * O_i); then
 * P = exp(S - lse), dP = dO v^T, dS = P * (dP - delta) are recomputed tile by tile in two kernels:
 * one thread per query row accumulates dq over key tiles, one thread per key row accumulates dk and
 * dv over query tiles. f32 or f16 storage, f32 arithmetic throughout.
 *
 * By default the same three kernels run in their texture-operand form (attention_tex.ts: streamed rows
 * packed into rgba32float textures and read with textureLoad, several rows per thread), 10-20x faster
 * on lavapipe; the storage-buffer kernels here serve `path: "storage"` and shapes past the texture
 * limits. Both save the same base-2 log-sum-exp, so their backward passes are interchangeable.
 *
 * The tile loops count from a per-workgroup base (`wid.x`), not from the constant 0: lavapipe (Mesa
 * 22) specialises the uniform bound of a loop with a constant start to its value at every dispatch,
 * and when that unrolls and grows the shader it recompiles it at every dispatch (milliseconds each).
 */
import { GpuError } from "../gpu/errors.ts";
import { record, save } from "../tensor/autograd.ts";
import { keep } from "../tensor/scope.ts";
import { Tensor } from "../tensor/tensor.ts";
import type { DType } from "../tensor/tensor.ts";
import { checkArgs, grid1d, GRID_ARGS, linearIndex, sameDtype } from "./common.ts";
import { type Dims, preamble, rowBuf, uniforms, unroll } from "./attention_common.ts";
import { attentionTexFits, forwardTex, gradKVTex, gradQTex } from "./attention_tex.ts";
import { forwardTiled, MAX_TILED_HEAD_DIM } from "./attention_tiled.ts";

/** Rows (query rows in forward/dq, key rows in dk/dv) per workgroup: one thread each. */
const ROWS = 64;
/** Largest head dimension: each thread keeps up to four D-long rows in registers. */
const MAX_HEAD_DIM = 256;

/** Options of {@link attention}. */
export interface AttentionOptions {
  /** Number of heads H; the last axis of q, k and v is H * D. */
  heads: number;
  /** Multiplies q k^T (default 1 / sqrt(D)). */
  scale?: number;
  /** Accepted for diffusers parity; accumulation is always f32, so it changes nothing. */
  upcast?: boolean;
  /**
   * Kernel family: "tiled" is the GPU-shaped forward of attention_tiled.ts (score tiles in
   * workgroup memory; backward on the storage kernels), "texture" streams k/v (and in dk/dv q/dO)
   * from packed rgba32float textures (much faster on lavapipe), "storage" through workgroup memory,
   * one thread per row. Default: "tiled" where the adapter's caps say `tiledKernels` or the head
   * dim exceeds the one-thread-per-row kernels' 256, else "texture" where the packed operands fit
   * the texture limits (sequence lengths, batch * heads layers), else "storage". Asking for
   * "texture" where they do not fit throws.
   */
  path?: "texture" | "storage" | "tiled";
}

/** Rows per shared-memory tile so that two tiles of D-wide f32 rows fit the workgroup storage. */
function tileRows(gpu: Tensor["gpu"], d4: number): number {
  const budget = Math.min(gpu.limits.maxComputeWorkgroupStorageSize, 32768) * 0.75;
  for (const t of [32, 16, 8, 4]) if (2 * t * d4 * 16 + 2 * t * 4 <= budget) return t;
  return 4;
}

/** Decodes the workgroup's (batch, head), its row and that row's element offset. */
const ROW_SETUP = (len: string) => `
  let bh = wid.y;
  let b = bh / u.h;
  let h = bh % u.h;
  let row = wid.x * ${ROWS}u + li;
  let rowc = min(row, ${len} - 1u);
  let base = (b * ${len} + rowc) * u.hd + h * u.d;`;

/** Loads key/value tile `j0` (TILE rows, zero past Lk) into kt/vt. Uniform control flow. */
const LOAD_KV = `
    for (var t = li; t < TILE * D4; t += ${ROWS}u) {
      let j = j0 + t / D4;
      if (j < u.lk) {
        let kb = (b * u.lk + j) * u.hd + h * u.d;
        kt[t] = ld_k(kb, t % D4);
        vt[t] = ld_v(kb, t % D4);
      } else {
        kt[t] = vec4<f32>(0.0);
        vt[t] = vec4<f32>(0.0);
      }
    }
    workgroupBarrier();`;

/**
 * The key/value tile loop of the forward and dq kernels: tile `j0` is loaded into kt/vt, `body`
 * runs on it, then a barrier. Tiles count from a per-workgroup base, not the constant 0 (see the
 * module notes).
 */
const kvTiles = (body: string) => `
  let jBase = wid.x;
  for (var jPos = jBase; jPos < jBase + u.lk; jPos += TILE) {
    let j0 = jPos - jBase;
    ${LOAD_KV}
${body}
    workgroupBarrier();
  }`;

interface Ctx {
  gpu: Tensor["gpu"];
  dt: DType;
  d4: number;
  tile: number;
  vec: boolean;
  key: string;
  grid: [number, number];
  gridK: [number, number];
}

function context(q: Tensor, d: Dims): Ctx {
  const gpu = q.gpu;
  const d4 = Math.ceil(d.d / 4);
  const tile = tileRows(gpu, d4);
  const vec = d.d % 4 === 0;
  const bh = d.b * d.h;
  if (bh > gpu.limits.maxComputeWorkgroupsPerDimension) {
    throw new GpuError(`attention: batch * heads = ${bh} exceeds the dispatch limit`);
  }
  return {
    gpu,
    dt: q.dtype,
    d4,
    tile,
    vec,
    key: `${q.dtype}|${d4}|${tile}|${vec}`,
    grid: [Math.ceil(d.lq / ROWS), bh],
    gridK: [Math.ceil(d.lk / ROWS), bh],
  };
}

function forward(q: Tensor, k: Tensor, v: Tensor, d: Dims): { out: Tensor; lse: Tensor } {
  const c = context(q, d);
  const kern = c.gpu.kernel("attention", c.key, () =>
    `${
      preamble(c.dt, c.d4, c.tile, [
        rowBuf("q"),
        rowBuf("k"),
        rowBuf("v"),
        rowBuf("o", true),
        ["lse", "read_write", "f32"],
      ], c.vec)
    }
var<workgroup> kt: array<vec4<f32>, ${c.tile * c.d4}>;
var<workgroup> vt: array<vec4<f32>, ${c.tile * c.d4}>;
@compute @workgroup_size(${ROWS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  ${ROW_SETUP("u.lq")}
  ${unroll(c.d4, (e) => `let qr${e} = ld_q(base, ${e}u) * u.scale2;`)}
  ${unroll(c.d4, (e) => `var acc${e} = vec4<f32>(0.0);`)}
  var m = NEG_BIG;
  var l = 0.0;
  ${
      kvTiles(`
    // Scores of this tile (log2 units), then one rescale of the accumulator per tile.
    var s: array<f32, TILE>;
    var mt = m;
    for (var jj = 0u; jj < TILE; jj++) {
      var dot = vec4<f32>(0.0);
      let kb = jj * D4;
      ${unroll(c.d4, (e) => `dot = fma(qr${e}, kt[kb + ${e}u], dot);`)}
      let sv = select(hsum(dot), NEG_BIG, j0 + jj >= u.lk);
      s[jj] = sv;
      mt = max(mt, sv);
    }
    let corr = exp2(m - mt);
    l = l * corr;
    ${unroll(c.d4, (e) => `acc${e} = acc${e} * corr;`)}
    for (var jj = 0u; jj < TILE; jj++) {
      let p = exp2(s[jj] - mt);
      l += p;
      let pv = vec4<f32>(p);
      let vb = jj * D4;
      ${unroll(c.d4, (e) => `acc${e} = fma(pv, vt[vb + ${e}u], acc${e});`)}
    }
    m = mt;`)
    }
  if (row < u.lq) {
    let inv = 1.0 / l;
    ${unroll(c.d4, (e) => `st_o(base, ${e}u, acc${e} * inv);`)}
    lse[bh * u.lq + row] = m + log2(l);
  }
}`);
  const out = Tensor.empty(c.gpu, q.shape, c.dt);
  const lse = Tensor.empty(c.gpu, [d.b, d.h, d.lq], "f32");
  c.gpu.dispatch(
    kern,
    [q.buffer, k.buffer, v.buffer, out.buffer, lse.buffer],
    uniforms(d),
    c.grid,
  );
  return { out, lse };
}

/** delta[bh, i] = sum_d dO[i, d] * O[i, d], one thread per (batch, head, row). */
function delta(o: Tensor, g: Tensor, d: Dims): Tensor {
  const c = context(o, d);
  const kern = c.gpu.kernel(
    "attention_backward_delta",
    c.key,
    () =>
      `${
        preamble(
          c.dt,
          c.d4,
          c.tile,
          [rowBuf("o"), rowBuf("go"), ["dl", "read_write", "f32"]],
          c.vec,
        )
      }
@compute @workgroup_size(64)
fn main(${GRID_ARGS}) {
  let t = ${linearIndex(64)};
  if (t >= u.bh * u.lq) { return; }
  let bh = t / u.lq;
  let base = ((bh / u.h) * u.lq + t % u.lq) * u.hd + (bh % u.h) * u.d;
  var acc = vec4<f32>(0.0);
  for (var e = 0u; e < D4; e++) { acc = fma(ld_o(base, e), ld_go(base, e), acc); }
  dl[t] = hsum(acc);
}`,
  );
  const out = Tensor.empty(c.gpu, [d.b, d.h, d.lq], "f32");
  const n = d.b * d.h * d.lq;
  c.gpu.dispatch(kern, [o.buffer, g.buffer, out.buffer], uniforms(d), grid1d(c.gpu, n, 64));
  return out;
}

/** dq_i = scale * sum_j dS_ij k_j, one thread per query row, key/value tiles in shared memory. */
function gradQ(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  g: Tensor,
  lse: Tensor,
  dl: Tensor,
  d: Dims,
): Tensor {
  const c = context(q, d);
  const kern = c.gpu.kernel("attention_backward_dq", c.key, () =>
    `${
      preamble(c.dt, c.d4, c.tile, [
        rowBuf("q"),
        rowBuf("k"),
        rowBuf("v"),
        rowBuf("go"),
        ["lse", "read", "f32"],
        ["dl", "read", "f32"],
        rowBuf("dq", true),
      ], c.vec)
    }
var<workgroup> kt: array<vec4<f32>, ${c.tile * c.d4}>;
var<workgroup> vt: array<vec4<f32>, ${c.tile * c.d4}>;
@compute @workgroup_size(${ROWS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  ${ROW_SETUP("u.lq")}
  ${unroll(c.d4, (e) => `let qr${e} = ld_q(base, ${e}u) * u.scale2;`)}
  ${unroll(c.d4, (e) => `let gr${e} = ld_go(base, ${e}u);`)}
  ${unroll(c.d4, (e) => `var acc${e} = vec4<f32>(0.0);`)}
  let li2 = lse[bh * u.lq + rowc];
  let di = dl[bh * u.lq + rowc];
  ${
      kvTiles(`
    for (var jj = 0u; jj < TILE; jj++) {
      var sv = vec4<f32>(0.0);
      var dp = vec4<f32>(0.0);
      let kb = jj * D4;
      ${unroll(c.d4, (e) => `sv = fma(qr${e}, kt[kb + ${e}u], sv);`)}
      ${unroll(c.d4, (e) => `dp = fma(gr${e}, vt[kb + ${e}u], dp);`)}
      let p = select(exp2(hsum(sv) - li2), 0.0, j0 + jj >= u.lk);
      let ds = p * (hsum(dp) - di);
      let dsv = vec4<f32>(ds);
      ${unroll(c.d4, (e) => `acc${e} = fma(dsv, kt[kb + ${e}u], acc${e});`)}
    }`)
    }
  if (row < u.lq) {
    ${unroll(c.d4, (e) => `st_dq(base, ${e}u, acc${e} * u.scale);`)}
  }
}`);
  const dq = Tensor.empty(c.gpu, q.shape, c.dt);
  c.gpu.dispatch(
    kern,
    [q.buffer, k.buffer, v.buffer, g.buffer, lse.buffer, dl.buffer, dq.buffer],
    uniforms(d),
    c.grid,
  );
  return dq;
}

/**
 * dv_j = sum_i P_ij dO_i and dk_j = scale * sum_i dS_ij q_i, one thread per key row, query tiles
 * (q, dO, lse, delta) in shared memory.
 */
function gradKV(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  g: Tensor,
  lse: Tensor,
  dl: Tensor,
  d: Dims,
): { dk: Tensor; dv: Tensor } {
  const c = context(q, d);
  const kern = c.gpu.kernel(
    "attention_backward_dkdv",
    c.key,
    () =>
      `${
        preamble(c.dt, c.d4, c.tile, [
          rowBuf("q"),
          rowBuf("k"),
          rowBuf("v"),
          rowBuf("go"),
          ["lse", "read", "f32"],
          ["dl", "read", "f32"],
          rowBuf("dk", true),
          rowBuf("dv", true),
        ], c.vec)
      }
var<workgroup> qt: array<vec4<f32>, ${c.tile * c.d4}>;
var<workgroup> gt: array<vec4<f32>, ${c.tile * c.d4}>;
var<workgroup> lt: array<f32, ${c.tile}>;
var<workgroup> dt: array<f32, ${c.tile}>;
@compute @workgroup_size(${ROWS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  ${ROW_SETUP("u.lk")}
  ${unroll(c.d4, (e) => `let kr${e} = ld_k(base, ${e}u) * u.scale2;`)}
  ${unroll(c.d4, (e) => `let vr${e} = ld_v(base, ${e}u);`)}
  ${unroll(c.d4, (e) => `var dka${e} = vec4<f32>(0.0);`)}
  ${unroll(c.d4, (e) => `var dva${e} = vec4<f32>(0.0);`)}
  // Tiles from a per-workgroup base, not the constant 0 (see the module notes).
  let iBase = wid.x;
  for (var iPos = iBase; iPos < iBase + u.lq; iPos += TILE) {
    let i0 = iPos - iBase;
    for (var t = li; t < TILE * D4; t += ${ROWS}u) {
      let i = i0 + t / D4;
      if (i < u.lq) {
        let qb = (b * u.lq + i) * u.hd + h * u.d;
        qt[t] = ld_q(qb, t % D4);
        gt[t] = ld_go(qb, t % D4);
      } else {
        qt[t] = vec4<f32>(0.0);
        gt[t] = vec4<f32>(0.0);
      }
    }
    for (var t = li; t < TILE; t += ${ROWS}u) {
      let i = i0 + t;
      let ic = bh * u.lq + min(i, u.lq - 1u);
      // A huge lse makes the padding rows' probabilities exactly zero.
      lt[t] = select(-NEG_BIG, lse[ic], i < u.lq);
      dt[t] = select(0.0, dl[ic], i < u.lq);
    }
    workgroupBarrier();
    for (var ii = 0u; ii < TILE; ii++) {
      var sv = vec4<f32>(0.0);
      var dp = vec4<f32>(0.0);
      let qb = ii * D4;
      ${unroll(c.d4, (e) => `sv = fma(qt[qb + ${e}u], kr${e}, sv);`)}
      ${unroll(c.d4, (e) => `dp = fma(gt[qb + ${e}u], vr${e}, dp);`)}
      let p = exp2(hsum(sv) - lt[ii]);
      let ds = p * (hsum(dp) - dt[ii]);
      let pv = vec4<f32>(p);
      let dsv = vec4<f32>(ds);
      ${unroll(c.d4, (e) => `dva${e} = fma(pv, gt[qb + ${e}u], dva${e});`)}
      ${unroll(c.d4, (e) => `dka${e} = fma(dsv, qt[qb + ${e}u], dka${e});`)}
    }
    workgroupBarrier();
  }
  if (row < u.lk) {
    ${unroll(c.d4, (e) => `st_dk(base, ${e}u, dka${e} * u.scale);`)}
    ${unroll(c.d4, (e) => `st_dv(base, ${e}u, dva${e});`)}
  }
}`,
  );
  const dk = Tensor.empty(c.gpu, k.shape, c.dt);
  const dv = Tensor.empty(c.gpu, v.shape, c.dt);
  c.gpu.dispatch(
    kern,
    [q.buffer, k.buffer, v.buffer, g.buffer, lse.buffer, dl.buffer, dk.buffer, dv.buffer],
    uniforms(d),
    c.gridK,
  );
  return { dk, dv };
}

/** Validates shapes and returns the attention extents; errors name the op and the shapes. */
function dims(q: Tensor, k: Tensor, v: Tensor, o: AttentionOptions): Dims {
  const desc = `q [${q.shape}], k [${k.shape}], v [${v.shape}], heads ${o.heads}`;
  if (q.shape.length !== 3 || k.shape.length !== 3 || v.shape.length !== 3) {
    throw new GpuError(`attention: q, k, v must be [B, L, H*D] (${desc})`);
  }
  const [b, lq, hd] = q.shape;
  const [bk, lk, hdk] = k.shape;
  if (bk !== b || v.shape[0] !== b || hdk !== hd || v.shape[2] !== hd || v.shape[1] !== lk) {
    throw new GpuError(`attention: shapes do not match (${desc})`);
  }
  const h = o.heads;
  if (!Number.isInteger(h) || h < 1 || hd % h !== 0) {
    throw new GpuError(`attention: last axis ${hd} is not divisible into ${h} heads (${desc})`);
  }
  const d = hd / h;
  if (d > MAX_TILED_HEAD_DIM || (d > MAX_HEAD_DIM && o.path !== undefined && o.path !== "tiled")) {
    throw new GpuError(
      `attention: head dim ${d} exceeds ${
        d > MAX_TILED_HEAD_DIM ? MAX_TILED_HEAD_DIM : `${MAX_HEAD_DIM} on the ${o.path} path`
      } (${desc})`,
    );
  }
  if (lq === 0 || lk === 0 || b === 0) {
    throw new GpuError(`attention: empty sequence (${desc})`);
  }
  return { b, h, lq, lk, d, scale: o.scale ?? 1 / Math.sqrt(d) };
}

/**
 * Multi-head scaled dot-product attention without an Lq x Lk score matrix in memory:
 * out[b, i, h*D:(h+1)*D] = softmax_j(scale * q_i . k_j) v_j, for self- (k = v = x) or cross-attention
 * (k/v from the text encoder, any Lk). Differentiable in q, k and v.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 *
 * const gpu = await Gpu.open();
 * // diffusers Attention: q = to_q(x), k = to_k(ctx), v = to_v(ctx), all [B, L, heads * dim_head]
 * const q = Tensor.from(gpu, new Float32Array(3 * 8).map((_, i) => Math.sin(i)), [1, 3, 8]);
 * const k = Tensor.from(gpu, new Float32Array(5 * 8), [1, 5, 8]); // equal keys: equal weights
 * const v = Tensor.from(gpu, new Float32Array(5 * 8).map((_, i) => i), [1, 5, 8]);
 * const h = attention(q, k, v, { heads: 2 }); // [B, Lq, 2 * dim_head] = [1, 3, 8]
 * const out = await h.toF32(); // every query gets the mean of the 5 value rows: 16, 17, ..., 23
 * assert.ok(out.every((o, i) => Math.abs(o - (16 + (i % 8))) < 1e-4));
 * ```
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
  checkArgs("attention", [q, k, v], ["f32", "f16"]);
  sameDtype("attention", [q, k, v]);
  const d = dims(q, k, v, opts);
  const tiled = opts.path === "tiled" ||
    (opts.path === undefined && (q.gpu.caps.tiledKernels || d.d > MAX_HEAD_DIM));
  const allowed = !tiled && q.gpu.texturePathAllowed("attention", opts.path);
  const fits = allowed && attentionTexFits(q.gpu, d);
  if (opts.path === "texture" && !fits) {
    throw new GpuError(
      `attention: texture path does not fit the texture limits (q [${q.shape}], k [${k.shape}], heads ${d.h})`,
    );
  }
  // The tiled forward saves the same base-2 log-sum-exp: its backward runs the storage kernels.
  const tex = !tiled && opts.path !== "storage" && fits;
  const { out, lse } = tiled
    ? forwardTiled(q.gpu, q, k, v, d)
    : tex
    ? forwardTex(q.gpu, q, k, v, d)
    : forward(q, k, v, d);
  const sq = save(q), sk = save(k), sv = save(v);
  const so = keep(out.alias());
  const sl = keep(lse);
  return record("attention", out, [q, k, v], (g) => {
    if (d.d > MAX_HEAD_DIM) {
      // The backward kernels keep whole head rows in registers.
      throw new GpuError(
        `attention: gradients need head dim <= ${MAX_HEAD_DIM}, got ${d.d} (q [${q.shape}])`,
      );
    }
    const dl = delta(so, g, d);
    const dq = q.requiresGrad ? (tex ? gradQTex : gradQ)(sq, sk, sv, g, sl, dl, d) : null;
    let dk: Tensor | null = null, dv: Tensor | null = null;
    if (k.requiresGrad || v.requiresGrad) {
      const r = (tex ? gradKVTex : gradKV)(sq, sk, sv, g, sl, dl, d);
      dk = k.requiresGrad ? r.dk : (r.dk.dispose(), null);
      dv = v.requiresGrad ? r.dv : (r.dv.dispose(), null);
    }
    dl.dispose();
    return [dq, dk, dv];
  }, [sq, sk, sv, so, sl]);
}
