/**
 * Pieces shared by the storage-buffer (attention.ts) and texture-operand (attention_tex.ts) attention
 * kernels: the extents, the uniform block, head-row buffer accessors and the unroll helper.
 */
import type { DType } from "../tensor/tensor.ts";
import { f32u, header, packUniforms, wgslType } from "./common.ts";
import { type Binding, bindingDecl, uniformBinding } from "./bindings.ts";

const LOG2E = Math.LOG2E;

/** Extents of one attention call. */
export interface Dims {
  b: number;
  h: number;
  lq: number;
  lk: number;
  d: number;
  scale: number;
}

/** Attention's shared uniforms: scale2 = scale * log2(e) turns exp into exp2. */
export const UNIFORMS =
  `struct U { bh: u32, h: u32, lq: u32, lk: u32, d: u32, hd: u32, scale2: f32, scale: f32 };
${uniformBinding()}`;

export function uniforms(d: Dims): Uint32Array {
  return packUniforms([
    d.b * d.h,
    d.h,
    d.lq,
    d.lk,
    d.d,
    d.h * d.d,
    f32u(d.scale * LOG2E),
    f32u(d.scale),
  ]);
}

/** A head-row buffer: a storage array with vec4 accessors (see {@link rowBuffers}). */
export interface RowBuffer {
  name: string;
  write: boolean;
}

/** The head-row buffer `name`, read-only unless `write`. */
export const rowBuf = (name: string, write = false): RowBuffer => ({ name, write });

/**
 * WGSL declarations of a kernel's resources, numbered @binding(1..n) in list order (the order the
 * launcher passes them): plain {@link Binding}s, and head-row buffers with their vec4 accessors
 * `ld_<name>(base, d4)` / `st_<name>(base, d4, v)` (base: element offset of a head row). With
 * D % 4 == 0 every row start is 4-aligned and row buffers bind as vec4 arrays; otherwise scalar loads
 * pad the last vector with zeros.
 */
export function rowBuffers(list: (RowBuffer | Binding)[], dt: DType, vec: boolean): string {
  const T = wgslType(dt);
  return list.map((b, i) => {
    if (Array.isArray(b)) return bindingDecl(b, i + 1);
    const { name, write } = b;
    const decl = bindingDecl([name, write ? "read_write" : "read", vec ? `vec4<${T}>` : T], i + 1);
    if (vec) {
      return `${decl}
fn ${write ? "st" : "ld"}_${name}(base: u32, d4: u32${write ? ", v: vec4<f32>" : ""})${
        write ? "" : " -> vec4<f32>"
      } {
  ${
        write
          ? `${name}[base / 4u + d4] = vec4<${T}>(v);`
          : `return vec4<f32>(${name}[base / 4u + d4]);`
      }
}`;
    }
    if (write) {
      return `${decl}
fn st_${name}(base: u32, d4: u32, v: vec4<f32>) {
  for (var c = 0u; c < 4u; c++) {
    if (d4 * 4u + c < u.d) { ${name}[base + d4 * 4u + c] = ${T}(v[c]); }
  }
}`;
    }
    return `${decl}
fn ld_${name}(base: u32, d4: u32) -> vec4<f32> {
  var r = vec4<f32>(0.0);
  for (var c = 0u; c < 4u; c++) {
    if (d4 * 4u + c < u.d) { r[c] = f32(${name}[base + d4 * 4u + c]); }
  }
  return r;
}`;
  }).join("\n");
}

/** Common WGSL preamble: header, uniforms, constants, and the head-row buffers. */
export function preamble(
  dt: DType,
  d4: number,
  tile: number,
  bufs: (RowBuffer | Binding)[],
  vec: boolean,
): string {
  return `${header(dt)}
${UNIFORMS}
const D4 = ${d4}u;
const TILE = ${tile}u;
const NEG_BIG = -3.0e38;
${rowBuffers(bufs, dt, vec)}
fn hsum(v: vec4<f32>) -> f32 { return v.x + v.y + v.z + v.w; }`;
}

/**
 * Repeats `f(e)` for e = 0..n-1. Register rows are unrolled into scalar-named vec4 variables: indexed
 * private arrays end up in stack memory on many drivers (lavapipe among them) and run ~10x slower.
 */
export function unroll(n: number, f: (e: number) => string, sep = "\n    "): string {
  return Array.from({ length: n }, (_, e) => f(e)).join(sep);
}
