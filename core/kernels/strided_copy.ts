/**
 * Strided copy: one kernel behind permute, slice, concat, split and flip. Each thread maps a linear
 * index over a view shape to a source and a destination offset through per-dimension strides.
 */
import { GpuError } from "../gpu/errors.ts";
import { record } from "../tensor/autograd.ts";
import { fill } from "./fill.ts";
import { Tensor } from "../tensor/tensor.ts";
import {
  axisIndex,
  checkArgs,
  grid1d,
  GRID_ARGS,
  header,
  linearIndex,
  packUniforms,
  stridesOf,
  wgslType,
} from "./common.ts";
import { bindings, uniformBinding } from "./bindings.ts";

const WG = 256;
const MAX_RANK = 8;

/** Copies the view `shape` from src (strides, base) into dst (strides, base). Records nothing. */
export function stridedCopy(
  src: Tensor,
  dst: Tensor,
  shape: readonly number[],
  srcStrides: number[],
  srcBase: number,
  dstStrides: number[],
  dstBase: number,
): void {
  const gpu = checkArgs("strided_copy", [src, dst]);
  if (src.dtype !== dst.dtype) {
    throw new GpuError(`strided_copy: dtype mismatch ${src.dtype} vs ${dst.dtype}`);
  }
  if (shape.length > MAX_RANK) throw new GpuError(`strided_copy: rank ${shape.length} > 8`);
  const n = shape.reduce((a, b) => a * b, 1);
  if (n === 0) return;
  const T = wgslType(src.dtype);
  const k = gpu.kernel("strided_copy", T, () =>
    `${header(src.dtype)}
struct U { n: u32, rank: u32, sbase: u32, dbase: u32,
  shape: array<vec4<u32>, 2>, ss: array<vec4<i32>, 2>, ds: array<vec4<i32>, 2> };
${uniformBinding()}
${bindings([["src", "read", T], ["dst", "read_write", T]])}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(WG)};
  if (i >= u.n) { return; }
  var rem = i;
  var so = i32(u.sbase);
  var d = i32(u.dbase);
  for (var k = i32(u.rank) - 1; k >= 0; k--) {
    let dim = u.shape[k / 4][k % 4];
    let c = i32(rem % dim);
    rem = rem / dim;
    so += c * u.ss[k / 4][k % 4];
    d += c * u.ds[k / 4][k % 4];
  }
  dst[d] = src[so];
}`);
  const pad = (a: readonly number[], fill: number) => [
    ...a,
    ...new Array(MAX_RANK - a.length).fill(fill),
  ];
  const u = packUniforms([
    n,
    shape.length,
    srcBase,
    dstBase,
    ...pad(shape, 1),
    ...pad(srcStrides, 0),
    ...pad(dstStrides, 0),
  ]);
  gpu.dispatch(k, [src.buffer, dst.buffer], u, grid1d(gpu, n, WG));
}

/** A copy with the same values (a fresh buffer). */
export function clone(x: Tensor): Tensor {
  const out = Tensor.empty(x.gpu, x.shape, x.dtype);
  x.gpu.copy(x.buffer, 0, out.buffer, 0, x.bytes);
  return record("clone", out, [x], (g) => [clone(g)]);
}

/** Reorders dimensions: out.shape[i] = x.shape[perm[i]]. */
export function permute(x: Tensor, perm: number[]): Tensor {
  checkArgs("permute", [x]);
  const r = x.shape.length;
  if (perm.length !== r || [...perm].sort((a, b) => a - b).some((p, i) => p !== i)) {
    throw new GpuError(`permute: [${perm}] is not a permutation of ${r} axes of [${x.shape}]`);
  }
  const shape = perm.map((p) => x.shape[p]);
  const xs = stridesOf(x.shape);
  const out = Tensor.empty(x.gpu, shape, x.dtype);
  stridedCopy(x, out, shape, perm.map((p) => xs[p]), 0, stridesOf(shape), 0);
  const inv = new Array(r);
  perm.forEach((p, i) => (inv[p] = i));
  return record("permute", out, [x], (g) => [permute(g, inv)]);
}

/** Swaps two axes. */
export function transpose(x: Tensor, a = -2, b = -1): Tensor {
  const r = x.shape.length;
  const perm = [...Array(r).keys()];
  const i = axisIndex("transpose", a, r), j = axisIndex("transpose", b, r);
  [perm[i], perm[j]] = [perm[j], perm[i]];
  return permute(x, perm);
}

/** Elements [start, start + length) along `axis`. */
export function slice(x: Tensor, axis: number, start: number, length: number): Tensor {
  checkArgs("slice", [x]);
  const ax = axisIndex("slice", axis, x.shape.length);
  if (start < 0 || length < 0 || start + length > x.shape[ax]) {
    throw new GpuError(
      `slice: [${start}, ${start + length}) out of range for axis ${ax} of [${x.shape}]`,
    );
  }
  const shape = [...x.shape];
  shape[ax] = length;
  const xs = stridesOf(x.shape);
  const out = Tensor.empty(x.gpu, shape, x.dtype);
  stridedCopy(x, out, shape, xs, start * xs[ax], stridesOf(shape), 0);
  const full = [...x.shape];
  return record("slice", out, [x], (g) => {
    const gx = zerosLike(g.gpu, full, g.dtype);
    stridedCopy(g, gx, shape, stridesOf(shape), 0, stridesOf(full), start * xs[ax]);
    return [gx];
  });
}

