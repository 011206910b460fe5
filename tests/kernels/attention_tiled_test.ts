/**
 * The workgroup-memory tiled flash-attention forward (core/kernels/attention_tiled.ts), forced with
 * `path: "tiled"`: outputs against a float64 softmax(q k^T * scale) v, gradients (the storage
 * backward kernels fed by the tiled forward's log-sum-exp) against central differences, over
 * partial query blocks and key tiles, head dims not a multiple of 4 or of the 32-dim chunk, cross
 * attention with 77-token keys, f16 storage, and the VAE's single 512-dim head (the default path
 * for head dims past the one-thread-per-row kernels' 256).
 */
import assert from "node:assert/strict";
import { assertClose, checkOp, lacks, rand, testGpu } from "../helpers/gpu.ts";
import { attention } from "../../core/kernels/attention.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { tidy } from "../../core/tensor/scope.ts";
import { noGrad } from "../../core/tensor/autograd.ts";
import { type AttentionCase, refAttention } from "./_reference.ts";

interface Case extends AttentionCase {
  dtype?: "f32" | "f16";
  grad?: boolean;
}

const cases: Case[] = [
  { b: 1, lq: 1, lk: 1, h: 1, d: 4, grad: true },
  { b: 2, lq: 45, lk: 45, h: 2, d: 8, grad: true }, // partial query block and key tile
  { b: 1, lq: 33, lk: 77, h: 3, d: 6, grad: true }, // cross attention, D % 4 != 0
  { b: 1, lq: 70, lk: 40, h: 1, d: 40, scale: 0.3, grad: true }, // SD's 40-dim heads: 2 chunks
  { b: 2, lq: 36, lk: 20, h: 2, d: 16, dtype: "f16" },
];

for (const c of cases) {
  const dtype = c.dtype ?? "f32";
  const hd = c.h * c.d;
  Deno.test(
    `attention (tiled, ${dtype}) B${c.b} Lq${c.lq} Lk${c.lk} H${c.h} D${c.d}`,
    { ignore: lacks({ dtype }) },
    async () => {
      await checkOp({
        shapes: [[c.b, c.lq, hd], [c.b, c.lk, hd], [c.b, c.lk, hd]],
        gpu: ([q, k, v]) => attention(q, k, v, { heads: c.h, scale: c.scale, path: "tiled" }),
        ref: ([q, k, v]) => refAttention(q, k, v, c),
        tol: dtype === "f16" ? 3e-3 : 2e-5,
        gradTol: c.grad ? 2e-3 : 0,
        seed: c.lq + c.d,
        dtype,
      });
    },
  );
}

Deno.test("attention: a 512-dim head (the VAE's) takes the tiled forward by default", async () => {
  const gpu = await testGpu();
  const c: Case = { b: 1, lq: 40, lk: 40, h: 1, d: 512 };
  const n = c.lq * c.d;
  const [q, k, v] = [1, 2, 3].map((s) => rand(n, s));
  const ts = [q, k, v].map((x) => Tensor.from(gpu, Float32Array.from(x), [1, c.lq, c.d]));
  const out = noGrad(() => tidy(() => attention(ts[0], ts[1], ts[2], { heads: 1 })));
  assertClose(await out.toF32(), refAttention(q, k, v, c), 2e-5, "512-dim head");
  // The one-thread-per-row kernels refuse it by name, and so does their backward.
  assert.throws(
    () => attention(ts[0], ts[1], ts[2], { heads: 1, path: "storage" }),
    /head dim 512 exceeds 256 on the storage path/,
  );
  out.dispose();
  ts.forEach((t) => t.dispose());
});
