import assert from "node:assert/strict";
import { checkOp, testGpu } from "../helpers/gpu.ts";
import { groupNorm } from "../../core/kernels/group_norm.ts";
import { Tensor } from "../../core/tensor/tensor.ts";

/** float64 GroupNorm (biased variance per (n, group)), optionally followed by SiLU. */
function refGroupNorm(
  x: Float64Array,
  shape: number[],
  groups: number,
  w: Float64Array | null,
  b: Float64Array | null,
  eps: number,
  silu = false,
): Float64Array {
  const [n, c] = shape;
  const s = x.length / (n * c);
  const cg = c / groups;
  const out = new Float64Array(x.length);
  for (let i = 0; i < n; i++) {
    for (let g = 0; g < groups; g++) {
      const base = (i * c + g * cg) * s, m = cg * s;
      let mean = 0;
      for (let j = 0; j < m; j++) mean += x[base + j];
      mean /= m;
      let v = 0;
      for (let j = 0; j < m; j++) v += (x[base + j] - mean) ** 2;
      const rs = 1 / Math.sqrt(v / m + eps);
      for (let j = 0; j < m; j++) {
        const ch = g * cg + Math.floor(j / s);
        let y = (x[base + j] - mean) * rs * (w ? w[ch] : 1) + (b ? b[ch] : 0);
        if (silu) y = y / (1 + Math.exp(-y));
        out[base + j] = y;
      }
    }
  }
  return out;
}

const cases: [number[], number][] = [
  [[2, 4, 3, 5], 2],
  [[1, 6, 7], 3],
  [[2, 8, 9, 9], 4],
  [[3, 5], 5],
  [[1, 20, 4, 4], 2],
  [[2, 6, 1, 1], 1],
];

for (const [shape, groups] of cases) {
  const c = shape[1];
  for (const silu of [false, true]) {
    Deno.test(`group_norm [${shape}] G=${groups}${silu ? " +silu" : ""}`, async () => {
      await checkOp({
        shapes: [shape, [c], [c]],
        gpu: ([x, w, b]) => groupNorm(x, groups, w, b, 1e-5, { silu }),
        ref: ([x, w, b]) => refGroupNorm(x, shape, groups, w, b, 1e-5, silu),
        tol: 2e-5,
        gradTol: 3e-3,
      });
    });
  }
}

Deno.test("group_norm without affine", async () => {
  await checkOp({
    shapes: [[2, 6, 5, 3]],
    gpu: ([x]) => groupNorm(x, 3, null, null, 1e-6),
    ref: ([x]) => refGroupNorm(x, [2, 6, 5, 3], 3, null, null, 1e-6),
    tol: 2e-5,
    gradTol: 3e-3,
  });
});

Deno.test("group_norm large group with an offset mean (UNet-like, 10 x 32 x 32)", async () => {
  const shape = [1, 20, 32, 32];
  await checkOp({
    shapes: [shape, [20], [20]],
    init: (i, n) =>
      Float64Array.from({ length: n }, (_, j) => (i === 0 ? 50 : 0) + Math.sin(j * 0.37 + i * 2)),
    gpu: ([x, w, b]) => groupNorm(x, 2, w, b, 1e-6, { silu: true }),
    ref: ([x, w, b]) => refGroupNorm(x, shape, 2, w, b, 1e-6, true),
    tol: 1e-4,
    gradTol: 0,
  });
});

Deno.test("group_norm f16 (+silu)", async () => {
  const gpu = await testGpu();
  if (!gpu.hasF16) return;
  for (const silu of [false, true]) {
    await checkOp({
      shapes: [[2, 8, 6, 6], [8], [8]],
      dtype: "f16",
      gpu: ([x, w, b]) => groupNorm(x, 4, w, b, 1e-5, { silu }),
      ref: ([x, w, b]) => refGroupNorm(x, [2, 8, 6, 6], 4, w, b, 1e-5, silu),
      tol: 3e-3,
      gradTol: 3e-2,
    });
  }
});

Deno.test("group_norm errors name the op and shapes", async () => {
  const gpu = await testGpu();
  const x = Tensor.empty(gpu, [2, 6, 4]);
  const w = Tensor.empty(gpu, [5]);
  assert.throws(() => groupNorm(x, 4), /group_norm: channels 6 .* 4 groups \(x \[2,6,4\]/);
  assert.throws(() => groupNorm(x, 3, w), /group_norm: .*\[6\].*weight \[5\]/);
  x.dispose();
  w.dispose();
});
