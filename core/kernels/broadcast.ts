/** Expands a tensor to a broadcast shape (a strided copy with zero strides), optionally scaled. */
import { GpuError } from "../gpu/errors.ts";
import { record } from "../tensor/autograd.ts";
import { Tensor } from "../tensor/tensor.ts";
import { stridesOf } from "./common.ts";
import { stridedCopy } from "./strided_copy.ts";
import { scale } from "./unary.ts";
import { sumTo } from "./reduce.ts";

/** The broadcast of two shapes, numpy rules. */
export function broadcastShape(op: string, a: readonly number[], b: readonly number[]): number[] {
  const r = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const da = a[a.length - r + i] ?? 1, db = b[b.length - r + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new GpuError(`${op}: shapes [${a}] and [${b}] do not broadcast`);
    }
    out.push(da === 1 ? db : da);
  }
  return out;
}

/** Strides of `shape` seen from the broadcast shape `to` (0 where broadcast). */
export function broadcastStrides(shape: readonly number[], to: readonly number[]): number[] {
  const s = stridesOf(shape);
  const lead = to.length - shape.length;
  return to.map((_, i) => (i < lead || shape[i - lead] === 1 ? 0 : s[i - lead]));
}

/** Materialises x broadcast to `shape`, times `alpha`. */
export function broadcastTo(x: Tensor, shape: readonly number[], alpha = 1): Tensor {
  broadcastShape("broadcastTo", x.shape, shape);
  const out = Tensor.empty(x.gpu, shape, x.dtype);
  stridedCopy(x, out, shape, broadcastStrides(x.shape, shape), 0, stridesOf(shape), 0);
  let res = out;
  if (alpha !== 1) {
    res = scale(out, alpha);
    out.dispose();
  }
  const src = [...x.shape];
  return record("broadcastTo", res, [x], (g) => {
    const s = sumTo(g, src);
    if (alpha === 1) return [s];
    const r = scale(s, alpha);
    s.dispose();
    return [r];
  });
}
