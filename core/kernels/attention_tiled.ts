/**
 * The GPU-shaped flash-attention forward: a workgroup of 128 invocations owns a block of 32 query
 * rows of one (batch, head) and streams the keys in tiles of 32. Per key tile, Q and K chunks of 32
 * head dims are staged in workgroup memory and every invocation computes 2 x 4 scores of the
 * 32 x 32 score tile (so no invocation holds a whole head row: head dims of 40 to 512 cost the same
 * registers per score); the tile's scores go to workgroup memory, 32 invocations apply the online
 * softmax (running max and sum in base 2, one rescale per row and tile), and V chunks are staged
 * the same way for P V, each invocation accumulating 2 rows x one vec4 of every 32-dim chunk in f32
 * registers. Nothing of size Lq x Lk leaves workgroup memory; only the per-row base-2 log-sum-exp
 * is written for backward, in the layout attention.ts's storage backward kernels read.
 *
 * The one-thread-per-row kernels of attention.ts keep a whole q row and output row in registers,
 * which spills on GPUs from head dim ~128 on and is limited to 256; this one has no such limit
 * (512 here, the VAE's single-head attention), and is the default where the adapter's caps say
 * `tiledKernels`. f32 or f16 storage, f32 arithmetic.
 */
import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { type Dims, preamble, rowBuf, uniforms } from "./attention_common.ts";

/** Query rows per workgroup, keys per tile, head dims per staged chunk, invocations. */
const BQ = 32, BK = 32, DC = 32, WG = 128;
/** vec4s per staged row, padded by one so rows start in different memory banks. */
const ROW4 = DC / 4 + 1;
/** Largest head dimension of the tiled kernel (registers: 2 rows x D/32 vec4 per invocation). */
export const MAX_TILED_HEAD_DIM = 512;

