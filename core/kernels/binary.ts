/**
 * Broadcasting elementwise add, sub, mul, div (numpy rules). Same-shape operands take a plain indexed
 * kernel; others index through zero strides. Gradients are summed back to each operand's shape.
 */
import { record, save, setGradAccumulator } from "../tensor/autograd.ts";
import { numel, sameShape, Tensor } from "../tensor/tensor.ts";
import {
  checkArgs,
  grid1d,
  GRID_ARGS,
  header,
  linearIndex,
  packUniforms,
  sameDtype,
  stridesOf,
  wgslType,
} from "./common.ts";
import { bindings, uniformBinding } from "./bindings.ts";
import { broadcastShape, broadcastStrides } from "./broadcast.ts";
import { sumTo } from "./reduce.ts";
import { neg } from "./unary.ts";
import { GpuError } from "../gpu/errors.ts";

const WG = 256;
const MAX_RANK = 8;
const EXPR = { add: "a + b", sub: "a - b", mul: "a * b", div: "a / b" } as const;
export type BinaryOp = keyof typeof EXPR;

/** Computes a (op) b with broadcasting; records nothing. */
export function binaryRaw(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  const gpu = checkArgs(op, [a, b], ["f32", "f16"]);
  const dt = sameDtype(op, [a, b]);
  const shape = broadcastShape(op, a.shape, b.shape);
  const n = numel(shape);
  const out = Tensor.empty(gpu, shape, dt);
  const T = wgslType(dt);
  const plain = sameShape(a.shape, shape) && sameShape(b.shape, shape);
  if (shape.length > MAX_RANK) throw new GpuError(`${op}: rank ${shape.length} > ${MAX_RANK}`);
  const k = gpu.kernel(`binary_${op}`, `${T}|${plain}`, () =>
    `${header(dt)}
struct U { n: u32, rank: u32, p0: u32, p1: u32,
  shape: array<vec4<u32>, 2>, sa: array<vec4<u32>, 2>, sb: array<vec4<u32>, 2> };
${uniformBinding()}
${bindings([["xa", "read", T], ["xb", "read", T], ["y", "read_write", T]])}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(WG)};
  if (i >= u.n) { return; }
  ${
      plain ? "let ia = i; let ib = i;" : `var rem = i;
  var ia = 0u;
  var ib = 0u;
  for (var k = i32(u.rank) - 1; k >= 0; k--) {
    let d = u.shape[k / 4][k % 4];
    let c = rem % d;
    rem = rem / d;
    ia += c * u.sa[k / 4][k % 4];
    ib += c * u.sb[k / 4][k % 4];
  }`
    }
  let a = f32(xa[ia]);
  let b = f32(xb[ib]);
  y[i] = ${T}(${EXPR[op]});
}`);
  const pad = (v: number[]) => [...v, ...new Array(MAX_RANK - v.length).fill(1)];
  const u = packUniforms([
    n,
    shape.length,
    0,
    0,
    ...pad(shape),
    ...pad(broadcastStrides(a.shape, shape)),
    ...pad(broadcastStrides(b.shape, shape)),
  ]);
  void stridesOf;
  gpu.dispatch(k, [a.buffer, b.buffer, out.buffer], u, grid1d(gpu, n, WG));
  return out;
}

function reduceGrad(g: Tensor, shape: readonly number[]): Tensor {
  return sumTo(g, shape);
}

export function add(a: Tensor, b: Tensor): Tensor {
  const out = binaryRaw("add", a, b);
  const sa = [...a.shape], sb = [...b.shape];
  return record("add", out, [a, b], (g) => [
    a.requiresGrad ? reduceGrad(g, sa) : null,
    b.requiresGrad ? reduceGrad(g, sb) : null,
  ]);
}

export function sub(a: Tensor, b: Tensor): Tensor {
  const out = binaryRaw("sub", a, b);
  const sa = [...a.shape], sb = [...b.shape];
  return record("sub", out, [a, b], (g) => [
    a.requiresGrad ? reduceGrad(g, sa) : null,
    b.requiresGrad ? neg(reduceGrad(g, sb)) : null,
  ]);
}

export function mul(a: Tensor, b: Tensor): Tensor {
  const out = binaryRaw("mul", a, b);
  const xa = save(a), xb = save(b);
  return record("mul", out, [a, b], (g) => [
    a.requiresGrad ? reduceGrad(binaryRaw("mul", g, xb), xa.shape) : null,
    b.requiresGrad ? reduceGrad(binaryRaw("mul", g, xa), xb.shape) : null,
  ], [xa, xb]);
}

export function div(a: Tensor, b: Tensor): Tensor {
  const out = binaryRaw("div", a, b);
  const xa = save(a), xb = save(b);
  return record("div", out, [a, b], (g) => {
    const ga = a.requiresGrad ? reduceGrad(binaryRaw("div", g, xb), xa.shape) : null;
    let gb: Tensor | null = null;
    if (b.requiresGrad) {
      // d(a/b)/db = -a / b^2
      const q = binaryRaw("div", binaryRaw("mul", g, xa), binaryRaw("mul", xb, xb));
      gb = neg(reduceGrad(q, xb.shape));
    }
    return [ga, gb];
  }, [xa, xb]);
}

/** a += b in place (same shape), recording nothing: gradient accumulation and optimizer updates. */
export function addInPlace(a: Tensor, b: Tensor): void {
  if (!sameShape(a.shape, b.shape)) {
    throw new GpuError(`addInPlace: shapes [${a.shape}] and [${b.shape}] differ`);
  }
  const r = binaryRaw("add", a, b);
  a.gpu.copy(r.buffer, 0, a.buffer, 0, a.bytes);
  r.dispose();
}

setGradAccumulator(addInPlace);
