import assert from "node:assert/strict";
import { checkOp, lacks, rand, testGpu } from "../helpers/gpu.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { geglu } from "../../core/kernels/geglu.ts";

/** erf to ~1e-15 (Taylor series near 0, continued fraction of erfc beyond). */
function erf(x: number): number {
  const a = Math.abs(x);
  if (a < 2.5) {
    let term = a, sum = a;
    for (let n = 1; n < 80; n++) {
      term *= (-a * a) / n;
      sum += term / (2 * n + 1);
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc(a) = exp(-a^2)/sqrt(pi) * 1/(a + 1/2/(a + 1/(a + 3/2/(a + ...))))
  let f = a;
  for (let n = 60; n >= 1; n--) f = a + (n / 2) / f;
  return Math.sign(x) * (1 - Math.exp(-a * a) / Math.sqrt(Math.PI) / f);
}
const gelu = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2));

function ref(x: Float64Array, shape: number[]): Float64Array {
  const D = shape[shape.length - 1] / 2;
  const rows = x.length / (2 * D);
  const out = new Float64Array(rows * D);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < D; c++) out[r * D + c] = x[r * 2 * D + c] * gelu(x[r * 2 * D + D + c]);
  }
  return out;
}

Deno.test("reference erf", () => {
  assert.ok(Math.abs(erf(0.5) - 0.5204998778130465) < 1e-14);
  assert.ok(Math.abs(erf(3) - 0.9999779095030014) < 1e-14);
});

for (const dtype of ["f32", "f16"] as const) {
  for (const shape of [[2, 6], [3, 5, 34], [1, 7, 2 * 160], [2]]) {
    Deno.test(`geglu [${shape}] ${dtype}`, { ignore: lacks({ dtype }) }, async () => {
      await checkOp({
        shapes: [shape],
        gpu: ([x]) => geglu(x),
        ref: ([x]) => ref(x, shape),
        // Gates over [-4, 4] reach both erf branches and the tails.
        init: (_, n) => rand(n, 11, -4, 4),
        dtype,
        tol: dtype === "f16" ? 3e-3 : 2e-6,
        gradTol: dtype === "f16" ? 5e-3 : 1e-3,
      });
    });
  }
}

Deno.test("geglu: odd last dimension names the op", async () => {
  const gpu = await testGpu();
  const x = Tensor.from(gpu, [1, 2, 3], [1, 3]);
  assert.throws(() => geglu(x), /geglu: last dimension must be even.*\[1,3\]/);
  x.dispose();
});
