/**
 * Adapter capabilities: the probes, the routing of each kernel family to a path the adapter has,
 * and clear errors where a caller insists on a missing path. A second device opened with the
 * texture paths switched off stands in for a downlevel adapter (wgpu's GL backend), so this runs
 * on any adapter; tests/gpu/downlevel_test.ts runs the kernel tests on the real GL adapter.
 */
import assert from "node:assert/strict";
import { assertClose, rand, testGpu } from "../helpers/gpu.ts";
import { Gpu, GpuError } from "../../core/gpu/device.ts";
import { overridesFromEnv } from "../../core/gpu/capabilities.ts";
import { parseRequired } from "../../core/gpu/adapter_check.ts";
import { UNet2DConditionModel } from "../../core/models/unet2d_condition.ts";
import { loadModuleFile } from "../../core/models/load.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { noGrad } from "../../core/tensor/autograd.ts";
import { planSum } from "../../core/kernels/reduce.ts";
import * as ops from "../../core/ops.ts";
import { fixtureJson, fixturePath, npyF32, npyI32 } from "../models/_fixtures.ts";

Deno.test("caps: the shared adapter's probes agree with its features", async () => {
  const gpu = await testGpu();
  assert.equal(gpu.caps.compute, true);
  assert.equal(gpu.hasF16, gpu.caps.f16);
  if (!gpu.adapter.features.has("shader-f16")) assert.equal(gpu.caps.f16, false);
  // Every path that is off says why.
  assert.equal(
    gpu.caps.missing.length,
    [gpu.caps.textureOperands, gpu.caps.f16].filter((x) => !x)
      .length,
  );
  const d = gpu.describe();
  assert.match(gpu.summary(), new RegExp(`^${d.description.replace(/[()]/g, "\\$&")} \\(`));
  console.log(`adapter: ${gpu.summary()}`);
});

Deno.test("caps: REFLOW_GPU_PATHS and --require words are parsed strictly", () => {
  assert.deepEqual(overridesFromEnv(undefined), {});
  assert.deepEqual(overridesFromEnv("no-texture, no-f16"), { textureOperands: false, f16: false });
  assert.throws(
    () => overridesFromEnv("no-textures"),
    /REFLOW_GPU_PATHS: unknown word 'no-textures'/,
  );
  assert.deepEqual(parseRequired("texture,f16"), ["texture", "f16"]);
  assert.deepEqual(parseRequired(""), []);
  assert.throws(() => parseRequired("texture,subgroups"), /--require: unknown path 'subgroups'/);
});

/** A device without texture operands, with every texture creation and copy counted. */
async function storageOnlyGpu(): Promise<{ gpu: Gpu; textures: () => number }> {
  const gpu = await Gpu.open({ paths: { textureOperands: false } });
  let n = 0;
  const create = gpu.device.createTexture.bind(gpu.device);
  gpu.device.createTexture = (d: GPUTextureDescriptor) => {
    n++;
    return create(d);
  };
  const copy = gpu.copyToTexture.bind(gpu);
  gpu.copyToTexture = (...a: Parameters<Gpu["copyToTexture"]>) => {
    n++;
    copy(...a);
  };
  return { gpu, textures: () => n };
}

Deno.test("caps: without texture operands every kernel family takes its storage path", async () => {
  const { gpu, textures } = await storageOnlyGpu();
  try {
    assert.equal(gpu.caps.textureOperands, false);
    // "switched off", or on a downlevel adapter the probe's own finding.
    assert.match(gpu.caps.missing.join(";"), /texture operands: /);
    assert.match(gpu.summary(), /storage-only/);
    // Sum plans read the storage buffer even where a texel layout would allow textures.
    for (const tuning of ["cpu", "gpu"] as const) {
      for (const s of planSum(gpu, [16, 32, 8, 8], [0, 2, 3], "f32", 1, { tuning })) {
        assert.equal(s.mode, "s");
      }
    }
    // Sizes that take the texture paths on a capable adapter, default options.
    const a = Tensor.from(gpu, Float32Array.from(rand(64 * 96, 1)), [64, 96]);
    const b = Tensor.from(gpu, Float32Array.from(rand(96 * 80, 2)), [96, 80]);
    const av = await a.toF32(), bv = await b.toF32();
    const mm = ops.matmul(a, b);
    const want = new Float64Array(64 * 80);
    for (let i = 0; i < 64; i++) {
      for (let k = 0; k < 96; k++) {
        for (let j = 0; j < 80; j++) want[i * 80 + j] += av[i * 96 + k] * bv[k * 80 + j];
      }
    }
    assertClose(await mm.toF32(), want, 1e-5, "matmul on the storage path");
    const q = Tensor.from(gpu, Float32Array.from(rand(2 * 40 * 16, 3)), [2, 40, 16]);
    const att = ops.attention(q, q, q, { heads: 2 });
    assert.ok((await att.toF32()).every(Number.isFinite));
    const x = Tensor.from(gpu, Float32Array.from(rand(2 * 8 * 12 * 12, 4)), [2, 8, 12, 12]);
    const w = Tensor.from(gpu, Float32Array.from(rand(16 * 8 * 9, 5)), [16, 8, 3, 3]);
    const y = ops.conv2d(x, w, undefined, { padding: 1 });
    const s = ops.sum(y, [0, 2, 3]);
    assert.deepEqual(s.shape, [16]);
    await gpu.sync();
    assert.equal(textures(), 0, "no texture was made or copied into");
    // Asking for the texture path by name is an error naming the op and what is missing.
    assert.throws(
      () => ops.matmul(a, b, { path: "texture" }),
      (e: Error) =>
        e instanceof GpuError && /^matmul: the texture path was asked for/.test(e.message) &&
        /texture operands: /.test(e.message),
    );
    assert.throws(
      () => ops.conv2d(x, w, undefined, { path: "texture" }),
      /conv2d: the texture path was asked for/,
    );
    assert.throws(
      () => ops.attention(q, q, q, { heads: 2, path: "texture" }),
      /attention: the texture path/,
    );
    assert.throws(() => ops.sum(y, [0], false, { path: "texture" }), /sum: the texture path/);
  } finally {
    gpu.destroy();
  }
});

Deno.test("caps: the golden UNet on the storage-only paths still matches diffusers", async () => {
  const { gpu, textures } = await storageOnlyGpu();
  try {
    const dir = "unet_sd1_tiny";
    const unet = UNet2DConditionModel.create(gpu, await fixtureJson(`${dir}/config.json`));
    await loadModuleFile(unet, fixturePath(`${dir}/diffusion_pytorch_model.safetensors`));
    unet.requiresGrad(false);
    const sample = await npyF32(`${dir}/sample.npy`);
    const ts = await npyI32(`${dir}/timesteps.npy`);
    const ctx = await npyF32(`${dir}/encoder_hidden_states.npy`);
    const want = await npyF32(`${dir}/out.npy`);
    const out = noGrad(() =>
      unet.forward(
        Tensor.from(gpu, sample.data, sample.shape),
        Tensor.from(gpu, Float32Array.from(ts.data), ts.shape),
        Tensor.from(gpu, ctx.data, ctx.shape),
      )
    );
    assertClose(await out.toF32(), want.data, 1e-4, "unet forward, storage paths");
    assert.equal(textures(), 0);
  } finally {
    gpu.destroy();
  }
});
