/// <reference types="@webgpu/types" />
/**
 * Texture-operand path of {@link attention} (see matmul_tex.ts for why: on lavapipe a storage or
 * workgroup-memory load is a per-lane scalar loop with branches, a `textureLoad` from an rgba32float
 * texture a branchless SIMD fetch, and there are no workgroup barriers to pay either).
 *
 * The streamed operand of each kernel is packed per (batch, head) into one layer of a 2-D array
 * texture, one row per sequence position, texels of 4 consecutive head-dim values (zero-padded):
 * forward and dq read [k texels | v texels] rows of length Lk; dk/dv reads [q | dO | (lse, delta)]
 * rows of length Lq. Rows are padded with zeros (and an lse of +huge, so padded query rows get zero
 * probability) to a multiple of the unroll depth, so every fetch is in bounds.
 *
 * Each invocation keeps RQ rows' state (q, running max and sum, output accumulator, or k/v rows and
 * their gradients) in registers and walks all key (or query) positions, JB at a time, fully
 * unrolled: the flash property holds, nothing of size Lq x Lk is ever stored. The online softmax works
 * in base 2 with the same log-sum-exp (m + log2 l, of scale*log2(e)-scaled scores) as the storage
 * path, so either path's backward accepts either path's saved lse.
 *
 * The streaming loops count from a per-workgroup base (`wid.x`), not from the constant 0: lavapipe
 * (Mesa 22) specialises the uniform bound of a loop with a constant start to its value at every
 * dispatch, and when that unrolls and grows the shader it recompiles it at every dispatch.
 */
import type { Gpu } from "../gpu/device.ts";
import type { DType } from "../tensor/tensor.ts";
import { Tensor } from "../tensor/tensor.ts";
import { acquireTexture, releaseTexture } from "../gpu/texture_pool.ts";
import { header, packUniforms, wgslType } from "./common.ts";
import { bindings, opt, uniformBinding } from "./bindings.ts";
import { type Dims, preamble, rowBuf, uniforms, unroll } from "./attention_common.ts";

/** Invocations per workgroup. */
const WG = 32;
/** Texture rows are padded to a multiple of this (every unroll depth JB divides it). */
const ROW_PAD = 8;
const PACK_WG = 64;

/** Register blocking of the texture kernels for a head dim of `d4` texels. */
interface Tiling {
  /** Rows (query rows, or key rows in dk/dv) per invocation. */
  rq: number;
  /** Streamed positions per unrolled loop step. */
  jb: number;
}

/**
 * Overridable for benchmarks; the defaults suit lavapipe: more rows per invocation amortise the texel
 * fetches, but past 16 texels of head dim (D > 64) the fully unrolled kernels spill and take tens of
 * seconds to compile, so those use a smaller block.
 */
export const texTuning = {
  forward: (d4: number): Tiling =>
    d4 <= 2 ? { rq: 8, jb: 8 } : d4 <= 16 ? { rq: 8, jb: 4 } : { rq: 2, jb: 2 },
  backward: (d4: number): Tiling => d4 <= 16 ? { rq: 8, jb: 4 } : { rq: 2, jb: 1 },
};

const padRows = (n: number) => Math.ceil(n / ROW_PAD) * ROW_PAD;

/** Whether the packed operands of these extents fit the device's texture limits. */
export function attentionTexFits(gpu: Gpu, d: Dims): boolean {
  const l = gpu.limits;
  const d4 = Math.ceil(d.d / 4);
  return 2 * d4 + 1 <= l.maxTextureDimension2D && padRows(d.lq) <= l.maxTextureDimension2D &&
    padRows(d.lk) <= l.maxTextureDimension2D && d.b * d.h <= l.maxTextureArrayLayers;
}

/**
 * Packs head rows of `a` and `b` ([B, L, H*D]) into texels [a | b] per row, plus, with `r1`/`r2`
 * ([B*H, L] f32), a last texel (r1, r2, 0, 0) per row; padding rows are zero (r1 = +huge).
 */