/** Joins tensors along `axis`. */
export function concat(xs: Tensor[], axis: number): Tensor {
  if (xs.length === 0) throw new GpuError("concat: no tensors");
  checkArgs("concat", xs);
  const r = xs[0].shape.length;
  const ax = axisIndex("concat", axis, r);
  for (const t of xs) {
    if (
      t.dtype !== xs[0].dtype || t.shape.length !== r ||
      t.shape.some((d, i) => i !== ax && d !== xs[0].shape[i])
    ) {
      throw new GpuError(
        `concat: shapes ${xs.map((t) => `[${t.shape}] ${t.dtype}`).join(", ")} do not match ` +
          `outside axis ${ax}`,
      );
    }
  }
  const shape = [...xs[0].shape];
  shape[ax] = xs.reduce((s, t) => s + t.shape[ax], 0);
  const out = Tensor.empty(xs[0].gpu, shape, xs[0].dtype);
  const os = stridesOf(shape);
  let off = 0;
  const offsets: number[] = [];
  for (const t of xs) {
    offsets.push(off);
    stridedCopy(t, out, t.shape, stridesOf(t.shape), 0, os, off * os[ax]);
    off += t.shape[ax];
  }
  return record(
    "concat",
    out,
    xs,
    (g) => xs.map((t, i) => (t.requiresGrad ? slice(g, ax, offsets[i], t.shape[ax]) : null)),
  );
}

/** Splits along `axis` into pieces of the given sizes. */
export function split(x: Tensor, sizes: number[], axis: number): Tensor[] {
  const ax = axisIndex("split", axis, x.shape.length);
  const total = sizes.reduce((a, b) => a + b, 0);
  if (total !== x.shape[ax]) {
    throw new GpuError(`split: sizes [${sizes}] do not sum to ${x.shape[ax]} (axis ${ax})`);
  }
  let off = 0;
  return sizes.map((s) => {
    const t = slice(x, ax, off, s);
    off += s;
    return t;
  });
}

/** Reverses the order along `axis` (e.g. a horizontal flip of NCHW along axis 3). */
export function flip(x: Tensor, axis: number): Tensor {
  checkArgs("flip", [x]);
  const ax = axisIndex("flip", axis, x.shape.length);
  const xs = stridesOf(x.shape);
  const ss = [...xs];
  ss[ax] = -xs[ax];
  const out = Tensor.empty(x.gpu, x.shape, x.dtype);
  stridedCopy(x, out, x.shape, ss, (x.shape[ax] - 1) * xs[ax], xs, 0);
  return record("flip", out, [x], (g) => [flip(g, ax)]);
}

/** Zero-pads the last two axes of [..., H, W] by (top, bottom, left, right). */
export function pad2d(x: Tensor, top: number, bottom: number, left: number, right: number): Tensor {
  checkArgs("pad2d", [x]);
  const r = x.shape.length;
  if (r < 2) throw new GpuError(`pad2d: needs at least 2 axes, got [${x.shape}]`);
  const shape = [...x.shape];
  shape[r - 2] += top + bottom;
  shape[r - 1] += left + right;
  const out = zerosLike(x.gpu, shape, x.dtype);
  const os = stridesOf(shape);
  const base = top * os[r - 2] + left * os[r - 1];
  stridedCopy(x, out, x.shape, stridesOf(x.shape), 0, os, base);
  const src = [...x.shape];
  return record("pad2d", out, [x], (g) => {
    const gx = Tensor.empty(g.gpu, src, g.dtype);
    stridedCopy(g, gx, src, stridesOf(shape), base, stridesOf(src), 0);
    return [gx];
  });
}

/** Pads right and bottom by `n` zeros (diffusers' VAE Downsample2D with padding 0). */
export function padRightBottom(x: Tensor, n: number): Tensor {
  return pad2d(x, 0, n, 0, n);
}

/** A view with another shape (no copy); -1 infers one dimension. */
export function reshape(x: Tensor, shape: number[]): Tensor {
  checkArgs("reshape", [x]);
  const known = shape.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
  const s = shape.map((d) => (d === -1 ? x.size / known : d));
  const out = x.alias(s);
  const orig = [...x.shape];
  return record("reshape", out, [x], (g) => [g.alias(orig)]);
}

/** A tensor of zeros. */
export function zerosLike(gpu: Tensor["gpu"], shape: readonly number[], dtype: Tensor["dtype"]) {
  const t = Tensor.empty(gpu, shape, dtype);
  fillZero(t);
  return t;
}

/** Clears a tensor in place (records nothing). */
export function fillZero(t: Tensor): void {
  fill(t, 0);
}
