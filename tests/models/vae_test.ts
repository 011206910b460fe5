/**
 * AutoencoderKL against a PyTorch re-implementation with diffusers' names
 * (tests/fixtures/models/vae_tiny, made by make_model_refs.py): encode mean/logvar, decode, and the
 * gradient of sum(decode(z) * R) with respect to z.
 */
import assert from "node:assert/strict";
import { assertClose, testGpu } from "../helpers/gpu.ts";
import { AutoencoderKL } from "../../core/models/autoencoder_kl.ts";
import { loadModuleFile } from "../../core/models/load.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { backward } from "../../core/tensor/autograd.ts";
import { fixtureJson, fixturePath, npyF32 } from "./_fixtures.ts";

const DIR = "vae_tiny";

async function loadVae(): Promise<AutoencoderKL> {
  const gpu = await testGpu();
  const vae = AutoencoderKL.create(gpu, await fixtureJson(`${DIR}/config.json`));
  const report = await loadModuleFile(
    vae,
    fixturePath(`${DIR}/diffusion_pytorch_model.safetensors`),
  );
  assert.deepEqual(report.missing, []);
  assert.deepEqual(report.unexpected, []);
  assert.equal(report.loaded, vae.namedParameters().length);
  return vae;
}

Deno.test("vae: encode mean and logvar match the reference (rel L2 <= 1e-4)", async () => {
  const gpu = await testGpu();
  const vae = await loadVae();
  vae.requiresGrad(false);
  const image = await npyF32(`${DIR}/image.npy`);
  const x = Tensor.from(gpu, image.data, image.shape);
  const { mean, logvar } = vae.encode(x);
  const wantMean = await npyF32(`${DIR}/encode_mean.npy`);
  const wantLogvar = await npyF32(`${DIR}/encode_logvar.npy`);
  assert.deepEqual([...mean.shape], wantMean.shape);
  assert.deepEqual([...logvar.shape], wantLogvar.shape);
  assertClose(await mean.toF32(), wantMean.data, 1e-4, "encode mean");
  assertClose(await logvar.toF32(), wantLogvar.data, 1e-4, "encode logvar");
  for (const t of [x, mean, logvar]) t.dispose();
  vae.dispose();
});

Deno.test("vae: decode matches the reference (rel L2 <= 1e-4)", async () => {
  const gpu = await testGpu();
  const vae = await loadVae();
  vae.requiresGrad(false);
  const z = await npyF32(`${DIR}/z.npy`);
  const zt = Tensor.from(gpu, z.data, z.shape);
  const out = vae.decode(zt);
  const want = await npyF32(`${DIR}/decode_out.npy`);
  assert.deepEqual([...out.shape], want.shape);
  assertClose(await out.toF32(), want.data, 1e-4, "decode");
  zt.dispose();
  out.dispose();
  vae.dispose();
});

Deno.test("vae: gradient through the decoder matches the reference (rel L2 <= 1e-3)", async () => {
  const gpu = await testGpu();
  const vae = await loadVae();
  // Only the latent's gradient is checked; the frozen weights take none.
  vae.requiresGrad(false);
  const z = await npyF32(`${DIR}/z.npy`);
  const R = await npyF32(`${DIR}/grad_R.npy`);
  const zt = Tensor.from(gpu, z.data, z.shape);
  zt.requiresGrad = true;
  const out = vae.decode(zt);
  assert.deepEqual([...out.shape], R.shape);
  const g = Tensor.from(gpu, R.data, R.shape);
  backward([out], [g]);
  assert.ok(zt.grad, "z has no gradient");
  const want = await npyF32(`${DIR}/grad_z.npy`);
  assertClose(await zt.grad.toF32(), want.data, 1e-3, "d sum(decode(z) R) / dz");
  zt.grad.dispose();
  for (const t of [zt, out, g]) t.dispose();
  vae.dispose();
});
