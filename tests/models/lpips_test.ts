/**
 * LPIPS (VGG16 trunk + v0.1 heads) against a plain-torch re-implementation of the lpips package
 * (tests/fixtures/lpips, made by make_lpips_ref.py): per-sample and per-layer distances, the input
 * gradient, and LPIPS through the tiny VAE decoder with its gradient; weights from torch `.pth`
 * files (restricted unpickler) and from safetensors; checkpointing gives the same gradients.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { assertClose, testGpu } from "../helpers/gpu.ts";
import { readNpy } from "../../core/data/npy.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { backward } from "../../core/tensor/autograd.ts";
import { tidy } from "../../core/tensor/scope.ts";
import * as ops from "../../core/ops.ts";
import { Lpips } from "../../core/models/lpips.ts";
import { Vgg16Features } from "../../core/models/vgg16.ts";
import { AutoencoderKL } from "../../core/models/autoencoder_kl.ts";
import { loadModuleFile, saveModule } from "../../core/models/load.ts";
import type { Gpu } from "../../core/gpu/device.ts";

export function lpipsFixture(name: string): string {
  return fileURLToPath(new URL(`../fixtures/lpips/${name}`, import.meta.url));
}
function modelFixture(name: string): string {
  return fileURLToPath(new URL(`../fixtures/models/${name}`, import.meta.url));
}
async function npy(name: string): Promise<{ shape: number[]; data: Float32Array }> {
  const a = await readNpy(lpipsFixture(`${name}.npy`));
  return { shape: a.shape, data: Float32Array.from(a.data as Float32Array) };
}
export function loadFixtureLpips(gpu: Gpu): Promise<Lpips> {
  return Lpips.fromFiles(gpu, lpipsFixture("vgg16_narrow.pth"), lpipsFixture("heads.pth"));
}
async function tensor(gpu: Gpu, name: string, grad = false): Promise<Tensor> {
  const a = await npy(name);
  const t = Tensor.from(gpu, a.data, a.shape);
  t.requiresGrad = grad;
  return t;
}

Deno.test("lpips: torch .pth weights load (widths from the file, classifier ignored)", async () => {
  const gpu = await testGpu();
  const lp = await loadFixtureLpips(gpu);
  assert.deepEqual([...lp.vgg.widths], [6, 8, 12, 16, 16]);
  const names = lp.vgg.namedParameters().map(([n]) => n);
  assert.equal(names.length, 26);
  assert.equal(names[0], "features.0.weight");
  assert.ok(names.includes("features.28.bias"));
  assert.deepEqual(lp.heads.namedParameters().map(([n]) => n), [
    "lin0.model.1.weight",
    "lin1.model.1.weight",
    "lin2.model.1.weight",
    "lin3.model.1.weight",
    "lin4.model.1.weight",
  ]);
  assert.ok(lp.vgg.parameters().every((p) => !p.requiresGrad));
  lp.dispose();
});

for (const ck of [false, true]) {
  Deno.test(`lpips: distances and input gradient match the reference (checkpointing ${ck})`, async () => {
    const gpu = await testGpu();
    const lp = await loadFixtureLpips(gpu);
    lp.checkpointing.on = ck;
    const in0 = await tensor(gpu, "in0", true);
    const in1 = await tensor(gpu, "in1");
    const layers = tidy(() => lp.forwardLayers(in0, in1, { normalize: true }));
    const want = await npy("layers");
    for (let k = 0; k < 5; k++) {
      const got = await layers[k].toF32();
      assertClose(got, want.data.slice(2 * k, 2 * k + 2), 1e-4, `layer ${k}`);
    }
    for (const t of layers) t.dispose();
    const out = lp.forward(in0, in1, { normalize: true });
    assert.deepEqual([...out.shape], [2]);
    assertClose(await out.toF32(), (await npy("out")).data, 1e-4, "lpips");
    const R = await tensor(gpu, "grad_R");
    backward([out], [R]);
    assertClose(await in0.grad!.toF32(), (await npy("grad_in0")).data, 1e-3, "d lpips / d in0");
    for (const t of [in0.grad!, in0, in1, out, R]) t.dispose();
    lp.dispose();
  });
}

Deno.test("lpips through the tiny VAE decoder: value and gradient match torch", async () => {
  const gpu = await testGpu();
  const lp = await loadFixtureLpips(gpu);
  const vae = AutoencoderKL.create(
    gpu,
    JSON.parse(await Deno.readTextFile(modelFixture("vae_tiny/config.json"))),
  );
  await loadModuleFile(vae, modelFixture("vae_tiny/diffusion_pytorch_model.safetensors"));
  vae.requiresGrad(false);
  for (const ck of [false, true]) {
    lp.checkpointing.on = ck;
    vae.checkpointing.on = ck;
    const z0 = await tensor(gpu, "vae_z0");
    const z1 = await tensor(gpu, "vae_z1");
    const v = await tensor(gpu, "vae_v", true);
    const d = tidy(() => {
      const x0 = vae.decodeLatents(ops.add(z0, v));
      const x1 = vae.decodeLatents(z1);
      return lp.forward(x0, x1, { normalize: true });
    });
    assertClose(await d.toF32(), (await npy("vae_lpips")).data, 1e-4, `vae lpips (ck ${ck})`);
    const one = Tensor.from(gpu, [1, 1], [2]);
    backward([d], [one]);
    assertClose(await v.grad!.toF32(), (await npy("vae_grad_v")).data, 1e-3, `d / dv (ck ${ck})`);
    for (const t of [v.grad!, v, z0, z1, d, one]) t.dispose();
  }
  vae.dispose();
  lp.dispose();
});

Deno.test("lpips: safetensors weights give the same distances", async () => {
  const gpu = await testGpu();
  const lp = await loadFixtureLpips(gpu);
  const tmp = await Deno.makeTempDir({ prefix: "lpips_st_" });
  try {
    await saveModule(lp.vgg, join(tmp, "vgg.safetensors"));
    await saveModule(lp.heads, join(tmp, "heads.safetensors"));
    const lp2 = await Lpips.fromFiles(
      gpu,
      join(tmp, "vgg.safetensors"),
      join(tmp, "heads.safetensors"),
    );
    const in0 = await tensor(gpu, "in0");
    const in1 = await tensor(gpu, "in1");
    const a = lp.forward(in0, in1, { normalize: true });
    const b = lp2.forward(in0, in1, { normalize: true });
    assertClose(await b.toF32(), await a.toF32(), 1e-7, "safetensors vs pth");
    for (const t of [in0, in1, a, b]) t.dispose();
    lp2.dispose();
  } finally {
    lp.dispose();
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("lpips: clear errors for wrong files and inputs", async () => {
  const gpu = await testGpu();
  // The heads file is not a VGG file.
  await assert.rejects(
    () => Vgg16Features.fromFile(gpu, lpipsFixture("heads.pth")),
    /no "features.0.weight"; expected torchvision's vgg16 state dict/,
  );
  // Swapped paths: the VGG file has no heads.
  await assert.rejects(
    () => Lpips.fromFiles(gpu, lpipsFixture("vgg16_narrow.pth"), lpipsFixture("vgg16_narrow.pth")),
    /missing from the file: lin0.model.1.weight/,
  );
  const lp = await loadFixtureLpips(gpu);
  const small = Tensor.from(gpu, new Float32Array(2 * 3 * 8 * 8), [2, 3, 8, 8]);
  const other = Tensor.from(gpu, new Float32Array(2 * 3 * 16 * 8), [2, 3, 16, 8]);
  assert.throws(() => lp.forward(small, small), /vgg16: images of 8x8 are too small/);
  assert.throws(() => lp.forward(small, other), /lpips: inputs \[2,3,8,8\] and \[2,3,16,8\]/);
  small.dispose();
  other.dispose();
  lp.dispose();
});
