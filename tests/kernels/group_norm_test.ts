import assert from "node:assert/strict";
import { assertClose, checkOp, NEEDS_F16, rand, testGpu } from "../helpers/gpu.ts";
import { backward } from "../../core/tensor/autograd.ts";
import { tidy } from "../../core/tensor/scope.ts";
import { FUSED_MAX, groupNorm } from "../../core/kernels/group_norm.ts";
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

Deno.test("group_norm f16 (+silu)", NEEDS_F16, async () => {
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

// Both kernel families (one segment of threads per group below FUSED_MAX elements per group, per-row
// partial statistics above), with odd sizes: idle threads in a segment (channels per group not a
// power of two), a partial last register, several groups per workgroup with a partial last
// workgroup, one thread per channel row up to 64, segments of 64 threads (two-level reductions),
// spatial size 1 and 7, one channel per group, and rows longer than the register path.
const layoutCases: [string, number[], number][] = [
  ["fused, 3 channels per group, 12 groups", [3, 12, 5, 5], 4],
  ["fused, 4 threads per channel, partial last register", [2, 4, 10, 13], 2],
  ["fused, 16 channels x 128 = FUSED_MAX", [1, 32, 8, 16], 2],
  ["fused, 64 channels per group", [1, 64, 4, 8], 1],
  ["fused, spatial 1", [5, 6], 3],
  ["fused, spatial 7, one channel per group", [3, 4, 7], 4],
  ["split, registers with a partial last one", [1, 4, 3000], 2],
  ["split, rows longer than the registers", [1, 2, 4100], 1],
  ["split, 160 channels per group of spatial 16", [2, 160, 16], 1],
];

for (const [what, shape, groups] of layoutCases) {
  const c = shape[1];
  Deno.test(`group_norm ${what} [${shape}] G=${groups} +silu`, async () => {
    const size = shape.reduce((a, b) => a * b, 1);
    const L = (c / groups) * (size / (shape[0] * c));
    assert.equal(what.startsWith("fused"), L <= FUSED_MAX, "case sits on the intended side");
    await checkOp({
      shapes: [shape, [c], [c]],
      seed: 11 + shape.length + c,
      gpu: ([x, w, b]) => groupNorm(x, groups, w, b, 1e-5, { silu: true }),
      ref: ([x, w, b]) => refGroupNorm(x, shape, groups, w, b, 1e-5, true),
      tol: 2e-5,
      gradTol: 3e-3,
    });
  });
}

for (
  const [what, shape, groups] of [["fused", [4, 16, 6, 6], 4], [
    "split",
    [1, 8, 40, 40],
    2,
  ]] as const
) {
  Deno.test(`group_norm ${what}: offset 100 + noise keeps full precision`, async () => {
    const c = shape[1];
    // Noise of scale 1 on an offset of 100: E[x^2] - E[x]^2 would lose ~4 digits in f32.
    await checkOp({
      shapes: [[...shape], [c], [c]],
      init: (i, n) => {
        const r = rand(n, 101 + i);
        return i === 0 ? r.map((v) => 100 + v) : r;
      },
      gpu: ([x, w, b]) => groupNorm(x, groups, w, b, 1e-6),
      ref: ([x, w, b]) => refGroupNorm(x, [...shape], groups, w, b, 1e-6),
      tol: 2e-5,
      gradTol: 0,
    });
  });
}

for (
  const [what, shape, groups] of [["fused", [2, 6, 5, 5], 3], ["split", [2, 4, 1200], 2]] as const
) {
  for (
    const [name, hw, hb] of [["weight only", true, false], ["bias only", false, true]] as const
  ) {
    Deno.test(`group_norm ${what}, ${name} (+silu)`, async () => {
      const c = shape[1];
      await checkOp({
        shapes: [[...shape], [c]],
        gpu: ([x, p]) => groupNorm(x, groups, hw ? p : null, hb ? p : null, 1e-5, { silu: true }),
        ref: ([x, p]) =>
          refGroupNorm(x, [...shape], groups, hw ? p : null, hb ? p : null, 1e-5, true),
        tol: 2e-5,
        gradTol: 3e-3,
      });
    });
  }
}

for (
  const [what, shape, groups] of [["fused", [3, 8, 6, 6], 4], ["split", [2, 4, 1500], 2]] as const
) {
  Deno.test(`group_norm ${what}: weight/bias gradients without the input's`, async () => {
    const gpu = await testGpu();
    const c = shape[1];
    const n = shape.reduce((a, b) => a * b, 1);
    const gy = Tensor.from(gpu, rand(n, 5), [...shape]);
    const grads = async (xGrad: boolean) => {
      const x = Tensor.from(gpu, rand(n, 3), [...shape]);
      const w = Tensor.from(gpu, rand(c, 4), [c]);
      const b = Tensor.from(gpu, rand(c, 6), [c]);
      x.requiresGrad = xGrad;
      w.requiresGrad = true;
      b.requiresGrad = true;
      const y = tidy(() => groupNorm(x, groups, w, b, 1e-5, { silu: true }));
      backward([y], [gy]);
      const out = [await w.grad!.toF32(), await b.grad!.toF32()];
      assert.equal(x.grad === null, !xGrad);
      for (const t of [x, w, b]) {
        t.grad?.dispose();
        t.dispose();
      }
      y.dispose();
      return out;
    };
    const [dw1, db1] = await grads(true);
    const [dw0, db0] = await grads(false);
    assertClose(dw0, dw1, 1e-6, "dweight");
    assertClose(db0, db1, 1e-6, "dbias");
    gy.dispose();
  });
}

Deno.test("group_norm f16 on the split path (+silu)", NEEDS_F16, async () => {
  await checkOp({
    shapes: [[1, 4, 40, 40], [4], [4]],
    dtype: "f16",
    gpu: ([x, w, b]) => groupNorm(x, 2, w, b, 1e-5, { silu: true }),
    ref: ([x, w, b]) => refGroupNorm(x, [1, 4, 40, 40], 2, w, b, 1e-5, true),
    tol: 3e-3,
    gradTol: 3e-2,
  });
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
