/**
 * The LPIPS reflow losses (`reflow.reflow_loss` = "lpips" | "lpips+l2"), as the original's
 * rectified-flow loss computes them for one-step distillation (t0 schedule only, asserted there):
 *
 *   lpips:     per_b = LPIPS(decode_latents(z0 + v), decode_latents(z1)), normalize=True
 *   lpips+l2:  per_b = LPIPS(...) + mean over (C, H, W) of (v - (z1 - z0))^2
 *   loss      = mean_b(per_b)          (training.reduce_mean = true)
 *             = mean_b(0.5 * per_b)    (reduce_mean = false: the original's 0.5 * sum over the
 *                                       single per-sample value)
 *
 * v is the student's velocity at zt (t = eps), decode_latents = VAE decode(z / scaling_factor),
 * then x / 2 + 0.5 clamped to [0, 1]. The VAE and the VGG are frozen but differentiated through;
 * the target image decode(z1) is computed without a graph. With
 * `diffusers.gradient_checkpointing` the VAE decoder's blocks and the VGG stages/LPIPS layer
 * distances are recomputed during backward rather than kept.
 *
 * Memory: the prediction's decoded images and its VAE-decoder and VGG activations are the terms an
 * LPIPS step adds to an l2 step (the target branch keeps no graph); they grow with the image area,
 * and with checkpointing only each block's/stage's input is kept plus one block's recompute at a
 * time. Measured by `benchLpips()` (bench_lpips.ts) on the tiny model (batch 2, 16x16 images,
 * VGG16 widths, lavapipe): pool peak 21.9 MB with l2, 88.4 MB with lpips and lpips+l2 (58.9 MB of
 * it the VGG16 + heads weights), 87.9 MB with lpips and checkpointing.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { getConfig } from "../../configs/train.ts";
 * import { readNpy } from "../data/npy.ts";
 * import { Gpu } from "../gpu/device.ts";
 * import { loadVae } from "../models/diffusers_folder.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { drawT, parseTSchedule } from "./reflow_loss.ts";
 * import { CounterRng } from "./rng.ts";
 *
 * const gpu = await Gpu.open();
 * const fixtures = "tests/fixtures"; // a tiny VAE, a narrow VGG16 and LPIPS heads, as torch files
 * const config = getConfig();
 * config.reflow.reflow_loss = "lpips";
 * config.reflow.reflow_t_schedule = "t0"; // one-step distillation, as the original asserts
 * config.reflow.lpips_vgg_path = `${fixtures}/lpips/vgg16_narrow.pth`; // vgg16-397923af.pth
 * config.reflow.lpips_heads_path = `${fixtures}/lpips/heads.pth`; // lpips/weights/v0.1/vgg.pth
 * const vae = await loadVae(gpu, `${fixtures}/models/vae_tiny`); // 4x8x8 latents -> 3x16x16
 * const impl = await selectReflowLoss(gpu, config, vae); // l2 or an LPIPS variant
 * // Two pairs and a fixed velocity standing in for the student's, with the loss that the lpips
 * // package computed for them.
 * const npy = async (f: string) => (await readNpy(`${fixtures}/lpips/${f}.npy`)).data;
 * const names = ["vae_z0", "vae_z1", "vae_v", "vae_lpips"];
 * const [z0, z1, v, want] = (await Promise.all(names.map(npy))) as Float32Array[];
 * const context = Tensor.from(gpu, new Float32Array(2 * 8), [2, 1, 8]); // unused by this velocity
 * const batch = { z0, z1, shape: [2, 4, 8, 8] as const, context };
 * const velocity = () => Tensor.from(gpu, v, [2, 4, 8, 8]);
 * const t = drawT(parseTSchedule(config.reflow.reflow_t_schedule), new CounterRng(0), 2);
 * const opts = { loss: "lpips", reduceMean: true, orientation: "original" as const };
 * const [loss] = await impl.loss(gpu, velocity, batch, t, opts).toF32();
 * assert.ok(Math.abs(loss - (want[0] + want[1]) / 2) < 1e-4);
 * impl.dispose();
 * vae.dispose();
 * ```
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { tidy } from "../tensor/scope.ts";
import { noGrad } from "../tensor/autograd.ts";
import * as ops from "../ops.ts";
import type { AutoencoderKL } from "../models/autoencoder_kl.ts";
import { Lpips } from "../models/lpips.ts";
import type { ReflowConfig, TrainConfig } from "../../configs/train.ts";
import {
  interpolate,
  type LossBatch,
  reflowLoss,
  type ReflowLossOptions,
  type VelocityFn,
} from "./reflow_loss.ts";
import { unetTimestep } from "../flow/time.ts";

/** The loss kinds handled here. */
export const LPIPS_LOSSES: readonly string[] = ["lpips", "lpips+l2"];

/** Whether `reflow.reflow_loss` names an LPIPS loss. */
export function isLpipsLoss(loss: string): boolean {
  return LPIPS_LOSSES.includes(loss);
}

/**
 * Checks the settings an LPIPS loss needs (before any model is loaded): the t0 schedule, as the
 * original asserts, and both weight paths. Does nothing for "l2".
 */
