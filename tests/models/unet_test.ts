/**
 * UNet2DConditionModel against diffusers 0.26.3 (golden case unet_sd1_tiny, copied into
 * tests/fixtures/models/unet_sd1_tiny): the forward output, and the gradients of ten parameters
 * under the reflow loss.
 */
import assert from "node:assert/strict";
import { assertClose, relErr, testGpu } from "../helpers/gpu.ts";
import { UNet2DConditionModel } from "../../core/models/unet2d_condition.ts";
import { loadModuleFile } from "../../core/models/load.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { backward, noGrad } from "../../core/tensor/autograd.ts";
import { tidy } from "../../core/tensor/scope.ts";
import * as ops from "../../core/ops.ts";
import { mse } from "../../core/kernels/mse.ts";
import { fixtureJson, fixturePath, npyF32, npyI32 } from "./_fixtures.ts";

const DIR = "unet_sd1_tiny";

/** The ten parameters whose gradients the golden case holds (files grad__<key>.npy). */
const GRAD_KEYS = [
  "conv_in.weight",
  "conv_out.weight",
  "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
  "down_blocks.0.resnets.0.conv1.weight",
  "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k.weight",
  "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_v.weight",
  "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0.weight",
  "time_embedding.linear_1.weight",
  "up_blocks.1.attentions.0.proj_in.weight",
  "up_blocks.2.resnets.2.norm1.weight",
];

async function loadUNet(): Promise<UNet2DConditionModel> {
  const gpu = await testGpu();
  const unet = UNet2DConditionModel.create(gpu, await fixtureJson(`${DIR}/config.json`));
  const report = await loadModuleFile(
    unet,
    fixturePath(`${DIR}/diffusion_pytorch_model.safetensors`),
  );
  assert.deepEqual(report.missing, []);
  assert.deepEqual(report.unexpected, []);
  assert.equal(unet.numParameters(), 2164452, "parameter count of the golden case");
  return unet;
}

Deno.test("unet: forward matches diffusers (rel L2 <= 1e-4)", async () => {
  const gpu = await testGpu();
  const unet = await loadUNet();
  unet.requiresGrad(false);
  const sample = await npyF32(`${DIR}/sample.npy`);
  const ts = await npyI32(`${DIR}/timesteps.npy`);
  const ctx = await npyF32(`${DIR}/encoder_hidden_states.npy`);
  const want = await npyF32(`${DIR}/out.npy`);
  const x = Tensor.from(gpu, sample.data, sample.shape);
  const t = Tensor.from(gpu, Float32Array.from(ts.data), ts.shape);
  const c = Tensor.from(gpu, ctx.data, ctx.shape);
  const out = noGrad(() => unet.forward(x, t, c));
  assert.deepEqual([...out.shape], want.shape);
  assertClose(await out.toF32(), want.data, 1e-4, "unet forward");
  for (const v of [x, t, c, out]) v.dispose();
  unet.dispose();
});

Deno.test("unet: reflow loss and parameter gradients match diffusers (rel L2 <= 1e-3)", async () => {
  const gpu = await testGpu();
  const unet = await loadUNet();
  const z0 = await npyF32(`${DIR}/z0.npy`);
  const z1 = await npyF32(`${DIR}/z1.npy`);
  const tt = await npyF32(`${DIR}/t.npy`);
  const ctx = await npyF32(`${DIR}/encoder_hidden_states.npy`);
  const wantLoss = (await npyF32(`${DIR}/loss.npy`)).data[0];
  const [B] = z0.shape;
  const per = z0.data.length / B;
  // zt = t z1 + (1 - t) z0, target z1 - z0 (host, float32 as torch computes them); timestep floor(999 t).
  const zt = new Float32Array(z0.data.length);
  const target = new Float32Array(z0.data.length);
  for (let i = 0; i < zt.length; i++) {
    const t = tt.data[Math.floor(i / per)];
    zt[i] = Math.fround(Math.fround(t * z1.data[i]) + Math.fround((1 - t) * z0.data[i]));
    target[i] = Math.fround(z1.data[i] - z0.data[i]);
  }
  const steps = Float32Array.from(tt.data, (t) => Math.floor(999 * t));
  const x = Tensor.from(gpu, zt, z0.shape);
  const ts = Tensor.from(gpu, steps, [B]);
  const c = Tensor.from(gpu, ctx.data, ctx.shape);
  const y = Tensor.from(gpu, target, z0.shape);
  // Mean over each sample's elements, then over the batch.
  const loss = tidy(() =>
    ops.mean(mse(unet.forward(x, ts, c), y, { reduction: "per_sample_mean" }))
  );
  const got = (await loss.toF32())[0];
  assert.ok(
    Math.abs(got - wantLoss) <= 1e-4 * Math.abs(wantLoss),
    `loss ${got} vs diffusers ${wantLoss}`,
  );
  const one = Tensor.from(gpu, [1], loss.shape);
  backward([loss], [one]);
  const params = new Map(unet.namedParameters());
  const errors: string[] = [];
  for (const key of GRAD_KEYS) {
    const p = params.get(key);
    assert.ok(p, `no parameter ${key}`);
    assert.ok(p.grad, `${key} has no gradient`);
    const want = await npyF32(`${DIR}/grad__${key}.npy`);
    assert.deepEqual([...p.grad.shape], want.shape, key);
    const e = relErr(await p.grad.toF32(), want.data);
    if (!(e <= 1e-3)) errors.push(`${key}: rel L2 ${e.toExponential(3)}`);
  }
  assert.deepEqual(errors, [], "gradients beyond 1e-3");
  for (const v of [x, ts, c, y, loss, one]) v.dispose();
  unet.dispose();
});
