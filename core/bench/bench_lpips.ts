/**
 * LPIPS loss benchmark: seconds per training step and peak GPU memory of the trainer on the tiny
 * model (UNet with two levels, 8x8 latents, batch 2; a 2-level VAE decoding to 16x16 images) with
 * `reflow.reflow_loss` = "l2", "lpips", "lpips+l2", and "lpips" with gradient checkpointing of the
 * VAE decoder and VGG. The VGG trunk has VGG16's real widths (64 ... 512) unless `vggWidths` says
 * otherwise; weights are random, written to safetensors and loaded through the settings
 * (`reflow.lpips_vgg_path`, `reflow.lpips_heads_path`) as a run loads them. Timings skip the first
 * `warm` steps (pipeline compilation). Peak memory is the pooled allocator's high-water mark over a
 * run: weights (UNet, text encoder, VAE, VGG: `lpipsWeightBytes` of it), optimizer state and the
 * step's activations.
 *
 * @example
 * ```ts ignore
 * // not a doc test: four training runs, ~40 s on lavapipe even at 2 steps with a narrow VGG
 * const r = await benchLpips({ steps: 6 });
 * for (const c of r.cases) console.log(c.name, c.stepSecs, c.peakGpuBytes);
 * ```
 *
 * @module
 */
import {
  benchConfig,
  charTokenizer,
  TINY_BENCH_CLIP,
  TINY_BENCH_UNET,
  writeTinyPairs,
} from "./tiny_setup.ts";
import type { TrainConfig } from "../../configs/train.ts";
import { join } from "node:path";
import { Gpu } from "../gpu/device.ts";
import { UNet2DConditionModel } from "../models/unet2d_condition.ts";
import { CLIPTextModel } from "../models/text_encoders.ts";
import { AutoencoderKL } from "../models/autoencoder_kl.ts";
import { LpipsHeads } from "../models/lpips.ts";
import { VGG16_WIDTHS, Vgg16Features } from "../models/vgg16.ts";
import { saveModule } from "../models/load.ts";
import { openPairDataset } from "../data/dataset.ts";
import { runTraining } from "../train/trainer.ts";

const VAE = {
  block_out_channels: [16, 32],
  down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D"],
  up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D"],
  latent_channels: 4,
  layers_per_block: 1,
  norm_num_groups: 8,
  sample_size: 16,
};

/** One measured configuration. */
export interface LpipsBenchCase {
  /** "l2", "lpips", "lpips+l2" or "lpips (checkpointing)". */
  name: string;
  /** Mean seconds per optimizer step after the warm-up steps. */
  stepSecs: number;
  /** Peak bytes held by GPU tensors during the run. */
  peakGpuBytes: number;
}

/** Results of {@link benchLpips}. */
export interface LpipsBench {
  device: string;
  vggWidths: number[];
  /** Bytes of the VGG trunk and heads (included in the LPIPS cases' peaks). */
  lpipsWeightBytes: number;
  cases: LpipsBenchCase[];
  /** stepSecs of "lpips" over that of "l2". */
  lpipsOverL2Time: number;
}

/** Measures training steps with l2 and the LPIPS losses on the tiny model. */
export async function benchLpips(
  opts: { steps?: number; warm?: number; vggWidths?: number[]; gpu?: Gpu } = {},
): Promise<LpipsBench> {
  const steps = opts.steps ?? 8;
  const warm = opts.warm ?? 2;
  const widths = opts.vggWidths ?? [...VGG16_WIDTHS];
  const gpu = opts.gpu ?? await Gpu.open();
  const tmp = await Deno.makeTempDir({ prefix: "reflow_bench_lpips_" });
  try {
    const data = join(tmp, "data");
    await writeTinyPairs(join(data, "train"), 8);
    await writeTinyPairs(join(data, "eval"), 4);
    const vgg = new Vgg16Features(gpu, widths, 3);
    const heads = new LpipsHeads(gpu, widths);
    const lpipsWeightBytes = 4 * (vgg.numParameters() + heads.numParameters());
    await saveModule(vgg, join(tmp, "vgg.safetensors"));
    await saveModule(heads, join(tmp, "heads.safetensors"));
    vgg.dispose();
    heads.dispose();

    const cases: LpipsBenchCase[] = [];
    const variants = [
      { name: "l2", loss: "l2", ck: false },
      { name: "lpips", loss: "lpips", ck: false },
      { name: "lpips+l2", loss: "lpips+l2", ck: false },
      { name: "lpips (checkpointing)", loss: "lpips", ck: true },
    ] as const;
    for (const v of variants) {
      const c = benchConfig(data, steps);
      c.diffusers.gradient_checkpointing = v.ck;
      c.reflow = {
        ...c.reflow,
        reflow_loss: v.loss as TrainConfig["reflow"]["reflow_loss"],
        reflow_t_schedule: v.loss === "l2" ? "uniform" : "t0",
        lpips_vgg_path: join(tmp, "vgg.safetensors"),
        lpips_heads_path: join(tmp, "heads.safetensors"),
      };
      const models = {
        unet: UNet2DConditionModel.create(gpu, TINY_BENCH_UNET, 5),
        textEncoder: CLIPTextModel.create(gpu, TINY_BENCH_CLIP, 3),
        tokenizer: charTokenizer,
        vae: AutoencoderKL.create(gpu, VAE, 4),
      };
      const times: number[] = [];
      await gpu.sync();
      gpu.pool.resetPeak();
      try {
        await runTraining({
          gpu,
          config: c,
          workdir: join(tmp, `run_${cases.length}`),
          models,
          trainData: await openPairDataset(c.data.train_root),
          evalData: await openPairDataset(c.data.eval_root),
          console: false,
          progress: false,
          handleSignals: false,
          onStep: () => times.push(performance.now()),
        });
        await gpu.sync();
      } finally {
        models.unet.dispose();
        models.textEncoder.dispose();
        models.vae.dispose();
      }
      cases.push({
        name: v.name,
        stepSecs: (times[times.length - 1] - times[warm - 1]) / 1000 / (steps - warm),
        peakGpuBytes: gpu.pool.peakBytes,
      });
    }
    const by = (n: string) => cases.find((c) => c.name === n)!;
    return {
      device: gpu.describe().description,
      vggWidths: widths,
      lpipsWeightBytes,
      cases,
      lpipsOverL2Time: by("lpips").stepSecs / by("l2").stepSecs,
    };
  } finally {
    if (!opts.gpu) gpu.destroy();
    await Deno.remove(tmp, { recursive: true });
  }
}

if (import.meta.main) {
  console.log(JSON.stringify(await benchLpips(), null, 2));
}
