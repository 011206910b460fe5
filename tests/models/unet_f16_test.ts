/**
 * The UNet with f16 storage (toDtype("f16"), f32 accumulation) against diffusers' float32 output:
 * the error f16 rounding of weights and activations allows, not more.
 */
import assert from "node:assert/strict";
import { NEEDS_F16, relErr, testGpu } from "../helpers/gpu.ts";
import { UNet2DConditionModel } from "../../core/models/unet2d_condition.ts";
import { loadModuleFile } from "../../core/models/load.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { noGrad } from "../../core/tensor/autograd.ts";
import { fixtureJson, fixturePath, npyF32, npyI32 } from "./_fixtures.ts";

const DIR = "unet_sd1_tiny";

Deno.test(
  "unet: f16 storage forward stays within f16 precision of diffusers",
  NEEDS_F16,
  async () => {
    const gpu = await testGpu();
    const unet = UNet2DConditionModel.create(gpu, await fixtureJson(`${DIR}/config.json`));
    await loadModuleFile(unet, fixturePath(`${DIR}/diffusion_pytorch_model.safetensors`));
    unet.requiresGrad(false).toDtype("f16");
    assert.equal(unet.dtype, "f16");
    assert.ok(unet.parameters().every((p) => p.dtype === "f16"));
    const sample = await npyF32(`${DIR}/sample.npy`);
    const ts = await npyI32(`${DIR}/timesteps.npy`);
    const ctx = await npyF32(`${DIR}/encoder_hidden_states.npy`);
    const want = await npyF32(`${DIR}/out.npy`);
    const out = noGrad(() =>
      unet.forward(
        Tensor.from(gpu, sample.data, sample.shape),
        Tensor.from(gpu, Float32Array.from(ts.data), ts.shape),
        Tensor.from(gpu, ctx.data, ctx.shape),
      )
    );
    assert.equal(out.dtype, "f32");
    const e = relErr(await out.toF32(), want.data);
    console.log(`f16 UNet relative L2 error ${e.toExponential(2)}`);
    assert.ok(e < 1e-2, `f16 forward error ${e}`);
    assert.ok(e > 1e-6, "f16 storage should differ from f32 (the cast must have happened)");
    out.dispose();
    unet.dispose();
  },
);
