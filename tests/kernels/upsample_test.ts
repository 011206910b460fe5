import assert from "node:assert/strict";
import { checkOp, lacks, testGpu } from "../helpers/gpu.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import {
  interpolateNearest,
  nearestIndex,
  upsampleNearest2x,
} from "../../core/kernels/upsample.ts";

function ref(x: Float64Array, shape: number[], oh: number, ow: number): Float64Array {
  const [N, C, H, W] = shape;
  const out = new Float64Array(N * C * oh * ow);
  for (let p = 0; p < N * C; p++) {
    for (let y = 0; y < oh; y++) {
      for (let xx = 0; xx < ow; xx++) {
        const sy = nearestIndex(y, H, oh), sx = nearestIndex(xx, W, ow);
        out[(p * oh + y) * ow + xx] = x[(p * H + sy) * W + sx];
      }
    }
  }
  return out;
}

Deno.test("nearestIndex follows PyTorch's float32 rule", () => {
  // torch: F.interpolate(torch.arange(5.)[None, None, None], size=(1, 8)) -> 0 0 1 1 2 3 3 4
  assert.deepEqual([...Array(8).keys()].map((d) => nearestIndex(d, 5, 8)), [
    0,
    0,
    1,
    1,
    2,
    3,
    3,
    4,
  ]);
  // Downsampling 7 -> 3: floor(d * 7/3) = 0 2 4.
  assert.deepEqual([0, 1, 2].map((d) => nearestIndex(d, 7, 3)), [0, 2, 4]);
});

for (const dtype of ["f32", "f16"] as const) {
  for (const shape of [[1, 1, 1, 1], [2, 3, 5, 7], [1, 4, 16, 9]]) {
    Deno.test(`upsampleNearest2x [${shape}] ${dtype}`, { ignore: lacks({ dtype }) }, async () => {
      await checkOp({
        shapes: [shape],
        gpu: ([x]) => upsampleNearest2x(x),
        ref: ([x]) => ref(x, shape, 2 * shape[2], 2 * shape[3]),
        dtype,
        tol: dtype === "f16" ? 2e-3 : 1e-7,
        gradTol: dtype === "f16" ? 3e-3 : 1e-4,
      });
    });
  }
  for (
    const [shape, oh, ow] of [
      [[1, 2, 5, 7], 8, 13],
      [[2, 1, 7, 6], 3, 4],
      [[1, 3, 4, 4], 4, 4],
      [[1, 2, 5, 3], 17, 11],
      [[1, 1, 9, 10], 20, 21],
    ] as [number[], number, number][]
  ) {
    Deno.test(
      `interpolateNearest [${shape}] -> ${oh}x${ow} ${dtype}`,
      { ignore: lacks({ dtype }) },
      async () => {
        await checkOp({
          shapes: [shape],
          gpu: ([x]) => interpolateNearest(x, oh, ow),
          ref: ([x]) => ref(x, shape, oh, ow),
          dtype,
          tol: dtype === "f16" ? 2e-3 : 1e-7,
          gradTol: dtype === "f16" ? 3e-3 : 1e-4,
        });
      },
    );
  }
}

Deno.test("upsample: errors name the op", async () => {
  const gpu = await testGpu();
  const x = Tensor.from(gpu, [1, 2, 3, 4], [2, 2]);
  assert.throws(
    () => upsampleNearest2x(x),
    /upsample_nearest2x: expects \[N, C, H, W\], got \[2,2\]/,
  );
  const y = x.alias([1, 1, 2, 2]);
  assert.throws(() => interpolateNearest(y, 0, 3), /interpolate_nearest: invalid output size/);
  x.dispose();
  y.dispose();
  assert.throws(() => upsampleNearest2x(y), /used after release/);
});
