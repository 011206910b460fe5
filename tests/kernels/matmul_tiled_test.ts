/**
 * The workgroup-memory tiled GEMM (core/kernels/matmul_tiled.ts), forced with `path: "tiled"` so it
 * runs on lavapipe too: forward against a float64 reference and gradients against finite
 * differences, over edge shapes (not multiples of the tile or of 4), transposes, bias, broadcast
 * batches, f16 storage and a second tile shape.
 */
import assert from "node:assert/strict";
import { checkOp, lacks, testGpu } from "../helpers/gpu.ts";
import { matmul } from "../../core/kernels/matmul.ts";
import { checkTile, type TiledTile } from "../../core/kernels/matmul_tiled.ts";
import { refMatmul } from "./_reference.ts";

const SMALL: TiledTile = { bm: 32, bn: 32, bk: 8, tm: 4, tn: 8 };

const cases: {
  a: number[];
  b: number[];
  ta?: boolean;
  tb?: boolean;
  bias?: boolean;
  dtype?: "f32" | "f16";
  tile?: TiledTile;
}[] = [
  { a: [1, 1], b: [1, 1] },
  { a: [37, 19], b: [19, 53] }, // scalar loads, partial tiles everywhere
  { a: [70, 36], b: [36, 68], bias: true }, // vec4 A along k and B along n, two row blocks
  { a: [13, 40], b: [24, 40], tb: true, bias: true }, // linear layout: B^T read as vec4 along k
  { a: [2, 9, 7], b: [2, 11, 7], tb: true }, // B^T with K % 4 != 0: scalar loads along k
  { a: [40, 9], b: [40, 12], ta: true }, // A^T (row-contiguous scalar loads)
  { a: [2, 7, 13], b: [2, 9, 7], ta: true, tb: true },
  { a: [2, 3, 5, 8], b: [3, 8, 12] }, // broadcast batch
  { a: [3, 20, 100], b: [100, 20] }, // several K tiles (2-D right operand folded into M)
  { a: [33, 20], b: [20, 44], bias: true, tile: SMALL }, // another tile shape
  { a: [2, 17, 24], b: [2, 24, 20], dtype: "f16" },
  { a: [19, 32], b: [28, 32], tb: true, bias: true, dtype: "f16" },
];

for (const c of cases) {
  const dtype = c.dtype ?? "f32";
  const name = `matmul (tiled${c.tile ? " small tile" : ""}, ${dtype}) a [${c.a}]${
    c.ta ? "^T" : ""
  } b [${c.b}]${c.tb ? "^T" : ""}${c.bias ? " +bias" : ""}`;
  const n = c.tb ? c.b.at(-2)! : c.b.at(-1)!;
  Deno.test(name, { ignore: lacks({ dtype }) }, async () => {
    await checkOp({
      shapes: c.bias ? [c.a, c.b, [n]] : [c.a, c.b],
      gpu: ([a, b, bias]) =>
        matmul(a, b, {
          transA: c.ta,
          transB: c.tb,
          bias,
          path: "tiled",
          tiledTile: c.tile,
        }),
      ref: ([a, b, bias]) => refMatmul(a, c.a, b, c.b, !!c.ta, !!c.tb, bias),
      // f16 storage rounds inputs and outputs to 11 bits; accumulation is f32 either way.
      tol: dtype === "f16" ? 2e-3 : 1e-5,
      gradTol: dtype === "f16" ? 0 : 1e-3,
      dtype,
    });
  });
}

Deno.test("tiled GEMM: a tile that does not fit the device is refused by name", async () => {
  const gpu = await testGpu();
  assert.throws(
    () => checkTile({ bm: 256, bn: 256, bk: 64, tm: 4, tn: 4 }, gpu.limits),
    /invocations per workgroup|workgroup memory/,
  );
  assert.throws(() => checkTile({ bm: 64, bn: 64, bk: 6, tm: 4, tn: 4 }, gpu.limits), /malformed/);
});