function shader(dt: Tensor["dtype"], d4: number, vec: boolean): string {
  const nc = Math.ceil(d4 / (DC / 4));
  const L: string[] = [];
  L.push(`${
    preamble(dt, d4, BK, [
      rowBuf("q"),
      rowBuf("k"),
      rowBuf("v"),
      rowBuf("o", true),
      ["lse", "read_write", "f32"],
    ], vec)
  }
var<workgroup> qs: array<vec4<f32>, ${BQ * ROW4}>;
var<workgroup> ks: array<vec4<f32>, ${BK * ROW4}>;
var<workgroup> ss: array<f32, ${BQ * (BK + 1)}>;
var<workgroup> mrow: array<f32, ${BQ}>;
var<workgroup> lrow: array<f32, ${BQ}>;
var<workgroup> crow: array<f32, ${BQ}>;

/** Element offset of head row r (clamped into range) of batch b, head h. */
fn headBase(b: u32, h: u32, len: u32, r: u32) -> u32 {
  return (b * len + min(r, len - 1u)) * u.hd + h * u.d;
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let bh = wid.y;
  let b = bh / u.h;
  let h = bh % u.h;
  let q0 = wid.x * ${BQ}u;
  // This invocation's score rows (i) and keys (j), interleaved so neighbours touch neighbours.
  let ra = li / 8u;
  let rb = ra + 16u;
  let kj = li % 8u;
  if (li < ${BQ}u) {
    mrow[li] = NEG_BIG;
    lrow[li] = 0.0;
  }`);
  for (let c = 0; c < nc; c++) {
    L.push(`  var acc0_${c} = vec4<f32>(0.0);\n  var acc1_${c} = vec4<f32>(0.0);`);
  }
  // Stages one 32 x 32 chunk (c) of a head-row buffer into `dst`, zero past the rows or dims.
  const stage = (dst: string, name: string, row0: string, len: string, c: number, scale = "") => `
    for (var s = li; s < ${(BQ * DC) / 4}u; s += ${WG}u) {
      let r = s / ${DC / 4}u;
      let e = s % ${DC / 4}u;
      var val = vec4<f32>(0.0);
      if (${row0} + r < ${len} && ${c * (DC / 4)}u + e < D4) {
        val = ld_${name}(headBase(b, h, ${len}, ${row0} + r), ${c * (DC / 4)}u + e)${scale};
      }
      ${dst}[r * ${ROW4}u + e] = val;
    }`;
  L.push(`  // Key tiles from a per-workgroup base, not the constant 0 (lavapipe; see attention.ts).
  let jBase = wid.x;
  for (var jPos = jBase; jPos < jBase + u.lk; jPos += ${BK}u) {
    let j0 = jPos - jBase;
    var s0 = vec4<f32>(0.0);
    var s1 = vec4<f32>(0.0);`);
  for (let c = 0; c < nc; c++) {
    L.push(`    ${stage("qs", "q", "q0", "u.lq", c, " * u.scale2")}
    ${stage("ks", "k", "j0", "u.lk", c)}
    workgroupBarrier();
    for (var e = 0u; e < ${DC / 4}u; e++) {
      let qa = qs[ra * ${ROW4}u + e];
      let qb = qs[rb * ${ROW4}u + e];
      for (var t = 0u; t < 4u; t++) {
        let kv = ks[(kj + 8u * t) * ${ROW4}u + e];
        s0[t] += dot(qa, kv);
        s1[t] += dot(qb, kv);
      }
    }
    workgroupBarrier();`);
  }
  L.push(`    for (var t = 0u; t < 4u; t++) {
      let j = kj + 8u * t;
      let past = j0 + j >= u.lk;
      ss[ra * ${BK + 1}u + j] = select(s0[t], NEG_BIG, past);
      ss[rb * ${BK + 1}u + j] = select(s1[t], NEG_BIG, past);
    }
    workgroupBarrier();
    // Online softmax, one invocation per row: probabilities replace the scores in place.
    if (li < ${BQ}u) {
      let base = li * ${BK + 1}u;
      var mt = mrow[li];
      for (var j = 0u; j < ${BK}u; j++) { mt = max(mt, ss[base + j]); }
      var sum = 0.0;
      for (var j = 0u; j < ${BK}u; j++) {
        let p = exp2(ss[base + j] - mt);
        ss[base + j] = p;
        sum += p;
      }
      let corr = exp2(mrow[li] - mt);
      crow[li] = corr;
      lrow[li] = lrow[li] * corr + sum;
      mrow[li] = mt;
    }
    workgroupBarrier();
    let ca = crow[ra];
    let cb = crow[rb];`);
  for (let c = 0; c < nc; c++) {
    L.push(`    acc0_${c} *= ca;
    acc1_${c} *= cb;
    ${stage("ks", "v", "j0", "u.lk", c)}
    workgroupBarrier();
    for (var j = 0u; j < ${BK}u; j++) {
      let vv = ks[j * ${ROW4}u + kj];
      acc0_${c} = fma(vec4<f32>(ss[ra * ${BK + 1}u + j]), vv, acc0_${c});
      acc1_${c} = fma(vec4<f32>(ss[rb * ${BK + 1}u + j]), vv, acc1_${c});
    }
    workgroupBarrier();`);
  }
  L.push(`  }
  let la = lrow[ra];
  let lb = lrow[rb];`);
  for (const [r, acc, l] of [["ra", "acc0", "la"], ["rb", "acc1", "lb"]]) {
    L.push(`  if (q0 + ${r} < u.lq) {
    let base = headBase(b, h, u.lq, q0 + ${r});`);
    for (let c = 0; c < nc; c++) {
      L.push(
        `    if (${c * (DC / 4)}u + kj < D4) { st_o(base, ${
          c * (DC / 4)
        }u + kj, ${acc}_${c} / ${l}); }`,
      );
    }
    L.push(`    if (kj == 0u) { lse[bh * u.lq + q0 + ${r}] = mrow[${r}] + log2(${l}); }
  }`);
  }
  L.push(`}`);
  return L.join("\n");
}

/**
 * Runs the tiled forward: out [B, Lq, H*D] in q's dtype and the base-2 log-sum-exp [B, H, Lq]
 * (f32) that the backward kernels of attention.ts read.
 */
export function forwardTiled(
  gpu: Gpu,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  d: Dims,
): { out: Tensor; lse: Tensor } {
  const d4 = Math.ceil(d.d / 4);
  const vec = d.d % 4 === 0;
  const kern = gpu.kernel(
    "attention_tiled",
    `${q.dtype}|${d4}|${vec}`,
    () => shader(q.dtype, d4, vec),
  );
  const out = Tensor.empty(gpu, q.shape, q.dtype);
  const lse = Tensor.empty(gpu, [d.b, d.h, d.lq], "f32");
  gpu.dispatch(
    kern,
    [q.buffer, k.buffer, v.buffer, out.buffer, lse.buffer],
    uniforms(d),
    [Math.ceil(d.lq / BQ), d.b * d.h],
  );
  return { out, lse };
}