function pack(
  gpu: Gpu,
  dt: DType,
  d: Dims,
  len: number,
  a: Tensor,
  b: Tensor,
  extra: [Tensor, Tensor] | null,
) {
  const T = wgslType(dt);
  const ex = extra !== null;
  const vec = d.d % 4 === 0;
  const A = vec ? `vec4<${T}>` : T;
  const kern = gpu.kernel("attention_pack", `${dt}|${ex}|${vec}`, () =>
    `${header(dt)}
struct P { l: u32, d: u32, hd: u32, h: u32, d4: u32, w: u32, lpad: u32, p0: u32 };
${uniformBinding("P")}
${
      bindings([
        ["a", "read", A],
        ["b", "read", A],
        opt(ex, ["r1", "read", "f32"]),
        opt(ex, ["r2", "read", "f32"]),
        ["dst", "texture", "texture_storage_2d_array<rgba32float, write>"],
      ])
    }
@compute @workgroup_size(${PACK_WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x >= u.w * u.lpad) { return; }
  let x = gid.x % u.w;
  let row = gid.x / u.w;
  let bh = gid.y;
  var v = vec4<f32>(0.0);
  if (row < u.l) {
    if (x < 2u * u.d4) {
      let e0 = (x % u.d4) * 4u;
      let base = ((bh / u.h) * u.l + row) * u.hd + (bh % u.h) * u.d;
      ${
      vec
        ? `if (x < u.d4) { v = vec4<f32>(a[(base + e0) / 4u]); } else { v = vec4<f32>(b[(base + e0) / 4u]); }`
        : `for (var c = 0u; c < 4u; c++) {
        if (e0 + c < u.d) {
          if (x < u.d4) { v[c] = f32(a[base + e0 + c]); } else { v[c] = f32(b[base + e0 + c]); }
        }
      }`
    }
    }${
      ex
        ? ` else {
      v = vec4<f32>(r1[bh * u.l + row], r2[bh * u.l + row], 0.0, 0.0);
    }
  } else if (x >= 2u * u.d4) {
    v.x = 3.0e38;`
        : ""
    }
  }
  textureStore(dst, vec2<u32>(x, row), bh, v);
}`);
  const d4 = Math.ceil(d.d / 4);
  const w = 2 * d4 + (ex ? 1 : 0);
  const lpad = padRows(len);
  const bh = d.b * d.h;
  const t = acquireTexture(gpu, "2d-array", w, lpad, bh);
  const u = packUniforms([len, d.d, d.h * d.d, d.h, d4, w, lpad, 0]);
  const bufs = [a.buffer, b.buffer, ...(extra ? [extra[0].buffer, extra[1].buffer] : []), t.view];
  gpu.dispatch(kern, bufs, u, [Math.ceil((w * lpad) / PACK_WG), bh]);
  return t;
}

/** Row setup of an invocation's `rq` rows (of a sequence of length `len`) and their offsets. */
function rowSetup(rq: number, len: string): string {
  return `
  let bh = wid.y;
  let b = bh / u.h;
  let h = bh % u.h;
  let r0 = wid.x * ${WG * rq}u + li;
  ${
    unroll(rq, (r) =>
      `let row${r} = r0 + ${r * WG}u;
  let rc${r} = min(row${r}, ${len} - 1u);
  let base${r} = (b * ${len} + rc${r}) * u.hd + h * u.d;`, "\n  ")
  }`;
}

/** `hsum(a_0 * b_0 + ... )` over d4 texels as one fma chain. */
function dot(d4: number, a: (e: number) => string, b: (e: number) => string): string {
  let s = `${a(0)} * ${b(0)}`;
  for (let e = 1; e < d4; e++) s = `fma(${a(e)}, ${b(e)}, ${s})`;
  return `hsum(${s})`;
}

/** Loads of texels `x0 .. x0 + d4 - 1` of texture row `row` into `name_e`. */
function loads(tex: string, name: string, d4: number, x0: string, row: string): string {
  return unroll(
    d4,
    (e) => `let ${name}_${e} = textureLoad(${tex}, vec2<u32>(${x0}${e}u, ${row}), bh, 0);`,
  );
}