export function checkLpipsConfig(reflow: ReflowConfig): void {
  const loss = reflow.reflow_loss;
  if (!isLpipsLoss(loss)) return;
  if (reflow.reflow_t_schedule !== "t0") {
    throw new Error(
      `config.reflow.reflow_loss = "${loss}" needs config.reflow.reflow_t_schedule = "t0" ` +
        `(one-step distillation: the loss compares decode(z0 + v) with decode(z1)), got ` +
        `"${reflow.reflow_t_schedule}"`,
    );
  }
  for (
    const [key, what] of [
      ["lpips_vgg_path", "torchvision's VGG16 weights (vgg16-397923af.pth)"],
      ["lpips_heads_path", "the lpips package's v0.1 heads (lpips/weights/v0.1/vgg.pth)"],
    ] as const
  ) {
    if (!reflow[key]) {
      throw new Error(
        `config.reflow.reflow_loss = "${loss}" needs config.reflow.${key}: the path of ${what}`,
      );
    }
  }
}

/** The frozen networks an LPIPS loss runs through. */
export interface LpipsLossModels {
  vae: AutoencoderKL;
  lpips: Lpips;
}

/**
 * The LPIPS reflow loss of `model` on `batch` (a scalar tensor [1] carrying the graph back to the
 * model's parameters). `opts.loss` is "lpips" or "lpips+l2"; `t` should be the t0 times.
 */
export function lpipsReflowLoss(
  gpu: Gpu,
  nets: LpipsLossModels,
  model: VelocityFn,
  batch: LossBatch,
  t: ArrayLike<number>,
  opts: ReflowLossOptions,
): Tensor {
  if (!isLpipsLoss(opts.loss)) {
    throw new Error(`lpips reflow loss: "${opts.loss}" is not "lpips" or "lpips+l2"`);
  }
  const [B, C, H, W] = batch.shape;
  if (t.length !== B) throw new Error(`reflow loss: ${t.length} times for a batch of ${B}`);
  const { zt, target } = interpolate(batch.z0, batch.z1, t);
  const ts = Float32Array.from(t, (x) => unetTimestep(x, opts.orientation));
  const { vae, lpips } = nets;
  return tidy(() => {
    const shape = [B, C, H, W];
    const v = model(Tensor.from(gpu, zt, shape), Tensor.from(gpu, ts, [B]), batch.context);
    const x1 = noGrad(() => vae.decodeLatents(Tensor.from(gpu, batch.z1, shape)));
    const x0 = vae.decodeLatents(ops.add(Tensor.from(gpu, batch.z0, shape), v));
    let per = lpips.forward(x0, x1, { normalize: true }); // [B]
    if (opts.loss === "lpips+l2") {
      const l2 = ops.mean(ops.square(ops.sub(v, Tensor.from(gpu, target, shape))), [1, 2, 3]);
      per = ops.add(per, l2);
    }
    return ops.scale(ops.reshape(ops.sum(per), [1]), (opts.reduceMean ? 1 : 0.5) / B);
  });
}

/** Loads the LPIPS networks named by `config.reflow` (after {@link checkLpipsConfig}). */
export async function loadLpips(gpu: Gpu, reflow: ReflowConfig): Promise<Lpips> {
  checkLpipsConfig(reflow);
  const missing = [];
  for (const key of ["lpips_vgg_path", "lpips_heads_path"] as const) {
    try {
      Deno.statSync(reflow[key]);
    } catch {
      missing.push(`config.reflow.${key} = "${reflow[key]}" does not exist`);
    }
  }
  if (missing.length) throw new Error(`LPIPS weights: ${missing.join("; ")}`);
  return await Lpips.fromFiles(gpu, reflow.lpips_vgg_path, reflow.lpips_heads_path);
}

/** A reflow loss function with the signature of {@link reflowLoss}, and what it holds. */
export interface ReflowLossImpl {
  loss: (
    gpu: Gpu,
    model: VelocityFn,
    batch: LossBatch,
    t: ArrayLike<number>,
    opts: ReflowLossOptions,
  ) => Tensor;
  /** The LPIPS networks, when the loss has them. */
  lpips: Lpips | null;
  dispose(): void;
}

/**
 * The loss `config.reflow.reflow_loss` asks for: {@link reflowLoss} for "l2", else the LPIPS loss
 * through `vae` (required; refused with the setting named when absent) with the LPIPS weights
 * loaded. Gradient checkpointing of the VAE decoder and the VGG follows
 * `config.diffusers.gradient_checkpointing`.
 */
export async function selectReflowLoss(
  gpu: Gpu,
  config: TrainConfig,
  vae: AutoencoderKL | null,
): Promise<ReflowLossImpl> {
  const kind = config.reflow.reflow_loss;
  if (!isLpipsLoss(kind)) return { loss: reflowLoss, lpips: null, dispose() {} };
  checkLpipsConfig(config.reflow);
  if (!vae) {
    throw new Error(
      `config.reflow.reflow_loss = "${kind}" decodes latents with the VAE, but no VAE was loaded ` +
        `(config.diffusers.vae)`,
    );
  }
  if (vae.config.out_channels !== 3) {
    throw new Error(
      `config.reflow.reflow_loss = "${kind}": the VAE gives ${vae.config.out_channels}-channel ` +
        `images, LPIPS compares RGB`,
    );
  }
  const lpips = await loadLpips(gpu, config.reflow);
  const ck = config.diffusers.gradient_checkpointing;
  vae.checkpointing.on = ck;
  lpips.checkpointing.on = ck;
  const nets = { vae, lpips };
  return {
    loss: (g, model, batch, t, opts) => lpipsReflowLoss(g, nets, model, batch, t, opts),
    lpips,
    dispose: () => lpips.dispose(),
  };
}
