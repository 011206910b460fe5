/**
 * UNet benchmarks: forward and forward+backward (reflow loss) of a UNet2DConditionModel, in ms, with
 * the peak GPU memory of each. The small config is the SD-1.x-shaped test UNet (3 levels, cross
 * attention, 2.2 M parameters) at 32x32 latents; `SD1_UNET` is Stable Diffusion 1.5's UNet (for
 * real GPUs; `deno task bench --sd` runs the whole SD benchmark).
 */
import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { tidy } from "../tensor/scope.ts";
import { backward, noGrad } from "../tensor/autograd.ts";
import { UNet2DConditionModel } from "../models/unet2d_condition.ts";
import { fill } from "../kernels/fill.ts";
import { mse } from "../kernels/mse.ts";
import { randomNormal } from "../kernels/random.ts";
import { SD15_UNET } from "./sd_configs.ts";

export const SMALL_UNET = {
  sample_size: 32,
  block_out_channels: [32, 64, 64],
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  layers_per_block: 2,
  attention_head_dim: 8,
  cross_attention_dim: 32,
};

/** Stable Diffusion 1.5's UNet (the SD benchmark's config, sd_configs.ts). */
export const SD1_UNET = SD15_UNET;

export interface UNetBenchResult {
  name: string;
  config: string;
  batch: number;
  latent: number;
  dtype: string;
  forward_ms: number;
  forward_peak_mb: number;
  train_step_ms: number | null;
  train_peak_mb: number | null;
  params: number;
}

export interface UNetBenchOptions {
  config?: Record<string, unknown>;
  name?: string;
  batch?: number;
  latent?: number;
  contextLen?: number;
  dtype?: "f32" | "f16";
  train?: boolean;
  checkpointing?: boolean;
  reps?: number;
}

/** Times forward and (for f32) a full reflow training step's forward+backward. */
export async function benchUNet(gpu: Gpu, o: UNetBenchOptions = {}): Promise<UNetBenchResult> {
  const cfg: Record<string, unknown> = o.config ?? SMALL_UNET;
  const B = o.batch ?? 2, S = o.latent ?? 32, L = o.contextLen ?? 77;
  const cross = cfg.cross_attention_dim as number;
  const C = (cfg.in_channels as number | undefined) ?? 4;
  const unet = UNet2DConditionModel.create(gpu, cfg, 1);
  const dtype = o.dtype ?? "f32";
  if (dtype === "f16") unet.requiresGrad(false).toDtype("f16");
  unet.checkpointing.on = o.checkpointing ?? false;
  const x = randomNormal(gpu, [B, C, S, S], { seed: 1 });
  const ctx = randomNormal(gpu, [B, L, cross], { seed: 2 });
  const target = randomNormal(gpu, [B, C, S, S], { seed: 3 });
  const t = Tensor.from(gpu, Array.from({ length: B }, (_, i) => 999 - 300 * i), [B]);
  const reps = o.reps ?? 2;
  const time = async (fn: () => void): Promise<{ ms: number; peak: number }> => {
    fn(); // warm-up: compiles pipelines
    await gpu.sync();
    gpu.pool.resetPeak();
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) fn();
    await gpu.sync();
    return { ms: (performance.now() - t0) / reps, peak: gpu.pool.peakBytes / 2 ** 20 };
  };
  const fwd = await time(() => tidy(() => noGrad(() => unet.forward(x, t, ctx))).dispose());
  let train: { ms: number; peak: number } | null = null;
  if ((o.train ?? true) && dtype === "f32") {
    const params = unet.parameters();
    train = await time(() => {
      tidy(() => {
        const loss = mse(unet.forward(x, t, ctx), target, { reduction: "mean" });
        const g = Tensor.empty(gpu, loss.shape);
        fill(g, 1);
        backward([loss], [g]);
      });
      for (const p of params) {
        p.grad?.dispose();
        p.grad = null;
      }
    });
  }
  const res: UNetBenchResult = {
    name: o.name ?? "unet_small",
    config: `boc ${JSON.stringify(cfg.block_out_channels)}${unet.checkpointing.on ? " ckpt" : ""}`,
    batch: B,
    latent: S,
    dtype,
    forward_ms: fwd.ms,
    forward_peak_mb: fwd.peak,
    train_step_ms: train?.ms ?? null,
    train_peak_mb: train?.peak ?? null,
    params: unet.numParameters(),
  };
  for (const z of [x, ctx, target, t]) z.dispose();
  unet.dispose();
  return res;
}
