import assert from "node:assert/strict";
import { checkOp, lacks, NEEDS_F16, PATHS_HERE, testGpu } from "../helpers/gpu.ts";
import { linear, matmul } from "../../core/kernels/matmul.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { refMatmul } from "./_reference.ts";

const shape2 = (ta: boolean, r: number, c: number) => (ta ? [c, r] : [r, c]);

const cases: { a: number[]; b: number[]; ta?: boolean; tb?: boolean; bias?: boolean }[] = [
  { a: [1, 1], b: [1, 1] },
  { a: [37, 19], b: [19, 53] },
  { a: [37, 20], b: [20, 52], bias: true }, // vec4 path
  { a: [3, 9, 8], b: [3, 8, 12] },
  { a: [3, 9, 7], b: [7, 11], bias: true }, // shared 2-D right operand
  { a: [2, 3, 5, 4], b: [3, 4, 6] }, // broadcast batch
  { a: shape2(true, 13, 7), b: [7, 9], ta: true },
  { a: [13, 7], b: shape2(true, 7, 9), tb: true },
  { a: [2, 7, 13], b: [2, 9, 7], ta: true, tb: true },
  { a: [2, 5, 8], b: [12, 8], tb: true, bias: true },
  { a: [2, 6, 64], b: [2, 64, 64], bias: true }, // texture path: rows copied, not packed
  { a: [3, 4, 64], b: [64, 8], ta: false }, // texture path: A copied, B packed
];

for (const path of ["storage", "texture"] as const) {
  for (const c of cases) {
    const name = `matmul (${path}) a [${c.a}]${c.ta ? "^T" : ""} b [${c.b}]${c.tb ? "^T" : ""}${
      c.bias ? " +bias" : ""
    }`;
    const n = c.tb ? c.b[c.b.length - 2] : c.b[c.b.length - 1];
    Deno.test(name, { ignore: lacks({ path }) }, async () => {
      await checkOp({
        shapes: c.bias ? [c.a, c.b, [n]] : [c.a, c.b],
        gpu: ([a, b, bias]) => matmul(a, b, { transA: c.ta, transB: c.tb, bias, path }),
        ref: ([a, b, bias]) => refMatmul(a, c.a, b, c.b, !!c.ta, !!c.tb, bias),
        tol: 1e-5,
        gradTol: 2e-3,
      });
    });
  }
}

Deno.test("matmul scalar path matches on a vec4-capable shape", async () => {
  await checkOp({
    shapes: [[9, 8], [8, 12]],
    gpu: ([a, b]) => matmul(a, b, { vec4: false }),
    ref: ([a, b]) => refMatmul(a, [9, 8], b, [8, 12], false, false),
    gradTol: 0,
  });
});

Deno.test("matmul f16 storage, f32 accumulation", NEEDS_F16, async () => {
  for (const [sa, sb] of [[[33, 40], [40, 20]], [[5, 17], [17, 9]]]) {
    for (const path of PATHS_HERE) {
      await checkOp({
        shapes: [sa, sb],
        dtype: "f16",
        gpu: ([a, b]) => matmul(a, b, { path }),
        ref: ([a, b]) => refMatmul(a, sa, b, sb, false, false),
        tol: 3e-3,
        gradTol: 0,
      });
    }
  }
});

Deno.test("linear: PyTorch layout y = x W^T + b", async () => {
  await checkOp({
    shapes: [[2, 3, 10], [6, 10], [6]],
    gpu: ([x, w, b]) => linear(x, w, b),
    ref: ([x, w, b]) => refMatmul(x, [6, 10], w, [6, 10], false, true, b),
    gradTol: 2e-3,
  });
});

Deno.test("matmul and linear shape errors name the op and shapes", async () => {
  const gpu = await testGpu();
  const a = Tensor.from(gpu, new Float32Array(6), [2, 3]);
  const b = Tensor.from(gpu, new Float32Array(8), [4, 2]);
  assert.throws(() => matmul(a, b), /matmul: inner dimensions differ \(3 vs 4\).*\[2,3\].*\[4,2\]/);
  assert.throws(() => linear(a, b), /linear: x \[2,3\] has 3 features but weight \[4,2\]/);
  const c = Tensor.from(gpu, new Float32Array(24), [4, 3, 2]);
  const d = Tensor.from(gpu, new Float32Array(12), [3, 2, 2]);
  assert.throws(() => matmul(c, d), /matmul: batch dimensions do not broadcast/);
  for (const t of [a, b, c, d]) t.dispose();
});
