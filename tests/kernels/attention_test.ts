import assert from "node:assert/strict";
import { assertClose, CAPS, checkOp, lacks, NEEDS_TEXTURE, rand, testGpu } from "../helpers/gpu.ts";
import { attention } from "../../core/kernels/attention.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { tidy } from "../../core/tensor/scope.ts";
import { backward } from "../../core/tensor/autograd.ts";
import { type AttentionCase as Case, refAttention } from "./_reference.ts";

const shapes = (
  c: Case,
) => [[c.b, c.lq, c.h * c.d], [c.b, c.lk, c.h * c.d], [c.b, c.lk, c.h * c.d]];

const cases: Case[] = [
  { b: 1, lq: 5, lk: 7, h: 1, d: 8 },
  { b: 2, lq: 37, lk: 77, h: 3, d: 40 },
  { b: 1, lq: 9, lk: 1, h: 2, d: 16 },
  { b: 2, lq: 1, lk: 6, h: 2, d: 4 }, // one query row: dk/dv walk a single query tile
  { b: 2, lq: 70, lk: 70, h: 2, d: 10 }, // D not a multiple of 4, L past one 64-row workgroup
  { b: 1, lq: 3, lk: 33, h: 1, d: 160 },
  { b: 1, lq: 6, lk: 5, h: 2, d: 8, scale: 0.9 },
];

const PATHS = ["texture", "storage"] as const;

for (const path of PATHS) {
  for (const c of cases) {
    Deno.test(`attention ${path} ${JSON.stringify(c)}`, { ignore: lacks({ path }) }, async () => {
      await checkOp({
        shapes: shapes(c),
        gpu: ([q, k, v]) => attention(q, k, v, { heads: c.h, scale: c.scale, path }),
        ref: ([q, k, v]) => refAttention(q, k, v, c),
        tol: 2e-5,
        gradTol: 3e-3,
      });
    });
  }
}

for (const path of PATHS) {
  Deno.test(`attention ${path} with large logits (online softmax rescaling)`, {
    ignore: lacks({ path }),
  }, async () => {
    const c: Case = { b: 1, lq: 20, lk: 50, h: 2, d: 12 };
    await checkOp({
      shapes: shapes(c),
      init: (i, n) => rand(n, 100 + i, -3, 3),
      gpu: ([q, k, v]) => attention(q, k, v, { heads: c.h, path }),
      ref: ([q, k, v]) => refAttention(q, k, v, c),
      tol: 2e-5,
      gradTol: 5e-3,
    });
  });

  Deno.test(`attention ${path} f16`, { ignore: lacks({ path, dtype: "f16" }) }, async () => {
    for (const c of [{ b: 2, lq: 37, lk: 77, h: 3, d: 40 }, { b: 1, lq: 11, lk: 13, h: 2, d: 6 }]) {
      await checkOp({
        shapes: shapes(c),
        dtype: "f16",
        gpu: ([q, k, v]) => attention(q, k, v, { heads: c.h, path }),
        ref: ([q, k, v]) => refAttention(q, k, v, c),
        tol: 3e-3,
        gradTol: 3e-2,
      });
    }
  });
}

Deno.test(
  "attention texture path: the UNet's small head dims, several row blocks",
  NEEDS_TEXTURE,
  async () => {
    // D = 4 and 8 take the deepest unroll (8 keys per step); Lq spans several 256-row workgroups and
    // Lk is not a multiple of the unroll depth.
    for (
      const c of [{ b: 2, lq: 300, lk: 77, h: 2, d: 4 }, { b: 1, lq: 260, lk: 261, h: 1, d: 8 }]
    ) {
      await checkOp({
        shapes: shapes(c),
        gpu: ([q, k, v]) => attention(q, k, v, { heads: c.h, path: "texture" }),
        ref: ([q, k, v]) => refAttention(q, k, v, c),
        tol: 2e-5,
        gradTol: 3e-3,
      });
    }
  },
);

Deno.test(
  "attention texture and storage paths agree, and share the saved lse",
  NEEDS_TEXTURE,
  async () => {
    const gpu = await testGpu();
    const c: Case = { b: 2, lq: 45, lk: 29, h: 2, d: 6 };
    const [q, k, v] = shapes(c).map((s, i) => {
      const t = Tensor.from(gpu, Float32Array.from(rand(s[0] * s[1] * s[2], 40 + i)), s);
      t.requiresGrad = true;
      return t;
    });
    const g = Tensor.from(gpu, Float32Array.from(rand(q.size, 49)), q.shape);
    const results: Float32Array[][] = [];
    for (const path of PATHS) {
      const out = attention(q, k, v, { heads: c.h, path });
      backward([out], [g]);
      results.push([
        await out.toF32(),
        ...await Promise.all([q, k, v].map((t) => t.grad!.toF32())),
      ]);
      out.dispose();
      for (const t of [q, k, v]) {
        t.grad!.dispose();
        t.grad = null;
      }
    }
    results[0].forEach((a, i) => assertClose(a, results[1][i], 1e-5, `output/grad ${i}`));
    for (const t of [q, k, v, g]) t.dispose();
  },
);

