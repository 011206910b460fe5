/**
 * The LPIPS reflow losses: values and gradients against the torch fixture (LPIPS through the tiny
 * VAE, tests/fixtures/lpips), the original's combination and reduction of "lpips+l2", refusals of
 * bad settings, and a short training run with each loss on the tiny model.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { assertClose, testGpu } from "../helpers/gpu.ts";
import { readNpy } from "../../core/data/npy.ts";
import type { Gpu } from "../../core/gpu/device.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { backward } from "../../core/tensor/autograd.ts";
import { AutoencoderKL } from "../../core/models/autoencoder_kl.ts";
import { loadModuleFile } from "../../core/models/load.ts";
import { Lpips } from "../../core/models/lpips.ts";
import { checkLpipsConfig, lpipsReflowLoss } from "../../core/train/lpips_loss.ts";
import { REFLOW_EPS } from "../../core/train/reflow_loss.ts";
import { runTraining } from "../../core/train/trainer.ts";
import type { TrainConfig } from "../../configs/train.ts";
import { makeTinyRoots, tinyConfig, tinyInit, tinyModels } from "./_tiny.ts";

const fixture = (rel: string) => fileURLToPath(new URL(`../fixtures/${rel}`, import.meta.url));

async function npy(name: string): Promise<{ shape: number[]; data: Float32Array }> {
  const a = await readNpy(fixture(`lpips/${name}.npy`));
  return { shape: a.shape, data: Float32Array.from(a.data as Float32Array) };
}

async function tinyVae(gpu: Gpu): Promise<AutoencoderKL> {
  const vae = AutoencoderKL.create(
    gpu,
    JSON.parse(await Deno.readTextFile(fixture("models/vae_tiny/config.json"))),
  );
  await loadModuleFile(vae, fixture("models/vae_tiny/diffusion_pytorch_model.safetensors"));
  vae.requiresGrad(false);
  return vae;
}

function lpipsSettings(c: TrainConfig, loss: "lpips" | "lpips+l2"): TrainConfig {
  c.reflow.reflow_loss = loss;
  c.reflow.reflow_t_schedule = "t0";
  c.reflow.lpips_vgg_path = fixture("lpips/vgg16_narrow.pth");
  c.reflow.lpips_heads_path = fixture("lpips/heads.pth");
  return c;
}

Deno.test("lpips losses: values and gradients match torch; lpips+l2 adds the per-sample mean L2", async () => {
  const gpu = await testGpu();
  const vae = await tinyVae(gpu);
  const lpips = await Lpips.fromFiles(
    gpu,
    fixture("lpips/vgg16_narrow.pth"),
    fixture("lpips/heads.pth"),
  );
  const z0 = await npy("vae_z0"), z1 = await npy("vae_z1"), v = await npy("vae_v");
  const want = (await npy("vae_lpips")).data;
  const wantGrad = (await npy("vae_grad_v")).data;
  const B = 2, n = 4 * 8 * 8;
  const l2 = [0, 1].map((b) => {
    let s = 0;
    for (let j = b * n; j < (b + 1) * n; j++) s += (v.data[j] - (z1.data[j] - z0.data[j])) ** 2;
    return s / n;
  });
  const context = Tensor.from(gpu, new Float32Array(B * 3), [B, 1, 3]);
  for (const loss of ["lpips", "lpips+l2"] as const) {
    for (const reduceMean of [true, false]) {
      // The "student" returns the fixture's velocity as a leaf, so d loss / d v is checked directly.
      const vT = Tensor.from(gpu, v.data, v.shape);
      vT.requiresGrad = true;
      const out = lpipsReflowLoss(
        gpu,
        { vae, lpips },
        () => vT,
        { z0: z0.data, z1: z1.data, shape: [2, 4, 8, 8], context },
        [REFLOW_EPS, REFLOW_EPS],
        { loss, reduceMean, orientation: "original" },
      );
      const c = reduceMean ? 1 : 0.5;
      const per = [0, 1].map((b) => want[b] + (loss === "lpips+l2" ? l2[b] : 0));
      const expect = c * (per[0] + per[1]) / B;
      const got = (await out.toF32())[0];
      assert.ok(
        Math.abs(got - expect) <= 1e-4 * expect,
        `${loss} reduce_mean=${reduceMean}: ${got} vs ${expect}`,
      );
      const one = Tensor.from(gpu, [1], [1]);
      backward([out], [one]);
      const g = await vT.grad!.toF32();
      const gWant = wantGrad.map((x, j) =>
        c / B * (x + (loss === "lpips+l2" ? 2 * (v.data[j] - (z1.data[j] - z0.data[j])) / n : 0))
      );
      assertClose(g, gWant, 1e-3, `${loss} reduce_mean=${reduceMean}: d loss / d v`);
      for (const t of [vT.grad!, vT, out, one]) t.dispose();
    }
  }
  context.dispose();
  lpips.dispose();
  vae.dispose();
});

Deno.test("lpips losses: bad settings are refused with the setting named", async () => {
  const gpu = await testGpu();
  const c = lpipsSettings(tinyConfig("/nonexistent"), "lpips");
  c.reflow.reflow_t_schedule = "uniform";
  assert.throws(() => checkLpipsConfig(c.reflow), /needs config.reflow.reflow_t_schedule = "t0"/);
  c.reflow.reflow_t_schedule = "t0";
  c.reflow.lpips_heads_path = "";
  assert.throws(() => checkLpipsConfig(c.reflow), /needs config.reflow.lpips_heads_path/);
  c.reflow.reflow_loss = "l2";
  checkLpipsConfig(c.reflow); // l2 needs none of it

  const tmp = await Deno.makeTempDir({ prefix: "reflow_lpips_refuse_" });
  try {
    await makeTinyRoots(join(tmp, "data"), 4);
    const base = () => lpipsSettings(tinyConfig(join(tmp, "data")), "lpips+l2");
    const run = async (cfg: TrainConfig, extra = {}) =>
      await runTraining(await tinyInit(gpu, cfg, join(tmp, "run"), extra));
    let cfg = base();
    cfg.reflow.reflow_t_schedule = "4";
    await assert.rejects(run(cfg), /lpips\+l2" needs config.reflow.reflow_t_schedule = "t0"/);
    cfg = base();
    cfg.reflow.lpips_vgg_path = "";
    await assert.rejects(run(cfg), /needs config.reflow.lpips_vgg_path/);
    cfg = base();
    cfg.reflow.lpips_vgg_path = join(tmp, "missing.pth");
    const vae = await tinyVae(gpu);
    await assert.rejects(
      run(cfg, { models: { ...tinyModels(gpu), vae } }),
      /lpips_vgg_path = ".*missing.pth" does not exist/,
    );
    vae.dispose();
    // The tiny models have no VAE.
    await assert.rejects(run(base()), /no VAE was loaded/);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

for (const loss of ["lpips", "lpips+l2"] as const) {
  Deno.test(`a short run with the ${loss} loss on the tiny model: loss falls`, async () => {
    const gpu = await testGpu();
    const tmp = await Deno.makeTempDir({ prefix: "reflow_lpips_run_" });
    const vae = await tinyVae(gpu);
    try {
      await makeTinyRoots(join(tmp, "data"), 8);
      const c = lpipsSettings(tinyConfig(join(tmp, "data")), loss);
      c.diffusers.gradient_checkpointing = loss === "lpips"; // both paths
      c.training.num_steps = 16;
      c.training.log_freq = 1;
      c.training.eval_freq = 8;
      c.training.sampling_freq = 1000;
      c.optim.lr = 3e-3;
      c.optim.warmup = 3;
      const init = await tinyInit(gpu, c, join(tmp, "run"), {
        models: { ...tinyModels(gpu), vae },
      });
      const r = await runTraining(init);
      assert.equal(r.step, 16);
      const losses = [...r.losses.entries()].sort((a, b) => a[0] - b[0]).map(([, x]) => x);
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
      const early = mean(losses.slice(0, 4)), late = mean(losses.slice(-4));
      console.log(
        `${loss} run: loss ${early.toFixed(4)} (steps 1-4) -> ${late.toFixed(4)} (13-16)`,
      );
      assert.ok(losses.every(Number.isFinite));
      assert.ok(late < 0.9 * early, `loss did not fall: ${early} -> ${late}`);
      assert.ok(r.evalLosses.size >= 2 && [...r.evalLosses.values()].every(Number.isFinite));
      const log = await Deno.readTextFile(join(tmp, "run", "exp.log"));
      assert.match(log, new RegExp(`LOSS: ${loss.replace("+", "\\+")}`));
      init.models.unet.dispose();
      init.models.textEncoder.dispose();
    } finally {
      vae.dispose();
      await Deno.remove(tmp, { recursive: true });
    }
  });
}
