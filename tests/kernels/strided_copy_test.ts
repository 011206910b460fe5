import assert from "node:assert/strict";
import { checkOp, testGpu } from "../helpers/gpu.ts";
import * as ops from "../../core/ops.ts";
import { Tensor } from "../../core/tensor/tensor.ts";

const strides = (s: number[]) => s.map((_, i) => s.slice(i + 1).reduce((a, b) => a * b, 1));
const unravel = (i: number, s: number[]) => s.map((d, k) => Math.floor(i / strides(s)[k]) % d);
const ravel = (c: number[], s: number[]) => c.reduce((o, v, k) => o + v * strides(s)[k], 0);

function refPermute(x: Float64Array, s: number[], perm: number[]): Float64Array {
  const os = perm.map((p) => s[p]);
  const y = new Float64Array(x.length);
  for (let i = 0; i < y.length; i++) {
    const c = unravel(i, os);
    const src = new Array(s.length);
    perm.forEach((p, k) => (src[p] = c[k]));
    y[i] = x[ravel(src, s)];
  }
  return y;
}

Deno.test("permute and transpose", async () => {
  await checkOp({
    shapes: [[2, 3, 4, 5]],
    gpu: ([x]) => ops.permute(x, [0, 2, 3, 1]),
    ref: ([x]) => refPermute(x, [2, 3, 4, 5], [0, 2, 3, 1]),
    tol: 1e-7, // exact copies of the f32-rounded inputs
  });
  await checkOp({
    shapes: [[3, 7, 9]],
    gpu: ([x]) => ops.transpose(x),
    ref: ([x]) => refPermute(x, [3, 7, 9], [0, 2, 1]),
    tol: 1e-7, // exact copies of the f32-rounded inputs
  });
});

Deno.test("slice, split and concat along inner and outer axes", async () => {
  const s = [2, 5, 3];
  await checkOp({
    shapes: [s],
    gpu: ([x]) => ops.slice(x, 1, 1, 3),
    ref: ([x]) => {
      const out: number[] = [];
      for (let i = 0; i < x.length; i++) {
        const c = unravel(i, s);
        if (c[1] >= 1 && c[1] < 4) out.push(x[i]);
      }
      return Float64Array.from(out);
    },
    tol: 1e-7, // exact copies of the f32-rounded inputs
  });
  await checkOp({
    shapes: [[2, 3, 4], [2, 5, 4]],
    gpu: ([a, b]) => ops.concat([a, b], 1),
    ref: ([a, b]) => {
      const out = new Float64Array(2 * 8 * 4);
      for (let i = 0; i < out.length; i++) {
        const [n, c, w] = unravel(i, [2, 8, 4]);
        out[i] = c < 3 ? a[ravel([n, c, w], [2, 3, 4])] : b[ravel([n, c - 3, w], [2, 5, 4])];
      }
      return out;
    },
    tol: 1e-7, // exact copies of the f32-rounded inputs
  });
  await checkOp({
    shapes: [[6, 2]],
    gpu: ([x]) => {
      const [a, b] = ops.split(x, [2, 4], 0);
      return ops.concat([b, a], 0);
    },
    ref: ([x]) => Float64Array.from([...x.slice(4), ...x.slice(0, 4)]),
    tol: 1e-7, // exact copies of the f32-rounded inputs
  });
});

Deno.test("flip and pad2d", async () => {
  await checkOp({
    shapes: [[2, 3, 5]],
    gpu: ([x]) => ops.flip(x, 2),
    ref: ([x]) =>
      x.map((_, i) => {
        const [a, b, c] = unravel(i, [2, 3, 5]);
        return x[ravel([a, b, 4 - c], [2, 3, 5])];
      }),
    tol: 1e-7, // exact copies of the f32-rounded inputs
  });
  await checkOp({
    shapes: [[1, 2, 3, 3]],
    gpu: ([x]) => ops.pad2d(x, 1, 0, 2, 1),
    ref: ([x]) => {
      const os = [1, 2, 4, 6];
      const y = new Float64Array(48);
      for (let i = 0; i < y.length; i++) {
        const [n, c, h, w] = unravel(i, os);
        const sh = h - 1, sw = w - 2;
        y[i] = sh >= 0 && sh < 3 && sw >= 0 && sw < 3 ? x[ravel([n, c, sh, sw], [1, 2, 3, 3])] : 0;
      }
      return y;
    },
    tol: 1e-7, // exact copies of the f32-rounded inputs
  });
});

Deno.test("copy ops refuse bad arguments by name", async () => {
  const gpu = await testGpu();
  const x = Tensor.from(gpu, new Float32Array(6), [2, 3]);
  assert.throws(() => ops.permute(x, [0, 0]), /permute: \[0,0\] is not a permutation/);
  assert.throws(() => ops.slice(x, 1, 2, 2), /slice: \[2, 4\) out of range/);
  assert.throws(() => ops.split(x, [1, 1], 1), /split: sizes \[1,1\] do not sum to 3/);
  assert.throws(() => ops.reshape(x, [4, 2]), /reshape: cannot view \[2,3\]/);
  const y = Tensor.from(gpu, new Float32Array(4), [2, 2]);
  assert.throws(() => ops.concat([x, y], 0), /concat: shapes/);
  x.dispose();
  y.dispose();
});
