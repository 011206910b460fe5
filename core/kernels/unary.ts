/**
 * Elementwise maps y = f(x) with their derivatives: scale (a*x + b), SiLU, GELU (erf and tanh), clamp,
 * square, sqrt, exp, neg, sigmoid, tanh. One generated kernel per (function, dtype); f32 arithmetic.
 */
import { record, save } from "../tensor/autograd.ts";
import { Tensor } from "../tensor/tensor.ts";
import {
  checkArgs,
  f32u,
  grid1d,
  GRID_ARGS,
  header,
  linearIndex,
  packUniforms,
  wgslType,
} from "./common.ts";
import { bindings, opt, uniformBinding } from "./bindings.ts";
import { ERF_WGSL, GELU_WGSL } from "./wgsl_math.ts";

const WG = 256;

/** WGSL helpers the expressions may call (erf and GELU from wgsl_math.ts). */
const FUNCS = `${ERF_WGSL}${GELU_WGSL}
fn sigmoid_(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }
fn tanh_(x: f32) -> f32 { let c = clamp(x, -15.0, 15.0); let e = exp(2.0 * c); return (e - 1.0) / (e + 1.0); }
const K0: f32 = 0.7978845608028654;
const K1: f32 = 0.044715;
`;

interface MapDef {
  f: string;
  /** d f / d x, or null when the op has no gradient. */
  df: string | null;
}

const MAPS: Record<string, MapDef> = {
  scale: { f: "u.a * x + u.b", df: "u.a" },
  neg: { f: "-x", df: "-1.0" },
  silu: { f: "x * sigmoid_(x)", df: "sigmoid_(x) * (1.0 + x * (1.0 - sigmoid_(x)))" },
  gelu: {
    f: "gelu_(x)",
    df: "dgelu_(x)",
  },
  gelu_tanh: {
    f: "0.5 * x * (1.0 + tanh_(K0 * (x + K1 * x * x * x)))",
    df:
      "0.5 * (1.0 + tanh_(K0 * (x + K1 * x * x * x))) + 0.5 * x * (1.0 - tanh_(K0 * (x + K1 * x * x * x)) * tanh_(K0 * (x + K1 * x * x * x))) * K0 * (1.0 + 3.0 * K1 * x * x)",
  },
  clamp: { f: "clamp(x, u.a, u.b)", df: "select(0.0, 1.0, x >= u.a && x <= u.b)" },
  square: { f: "x * x", df: "2.0 * x" },
  sqrt: { f: "sqrt(x)", df: "0.5 / sqrt(x)" },
  exp: { f: "exp(x)", df: "exp(x)" },
  sigmoid: { f: "sigmoid_(x)", df: "sigmoid_(x) * (1.0 - sigmoid_(x))" },
  tanh: { f: "tanh_(x)", df: "1.0 - tanh_(x) * tanh_(x)" },
  relu: { f: "max(x, 0.0)", df: "select(0.0, 1.0, x > 0.0)" },
};

export type MapName = keyof typeof MAPS;

function launch(name: MapName, x: Tensor, a: number, b: number, g?: Tensor): Tensor {
  const gpu = x.gpu;
  const T = wgslType(x.dtype);
  const grad = g !== undefined;
  const def = MAPS[name];
  const k = gpu.kernel(`${name}${grad ? "_backward" : ""}`, T, () =>
    `${header(x.dtype)}
struct U { n: u32, a: f32, b: f32 };
${uniformBinding()}
${bindings([["xs", "read", T], opt(grad, ["gs", "read", T]), ["ys", "read_write", T]])}
${FUNCS}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${linearIndex(WG)};
  if (i >= u.n) { return; }
  let x = f32(xs[i]);
  ys[i] = ${T}(${grad ? `f32(gs[i]) * (${def.df})` : def.f});
}`);
  const out = Tensor.empty(gpu, x.shape, x.dtype);
  const bufs = grad ? [x.buffer, g!.buffer, out.buffer] : [x.buffer, out.buffer];
  gpu.dispatch(k, bufs, packUniforms([x.size, f32u(a), f32u(b)]), grid1d(gpu, x.size, WG));
  return out;
}

function map(name: MapName, x: Tensor, a = 0, b = 0): Tensor {
  checkArgs(name, [x], ["f32", "f16"]);
  const out = launch(name, x, a, b);
  const sx = save(x);
  return record(name, out, [x], (g) => [launch(name, sx, a, b, g)], [sx]);
}

/** a * x + b. */
export function scale(x: Tensor, a: number, b = 0): Tensor {
  checkArgs("scale", [x], ["f32", "f16"]);
  const out = launch("scale", x, a, b);
  // The derivative is the constant a: no need to keep x.
  return record("scale", out, [x], (g) => [launch("scale", g, a, 0)]);
}
export const neg = (x: Tensor): Tensor => scale(x, -1);
export const silu = (x: Tensor): Tensor => map("silu", x);
/** GELU with the exact erf form (PyTorch's default `approximate='none'`). */
export const gelu = (x: Tensor): Tensor => map("gelu", x);
/** GELU with the tanh approximation (`approximate='tanh'`). */
export const geluTanh = (x: Tensor): Tensor => map("gelu_tanh", x);
export const clamp = (x: Tensor, lo: number, hi: number): Tensor => map("clamp", x, lo, hi);
export const square = (x: Tensor): Tensor => map("square", x);
export const sqrt = (x: Tensor): Tensor => map("sqrt", x);
export const exp = (x: Tensor): Tensor => map("exp", x);
export const sigmoid = (x: Tensor): Tensor => map("sigmoid", x);
export const tanh = (x: Tensor): Tensor => map("tanh", x);
export const relu = (x: Tensor): Tensor => map("relu", x);