export function forwardTex(
  gpu: Gpu,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  d: Dims,
): { out: Tensor; lse: Tensor } {
  const dt = q.dtype;
  const d4 = Math.ceil(d.d / 4);
  const vec = d.d % 4 === 0;
  const { rq, jb } = texTuning.forward(d4);
  const kern = gpu.kernel("attention_tex", `${dt}|${d4}|${vec}|${rq}x${jb}x${WG}`, () => {
    const R = (f: (r: number) => string) => unroll(rq, f);
    const J = (f: (j: number) => string) => unroll(jb, f);
    return `${
      preamble(dt, d4, jb, [
        ["kv", "texture", "texture_2d_array<f32>"],
        rowBuf("q"),
        rowBuf("o", true),
        ["lse", "read_write", "f32"],
      ], vec)
    }
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  ${rowSetup(rq, "u.lq")}
  ${R((r) => unroll(d4, (e) => `let q${r}_${e} = ld_q(base${r}, ${e}u) * u.scale2;`))}
  ${R((r) => unroll(d4, (e) => `var a${r}_${e} = vec4<f32>(0.0);`))}
  ${R((r) => `var m${r} = NEG_BIG;\n    var l${r} = 0.0;`)}
  // Tiles from a per-workgroup base, not the constant 0 (see the module notes).
  let jBase = wid.x;
  for (var jPos = jBase; jPos < jBase + u.lk; jPos += TILE) {
    let jt = jPos - jBase;
    // Scores of JB keys (log2 units; NEG_BIG past Lk), then one rescale per row.
    ${
      J((j) =>
        `let j${j} = jt + ${j}u;
    ${loads("kv", `k${j}`, d4, "", `j${j}`)}
    ${
          R((r) =>
            `let s${r}_${j} = select(NEG_BIG, ${
              dot(d4, (e) => `q${r}_${e}`, (e) => `k${j}_${e}`)
            }, j${j} < u.lk);`
          )
        }`
      )
    }
    ${
      R((r) => {
        let mx = `s${r}_0`;
        for (let j = 1; j < jb; j++) mx = `max(${mx}, s${r}_${j})`;
        return `let mt${r} = max(m${r}, ${mx});
    let c${r} = exp2(m${r} - mt${r});
    ${J((j) => `let p${r}_${j} = exp2(s${r}_${j} - mt${r});`)}
    l${r} = fma(l${r}, c${r}, ${unroll(jb, (j) => `p${r}_${j}`, " + ")});
    m${r} = mt${r};
    ${unroll(d4, (e) => `a${r}_${e} = a${r}_${e} * c${r};`)}`;
      })
    }
    ${
      J((j) =>
        `${loads("kv", `v${j}`, d4, "D4 + ", `j${j}`)}
    ${
          unroll(
            d4,
            (e) => R((r) => `a${r}_${e} = fma(vec4<f32>(p${r}_${j}), v${j}_${e}, a${r}_${e});`),
          )
        }`
      )
    }
  }
  ${
      R((r) =>
        `if (row${r} < u.lq) {
    let inv = 1.0 / l${r};
    ${unroll(d4, (e) => `st_o(base${r}, ${e}u, a${r}_${e} * inv);`)}
    lse[bh * u.lq + row${r}] = m${r} + log2(l${r});
  }`
      )
    }
}`;
  });
  const t = pack(gpu, dt, d, d.lk, k, v, null);
  const out = Tensor.empty(gpu, q.shape, dt);
  const lse = Tensor.empty(gpu, [d.b, d.h, d.lq], "f32");
  gpu.dispatch(kern, [t.view, q.buffer, out.buffer, lse.buffer], uniforms(d), [
    Math.ceil(d.lq / (WG * rq)),
    d.b * d.h,
  ]);
  releaseTexture(gpu, t);
  return { out, lse };
}

/** dq_i = scale * sum_j dS_ij k_j: rq query rows per invocation, [k | v] rows from a texture. */
export function gradQTex(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  g: Tensor,
  lse: Tensor,
  dl: Tensor,
  d: Dims,
): Tensor {
  const gpu = q.gpu;
  const dt = q.dtype;
  const d4 = Math.ceil(d.d / 4);
  const vec = d.d % 4 === 0;
  const { rq, jb } = texTuning.backward(d4);
  const kern = gpu.kernel("attention_tex_dq", `${dt}|${d4}|${vec}|${rq}x${jb}x${WG}`, () => {
    const R = (f: (r: number) => string) => unroll(rq, f);
    const J = (f: (j: number) => string) => unroll(jb, f);
    return `${
      preamble(dt, d4, jb, [
        ["kv", "texture", "texture_2d_array<f32>"],
        rowBuf("q"),
        rowBuf("go"),
        ["lse", "read", "f32"],
        ["dl", "read", "f32"],
        rowBuf("dq", true),
      ], vec)
    }
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  ${rowSetup(rq, "u.lq")}
  ${R((r) => unroll(d4, (e) => `let q${r}_${e} = ld_q(base${r}, ${e}u) * u.scale2;`))}
  ${R((r) => unroll(d4, (e) => `let g${r}_${e} = ld_go(base${r}, ${e}u);`))}
  ${R((r) => unroll(d4, (e) => `var a${r}_${e} = vec4<f32>(0.0);`))}
  ${R((r) => `let ls${r} = lse[bh * u.lq + rc${r}];\n  let dl${r} = dl[bh * u.lq + rc${r}];`)}
  // Tiles from a per-workgroup base, not the constant 0 (see the module notes).
  let jBase = wid.x;
  for (var jPos = jBase; jPos < jBase + u.lk; jPos += TILE) {
    let jt = jPos - jBase;
    ${
      J((j) =>
        `let j${j} = jt + ${j}u;
    ${loads("kv", `k${j}`, d4, "", `j${j}`)}
    ${loads("kv", `v${j}`, d4, "D4 + ", `j${j}`)}
    ${
          R((r) =>
            `let p${r}_${j} = select(0.0, exp2(${
              dot(d4, (e) => `q${r}_${e}`, (e) => `k${j}_${e}`)
            } - ls${r}), j${j} < u.lk);
    let ds${r}_${j} = vec4<f32>(p${r}_${j} * (${
              dot(d4, (e) => `g${r}_${e}`, (e) => `v${j}_${e}`)
            } - dl${r}));`
          )
        }
    ${unroll(d4, (e) => R((r) => `a${r}_${e} = fma(ds${r}_${j}, k${j}_${e}, a${r}_${e});`))}`
      )
    }
  }
  ${
      R((r) =>
        `if (row${r} < u.lq) {
    ${unroll(d4, (e) => `st_dq(base${r}, ${e}u, a${r}_${e} * u.scale);`)}
  }`
      )
    }
}`;
  });
  const t = pack(gpu, dt, d, d.lk, k, v, null);
  const dq = Tensor.empty(gpu, q.shape, dt);
  gpu.dispatch(kern, [t.view, q.buffer, g.buffer, lse.buffer, dl.buffer, dq.buffer], uniforms(d), [
    Math.ceil(d.lq / (WG * rq)),
    d.b * d.h,
  ]);
  releaseTexture(gpu, t);
  return dq;
}