Deno.test("attention 1024 x 1024 never allocates the score matrix", async () => {
  const gpu = await testGpu();
  const c: Case = { b: 1, lq: 1024, lk: 1024, h: 1, d: 64 };
  const [qh, kh, vh] = shapes(c).map((s, i) => rand(s[0] * s[1] * s[2], 500 + i));
  const [q, k, v] = [qh, kh, vh].map((x, i) => {
    const t = Tensor.from(gpu, Float32Array.from(x), shapes(c)[i]);
    t.requiresGrad = true;
    return t;
  });
  gpu.pool.resetPeak();
  const before = gpu.pool.liveBytes;
  const t0 = performance.now();
  const out = tidy(() => attention(q, k, v, { heads: 1 }));
  const got = await out.toF32();
  const ms = performance.now() - t0;
  const scores = c.lq * c.lk * 4;
  const grew = gpu.pool.peakBytes - before;
  assert.ok(grew < scores / 4, `forward grew the pool by ${grew} bytes (scores: ${scores})`);
  const rows = [0, 1, 63, 64, 511, 1000, 1023];
  const want = refAttention(qh, kh, vh, c, rows);
  const pick = (a: ArrayLike<number>) =>
    rows.flatMap((r) => Array.from({ length: 64 }, (_, e) => a[r * 64 + e]));
  assertClose(pick(got), pick(want), 2e-5, "sampled rows");
  // Backward too stays O(L * D): dq, dk, dv and two per-row vectors.
  gpu.pool.resetPeak();
  const before2 = gpu.pool.liveBytes;
  const g = Tensor.from(gpu, Float32Array.from(rand(out.size, 9)), out.shape);
  backward([out], [g]);
  await q.grad!.toF32();
  const grew2 = gpu.pool.peakBytes - before2;
  assert.ok(grew2 < scores / 2, `backward grew the pool by ${grew2} bytes (scores: ${scores})`);
  console.log(`attention 1024x1024x64 forward+read ${ms.toFixed(1)} ms`);
  for (const t of [q, k, v]) {
    t.grad?.dispose();
    t.dispose();
  }
  g.dispose();
  out.dispose();
});

Deno.test("attention gradients of k and v only (q frozen)", async () => {
  const c: Case = { b: 1, lq: 4, lk: 9, h: 2, d: 8 };
  await checkOp({
    shapes: shapes(c),
    gradInputs: [1, 2],
    gpu: ([q, k, v]) => {
      q.requiresGrad = false;
      return attention(q, k, v, { heads: c.h });
    },
    ref: ([q, k, v]) => refAttention(q, k, v, c),
    tol: 2e-5,
    gradTol: 3e-3,
  });
});

Deno.test("attention errors name the op and shapes", async () => {
  const gpu = await testGpu();
  const q = Tensor.empty(gpu, [2, 5, 12]);
  const k = Tensor.empty(gpu, [2, 7, 12]);
  const v = Tensor.empty(gpu, [2, 6, 12]);
  assert.throws(
    () => attention(q, k, v, { heads: 3 }),
    /attention: shapes do not match \(q \[2,5,12\], k \[2,7,12\], v \[2,6,12\]/,
  );
  assert.throws(() => attention(q, k, k, { heads: 5 }), /attention: last axis 12 .* 5 heads/);
  for (const t of [q, k, v]) t.dispose();
  // More (batch, head) layers than a texture array holds: "texture" throws, the default falls back.
  const h = gpu.limits.maxTextureArrayLayers + 1;
  const x = Tensor.from(gpu, Float32Array.from(rand(2 * h, 7)), [1, 2, h]);
  assert.throws(
    () => attention(x, x, x, { heads: h, path: "texture" }),
    CAPS.texture
      ? /attention: texture path does not fit .*q \[1,2,\d+\]/
      : /attention: the texture path was asked for, but this adapter cannot use texture operands/,
  );
  const fallback = tidy(() => attention(x, x, x, { heads: h }));
  const got = await fallback.toF32();
  fallback.dispose();
  assertClose(
    got,
    refAttention(rand(2 * h, 7), rand(2 * h, 7), rand(2 * h, 7), {
      b: 1,
      lq: 2,
      lk: 2,
      h,
      d: 1,
    }),
    2e-5,
    "storage fallback",
  );
  x.dispose();
});
