/**
 * Dispatch overhead of a UNet forward, pinned: the tiny benchmark UNet's forward must record
 * exactly the dispatches and submits below, on the GPU-shaped tiled kernels (forced here, as on a
 * hardware adapter) and on lavapipe's texture-operand path. A change that adds kernels launches to
 * the forward fails here; one that removes some updates the numbers (and says why in its commit).
 * A repeated forward must reuse every bind group of the previous one and give the same output.
 */
import assert from "node:assert/strict";
import { CAPS, testGpu } from "../helpers/gpu.ts";
import { Gpu } from "../../core/gpu/device.ts";
import { UNet2DConditionModel } from "../../core/models/unet2d_condition.ts";
import { TINY_BENCH_UNET } from "../../core/bench/tiny_setup.ts";
import { randomNormal } from "../../core/kernels/random.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { tidy } from "../../core/tensor/scope.ts";
import { noGrad } from "../../core/tensor/autograd.ts";

/**
 * Per forward of TINY_BENCH_UNET (2 levels, 1 layer per block, 4 transformer blocks). Tiled: 54
 * GEMMs, 29 convolutions, 8 attentions, 21 group norms, 12 layer norms, 32 adds, 12 copies (skip
 * concatenations, token -> image permutes), 4 GEGLUs, 2 SiLUs, the timestep embedding and one
 * upsampling. The texture path adds the operand packing of its GEMMs and convolutions.
 */
const EXPECTED = { tiled: 176, texture: 308, submits: 1 };

async function countForward(gpu: Gpu): Promise<{
  dispatches: number;
  submits: number;
  created: number;
  out: Float32Array;
  again: Float32Array;
}> {
  const unet = UNet2DConditionModel.create(gpu, TINY_BENCH_UNET, 1);
  const x = randomNormal(gpu, [2, 4, 8, 8], { seed: 1 });
  const ctx = randomNormal(gpu, [2, 8, 32], { seed: 2 });
  const t = Tensor.from(gpu, [999, 400], [2]);
  const forward = () => tidy(() => noGrad(() => unet.forward(x, t, ctx)));
  try {
    forward().dispose(); // compiles pipelines, fills the pools
    forward().dispose();
    await gpu.sync();
    const d0 = gpu.dispatchCount, s0 = gpu.submitCount;
    const y = forward();
    gpu.flush();
    const dispatches = gpu.dispatchCount - d0, submits = gpu.submitCount - s0;
    const out = await y.toF32();
    y.dispose();
    // The read-back above submitted too: steady state again, then no bind group may be new.
    forward().dispose();
    await gpu.sync();
    const b0 = gpu.bindGroupsCreated;
    const y2 = forward();
    const created = gpu.bindGroupsCreated - b0;
    const again = await y2.toF32();
    y2.dispose();
    return { dispatches, submits, created, out, again };
  } finally {
    for (const z of [x, ctx, t]) z.dispose();
    unet.dispose();
  }
}

Deno.test("dispatch count: tiny UNet forward on the tiled (GPU-shaped) kernels", async () => {
  const gpu = await Gpu.open({ paths: { tiledKernels: true } });
  try {
    const r = await countForward(gpu);
    assert.equal(r.dispatches, EXPECTED.tiled, "dispatches per forward (tiled kernels)");
    assert.equal(r.submits, EXPECTED.submits, "submits per forward");
    assert.equal(r.created, 0, "a repeated forward reuses every bind group");
    assert.deepEqual(r.again, r.out, "a repeated forward gives the same output");
    assert.ok(r.out.every(Number.isFinite));
  } finally {
    await gpu.close();
  }
});

/** The texture path is the default only on adapters with texture operands and no tiled kernels. */
const TEXTURE_DEFAULT = CAPS.texture && !(await testGpu()).caps.tiledKernels;

Deno.test(
  "dispatch count: tiny UNet forward on lavapipe's texture path",
  { ignore: !TEXTURE_DEFAULT },
  async () => {
    const gpu = await testGpu();
    const r = await countForward(gpu);
    assert.equal(r.dispatches, EXPECTED.texture, "dispatches per forward (texture path)");
    assert.equal(r.submits, EXPECTED.submits, "submits per forward");
    assert.equal(r.created, 0, "a repeated forward reuses every bind group");
    assert.deepEqual(r.again, r.out, "a repeated forward gives the same output");
  },
);