/**
 * dv_j = sum_i P_ij dO_i and dk_j = scale * sum_i dS_ij q_i: rq key rows per invocation,
 * [q | dO | (lse, delta)] rows from a texture.
 */
export function gradKVTex(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  g: Tensor,
  lse: Tensor,
  dl: Tensor,
  d: Dims,
): { dk: Tensor; dv: Tensor } {
  const gpu = q.gpu;
  const dt = q.dtype;
  const d4 = Math.ceil(d.d / 4);
  const vec = d.d % 4 === 0;
  const { rq, jb } = texTuning.backward(d4);
  const kern = gpu.kernel("attention_tex_dkdv", `${dt}|${d4}|${vec}|${rq}x${jb}x${WG}`, () => {
    const R = (f: (r: number) => string) => unroll(rq, f);
    const J = (f: (j: number) => string) => unroll(jb, f);
    return `${
      preamble(dt, d4, jb, [
        ["qg", "texture", "texture_2d_array<f32>"],
        rowBuf("k"),
        rowBuf("v"),
        rowBuf("dk", true),
        rowBuf("dv", true),
      ], vec)
    }
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  ${rowSetup(rq, "u.lk")}
  ${R((r) => unroll(d4, (e) => `let k${r}_${e} = ld_k(base${r}, ${e}u) * u.scale2;`))}
  ${R((r) => unroll(d4, (e) => `let v${r}_${e} = ld_v(base${r}, ${e}u);`))}
  ${R((r) => unroll(d4, (e) => `var dk${r}_${e} = vec4<f32>(0.0);`))}
  ${R((r) => unroll(d4, (e) => `var dv${r}_${e} = vec4<f32>(0.0);`))}
  // Tiles from a per-workgroup base, not the constant 0 (see the module notes).
  let iBase = wid.x;
  for (var iPos = iBase; iPos < iBase + u.lq; iPos += TILE) {
    let it = iPos - iBase;
    ${
      J((i) =>
        `let i${i} = it + ${i}u;
    let t${i} = textureLoad(qg, vec2<u32>(2u * D4, i${i}), bh, 0);
    ${loads("qg", `q${i}`, d4, "", `i${i}`)}
    ${loads("qg", `g${i}`, d4, "D4 + ", `i${i}`)}
    ${
          R((r) =>
            `let p${r}_${i} = exp2(${dot(d4, (e) => `q${i}_${e}`, (e) => `k${r}_${e}`)} - t${i}.x);
    let ds${r}_${i} = vec4<f32>(p${r}_${i} * (${
              dot(d4, (e) => `g${i}_${e}`, (e) => `v${r}_${e}`)
            } - t${i}.y));
    let pv${r}_${i} = vec4<f32>(p${r}_${i});`
          )
        }
    ${
          unroll(d4, (e) =>
            R((r) =>
              `dv${r}_${e} = fma(pv${r}_${i}, g${i}_${e}, dv${r}_${e});
    dk${r}_${e} = fma(ds${r}_${i}, q${i}_${e}, dk${r}_${e});`
            ))
        }`
      )
    }
  }
  ${
      R((r) =>
        `if (row${r} < u.lk) {
    ${unroll(d4, (e) => `st_dk(base${r}, ${e}u, dk${r}_${e} * u.scale);`)}
    ${unroll(d4, (e) => `st_dv(base${r}, ${e}u, dv${r}_${e});`)}
  }`
      )
    }
}`;
  });
  const t = pack(gpu, dt, d, d.lq, q, g, [lse, dl]);
  const dk = Tensor.empty(gpu, k.shape, dt);
  const dv = Tensor.empty(gpu, v.shape, dt);
  gpu.dispatch(kern, [t.view, k.buffer, v.buffer, dk.buffer, dv.buffer], uniforms(d), [
    Math.ceil(d.lk / (WG * rq)),
    d.b * d.h,
  ]);
  releaseTexture(gpu, t);
  return { dk, dv };
}
