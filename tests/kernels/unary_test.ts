import { checkOp, NEEDS_F16 } from "../helpers/gpu.ts";
import * as ops from "../../core/ops.ts";
import type { Tensor } from "../../core/tensor/tensor.ts";

const erf = (x: number): number => {
  // float64 erf by its Taylor series (|x| < 3 here), an independent reference of the kernel's erf.
  let sum = 0, term = x, n = 0;
  while (Math.abs(term) > 1e-17 * Math.abs(sum) || n < 5) {
    sum += term / (2 * n + 1);
    n++;
    term *= -x * x / n;
    if (n > 200) break;
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
};
const sig = (x: number) => 1 / (1 + Math.exp(-x));

const CASES: [
  string,
  (x: Tensor) => Tensor,
  (x: number) => number,
  ((i: number, n: number) => Float64Array)?,
][] = [
  ["silu", ops.silu, (x) => x * sig(x)],
  ["gelu (erf)", ops.gelu, (x) => 0.5 * x * (1 + erf(x / Math.SQRT2))],
  [
    "gelu (tanh)",
    ops.geluTanh,
    (x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))),
  ],
  ["sigmoid", ops.sigmoid, sig],
  ["tanh", ops.tanh, Math.tanh],
  ["exp", ops.exp, Math.exp],
  ["square", ops.square, (x) => x * x],
  ["scale", (x) => ops.scale(x, -1.5, 0.25), (x) => -1.5 * x + 0.25],
  ["clamp", (x) => ops.clamp(x, -0.4, 0.6), (x) => Math.min(0.6, Math.max(-0.4, x))],
  [
    "sqrt",
    ops.sqrt,
    Math.sqrt,
    (_, n) => Float64Array.from({ length: n }, (_, j) => 0.2 + (j * 0.37) % 2),
  ],
];

for (const [name, gpuFn, f, init] of CASES) {
  for (const shape of [[5], [3, 7, 11], [1000]]) {
    Deno.test(`${name} [${shape}] forward and gradient`, async () => {
      await checkOp({
        shapes: [shape],
        gpu: ([x]) => gpuFn(x),
        ref: ([x]) => x.map(f),
        init: init ??
          ((_, n) => Float64Array.from({ length: n }, (_, j) => 3 * Math.sin(j * 1.7 + 0.3))),
        tol: 2e-6,
        // clamp's kinks: finite differences near the bounds would straddle them.
        gradTol: name === "clamp" ? 1e-2 : 1e-3,
      });
    });
  }
  Deno.test(`${name} f16 storage`, NEEDS_F16, async () => {
    await checkOp({
      shapes: [[64]],
      gpu: ([x]) => gpuFn(x),
      ref: ([x]) => x.map(f),
      init: init ?? ((_, n) => Float64Array.from({ length: n }, (_, j) => Math.sin(j))),
      tol: 3e-3,
      gradTol: 0,
      dtype: "f16",
    });
  });
}
