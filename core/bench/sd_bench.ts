/**
 * The Stable Diffusion benchmark of `deno task bench --sd`: the pipelines of sd_configs.ts with
 * random weights from their configs (PyTorch default init), at full size on a GPU or at the
 * `small` scale as a CPU smoke test. Rows, in run order (each row is reported as it finishes, and a
 * failing row is recorded with its error while the others run):
 *
 * - `unet_forward`: f16 UNet forward at batch 1/2/4 (sd15; sd21 and alt at batch 1), latents
 *   [B, 4, 64, 64], context [B, 77, cross_dim]: ms, host recording ms, GPU ms, dispatches and
 *   submits per forward, peak pooled GPU memory;
 * - `text_encoder`: f32 text encoder on one 77-token caption;
 * - `vae_decode`: f16 VAE decode of one latent (64 -> 512 px);
 * - `image_1step` / `image_25step`: caption to decoded image through the generate job's teacher
 *   (text encoder, DPM-Solver++ with the UNet, read-backs included) and the VAE: ms per image, one
 *   step without guidance (what a reflow student costs), 25 steps with guidance 7.5 (the teacher);
 * - `generate`: the teacher's 25-step guided sampling of a batch without decoding, as the generate
 *   job runs it: pairs per second (start-up, model loading and file writes excluded);
 * - `train_step`: one reflow training step (loss, backward, AdamW) at batch 2/4 with gradient
 *   checkpointing and fp16 mixed precision (f16 working weights, loss scaling), f32 master weights.
 *
 * With `compareDir`, the f16 UNet (config.json + safetensors of its exact f16 weights), the seeded
 * inputs and this implementation's outputs are written there as .npy for
 * scripts/compare_diffusers.py, which runs diffusers' UNet2DConditionModel on the same GPU.
 */
import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { tidy } from "../tensor/scope.ts";
import { backward, noGrad } from "../tensor/autograd.ts";
import { UNet2DConditionModel } from "../models/unet2d_condition.ts";
import { AutoencoderKL } from "../models/autoencoder_kl.ts";
import { createTextEncoder, type TextEncoder } from "../models/text_encoders.ts";
import type { TextTokenizer } from "../models/tokenizers/types.ts";
import { saveModule } from "../models/load.ts";
import { DiffusionTeacher } from "../generate/teacher.ts";
import { encodeCaptions } from "../flow/captions.ts";
import { reflowLoss } from "../train/reflow_loss.ts";
import { AdamW, zeroGrads } from "../train/adamw.ts";
import { LossScaler, withHalfWeights } from "../train/mixed_precision.ts";
import { cast } from "../kernels/cast.ts";
import { randomNormal } from "../kernels/random.ts";
import { writeNpy } from "../data/npy.ts";
import { CounterRng } from "../train/rng.ts";
import { measureSteps, type StepStats } from "./step_stats.ts";
import { scaleModel, SD_MODELS, type SdModel, type SdScale } from "./sd_configs.ts";

/** One benchmark row; `error` replaces the figures of a row that failed. */
export interface SdRow {
  name: string;
  model: string;
  batch: number;
  [field: string]: unknown;
}

/** Settings of {@link runSdBench}. */
export interface SdBenchOptions {
  scale: SdScale;
  /** Pipelines to run (default all: sd15 every row; sd21 and alt forward and text encoder). */
  models?: string[];
  /** Timed repetitions per row (default 3 at full size, 1 small). */
  reps?: number;
  /** Where to write the UNet folder, inputs and outputs for the diffusers comparison. */
  compareDir?: string;
  /** Called with each row as it finishes (the caller writes partial results). */
  onRow?: (row: SdRow) => void | Promise<void>;
  log?: (line: string) => void;
}

/** Forward batches of the main pipeline, training batches, generate's batch. */
export const FORWARD_BATCHES = [1, 2, 4];
export const TRAIN_BATCHES = [2, 4];
const GENERATE_BATCH = { full: 4, small: 2 };
const GUIDANCE = 7.5;

/** The rows (name, model, batch) a run with these models produces, in order. */
export function plannedRows(models: string[]): { name: string; model: string; batch: number }[] {
  const out: { name: string; model: string; batch: number }[] = [];
  for (const m of models) {
    const main = m === "sd15";
    for (const b of main ? FORWARD_BATCHES : [1]) {
      out.push({ name: "unet_forward", model: m, batch: b });
    }
    out.push({ name: "text_encoder", model: m, batch: 1 });
    if (!main) continue;
    out.push({ name: "vae_decode", model: m, batch: 1 });
    out.push({ name: "image_1step", model: m, batch: 1 });
    out.push({ name: "image_25step", model: m, batch: 1 });
    out.push({ name: "generate", model: m, batch: -1 });
    for (const b of TRAIN_BATCHES) out.push({ name: "train_step", model: m, batch: b });
  }
  return out;
}

/**
 * Captions to fixed-length ids without a vocabulary file: character codes folded into the
 * model's vocabulary, between bos/eos-like ids, padded (random weights make any ids equally good).
 */
export function syntheticTokenizer(vocab: number, length: number, padId: number): TextTokenizer {
  return {
    kind: "clip",
    modelMaxLength: length,
    padId,
    encode(texts) {
      const ids = new Int32Array(texts.length * length).fill(padId);
      const mask = new Int32Array(texts.length * length);
      texts.forEach((t, b) => {
        const body = [...t].slice(0, length - 2).map((c) => 4 + (c.charCodeAt(0) % (vocab - 8)));
        const row = [2, ...body, 3];
        ids.set(row, b * length);
        mask.fill(1, b * length, b * length + row.length);
      });
      return { ids, mask, length };
    },
  };
}

const CAPTION = "a photograph of an astronaut riding a horse";

/** Runs the benchmark; returns every row (failed rows carry `error`). */
export async function runSdBench(gpu: Gpu, o: SdBenchOptions): Promise<SdRow[]> {
  const names = o.models ?? SD_MODELS.map((m) => m.name);
  const unknown = names.filter((n) => !SD_MODELS.some((m) => m.name === n));
  if (unknown.length) {
    throw new Error(
      `bench --sd: unknown model(s) ${unknown.join(", ")} (known: ${
        SD_MODELS.map((m) => m.name).join(", ")
      })`,
    );
  }
  const reps = o.reps ?? (o.scale === "full" ? 3 : 1);
  const log = o.log ?? (() => {});
  const rows: SdRow[] = [];
  const emit = async (row: SdRow) => {
    rows.push(row);
    log(JSON.stringify(row));
    await o.onRow?.(row);
  };
  /** Runs one row's measurement; a failure becomes the row's `error`. */
  const row = async (
    base: { name: string; model: string; batch: number },
    fn: () => Promise<Record<string, unknown>>,
  ) => {
    const t0 = performance.now();
    try {
      await emit({ ...base, ...(await fn()), wall_s: (performance.now() - t0) / 1000 });
    } catch (e) {
      await emit({ ...base, error: (e as Error).message ?? String(e) });
    }
  };
  for (const name of names) {
    const m = scaleModel(SD_MODELS.find((x) => x.name === name)!, o.scale);
    await benchPipeline(gpu, m, name === "sd15", reps, o, row);
  }
  return rows;
}

type RowFn = (
  base: { name: string; model: string; batch: number },
  fn: () => Promise<Record<string, unknown>>,
) => Promise<void>;

async function benchPipeline(
  gpu: Gpu,
  m: SdModel,
  main: boolean,
  reps: number,
  o: SdBenchOptions,
  row: RowFn,
): Promise<void> {
  const cross = m.unet.cross_attention_dim as number;
  const S = m.latent, L = m.tokens;
  const latentN = 4 * S * S;
  const fwd = (b: number) => ({ name: "unet_forward", model: m.name, batch: b });
  let unet: UNet2DConditionModel | null = null;
  let text: TextEncoder | null = null;
  let vae: AutoencoderKL | null = null;
  try {
    // ---- f16 inference: UNet forward, text encoder, VAE, images, generate
    unet = UNet2DConditionModel.create(gpu, m.unet, 1);
    unet.requiresGrad(false).toDtype("f16");
    const params = unet.numParameters();
    const batches = main ? FORWARD_BATCHES : [1];
    const maxB = Math.max(...batches);
    const x = randomNormal(gpu, [maxB, 4, S, S], { seed: 11 });
    const ctx = randomNormal(gpu, [maxB, L, cross], { seed: 12 });
    const tVals = Array.from({ length: maxB }, (_, i) => 999 - 250 * i);
    try {
      for (const b of batches) {
        await row(fwd(b), async () => {
          const [xs, cs, ts] = [
            sliceBatch(x, b),
            sliceBatch(ctx, b),
            Tensor.from(gpu, tVals.slice(0, b), [b]),
          ];
          try {
            const u = unet!;
            const st = await measureSteps(
              gpu,
              () => tidy(() => noGrad(() => u.forward(xs, ts, cs))).dispose(),
              reps,
            );
            return { dtype: "f16", latent: S, tokens: L, params, ...st };
          } finally {
            for (const z of [xs, cs, ts]) z.dispose();
          }
        });
      }
      if (o.compareDir) await writeComparison(gpu, unet, m, x, ctx, tVals, o.compareDir);
    } finally {
      x.dispose();
      ctx.dispose();
    }

    text = createTextEncoder(gpu, m.text, `${m.name} text encoder`);
    text.requiresGrad(false);
    const padId = (m.text.pad_token_id as number | undefined) ?? 0;
    const tok = syntheticTokenizer(m.text.vocab_size as number, L, padId);
    const te = text;
    await row({ name: "text_encoder", model: m.name, batch: 1 }, async () => {
      const st = await measureSteps(
        gpu,
        () => encodeCaptions(tok, te, [CAPTION]).dispose(),
        reps,
      );
      return { dtype: "f32", tokens: L, params: te.numParameters(), ...st };
    });
    if (!main) return;

    vae = AutoencoderKL.create(gpu, m.vae, 2);
    vae.requiresGrad(false).toDtype("f16");
    const v = vae;
    const z = randomNormal(gpu, [1, 4, S, S], { seed: 13 });
    try {
      await row({ name: "vae_decode", model: m.name, batch: 1 }, async () => {
        const st = await measureSteps(gpu, () => decodeF16(v, z).dispose(), reps);
        return { dtype: "f16", latent: S, image: 8 * S, params: v.numParameters(), ...st };
      });
    } finally {
      z.dispose();
    }

    const u = unet;
    const teacher = (steps: number, guidance: number) =>
      new DiffusionTeacher({
        gpu,
        tokenizer: tok,
        textEncoder: te,
        unet: u,
        schedulerConfig: m.scheduler,
        inferSteps: steps,
        guidanceScale: guidance,
        latentShape: [4, S, S],
      });
    const noise = (b: number, seed: number) => new CounterRng(seed).normals(0, b * latentN);
    for (const [steps, guidance] of [[1, 1], [25, GUIDANCE]]) {
      await row({ name: `image_${steps}step`, model: m.name, batch: 1 }, async () => {
        const t = teacher(steps, guidance);
        const once = async () => {
          const z1 = await t.sample([CAPTION], noise(1, 5));
          const img = noGrad(() =>
            tidy(() => {
              const zt = Tensor.from(gpu, z1, [1, 4, S, S]);
              return decodeF16(v, zt, true);
            })
          );
          await img.toF32();
          img.dispose();
        };
        try {
          // The 1-step row warms up (compiles) what the 25-step one runs too.
          if (steps === 1) await once();
          // 25 guided steps take long at full size: at most two timed images.
          const n = steps === 1 ? reps : Math.min(reps, 2);
          const t0 = performance.now();
          for (let i = 0; i < n; i++) await once();
          return {
            steps,
            guidance,
            image: 8 * S,
            ms_per_image: (performance.now() - t0) / n,
            sampler: "DPM-Solver++ (2M)",
          };
        } finally {
          t.dispose();
        }
      });
    }
    const gb = GENERATE_BATCH[o.scale];
    await row({ name: "generate", model: m.name, batch: gb }, async () => {
      const t = teacher(25, GUIDANCE);
      const caps = Array.from({ length: gb }, (_, i) => `${CAPTION} ${i}`);
      try {
        // No warm-up: the rows above compiled every pipeline the teacher runs.
        const n = Math.min(reps, 2);
        const t0 = performance.now();
        for (let i = 0; i < n; i++) await t.sample(caps, noise(gb, 7 + i));
        const s = (performance.now() - t0) / 1000 / n;
        return { steps: 25, guidance: GUIDANCE, pairs_per_s: gb / s, s_per_batch: s };
      } finally {
        t.dispose();
      }
    });
  } finally {
    unet?.dispose();
    text?.dispose();
    vae?.dispose();
  }
  // Made on the first training row, kept for the next (a full-size UNet takes seconds to build).
  const made: { tr?: Trainee } = {};
  try {
    for (const b of TRAIN_BATCHES) {
      await row({ name: "train_step", model: m.name, batch: b }, () => {
        made.tr ??= makeTrainee(gpu, m);
        // A full-size step takes seconds: two timed ones are enough.
        return trainStep(gpu, m, made.tr, b, Math.min(reps, 2));
      });
    }
  } finally {
    made.tr?.opt.dispose();
    made.tr?.unet.dispose();
  }
}

/** Rows [0, b) of a [B, ...] tensor as a new tensor (a strided copy). */
function sliceBatch(t: Tensor, b: number): Tensor {
  if (t.shape[0] === b) return t.alias();
  const out = Tensor.empty(t.gpu, [b, ...t.shape.slice(1)], t.dtype);
  t.gpu.copy(t.buffer, 0, out.buffer, 0, (t.bytes / t.shape[0]) * b);
  return out;
}

/** VAE decode with f16 weights: latents cast in, images cast back to f32. */
function decodeF16(vae: AutoencoderKL, z: Tensor, latents = false): Tensor {
  return tidy(() =>
    noGrad(() => {
      const zh = cast(z, "f16");
      return cast(latents ? vae.decodeLatents(zh) : vae.decode(zh), "f32");
    })
  );
}

/** The f32 master UNet, its optimizer and loss scaler, shared by the training rows. */
interface Trainee {
  unet: UNet2DConditionModel;
  params: Tensor[];
  opt: AdamW;
  scaler: LossScaler;
}

function makeTrainee(gpu: Gpu, m: SdModel): Trainee {
  const unet = UNet2DConditionModel.create(gpu, m.unet, 1);
  unet.checkpointing.on = true;
  const params = unet.parameters();
  const opt = new AdamW(gpu, params, {
    lr: 1e-5,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    weightDecay: 0,
    gradClip: 1,
  });
  return { unet, params, opt, scaler: new LossScaler() };
}

/**
 * One reflow training step as the trainer takes it with `mixed_precision = "fp16"` and gradient
 * checkpointing: f16 casts of the f32 masters, the L2 reflow loss on an interpolated batch,
 * backward with the loss scale, the gradient norm read back (the overflow check), AdamW.
 */
async function trainStep(
  gpu: Gpu,
  m: SdModel,
  tr: Trainee,
  B: number,
  reps: number,
): Promise<Record<string, unknown>> {
  const { unet, params, opt, scaler } = tr;
  const S = m.latent, n = 4 * S * S;
  const rng = new CounterRng(21);
  const z0 = rng.normals(0, B * n), z1 = rng.normals(B * n, B * n);
  const context = randomNormal(gpu, [B, m.tokens, m.unet.cross_attention_dim as number], {
    seed: 22,
  });
  const t = Array.from({ length: B }, (_, i) => (i + 0.5) / B);
  const lossOpts = { loss: "l2", reduceMean: true, orientation: "original" } as const;
  let record = 0;
  const step = async () => {
    const r0 = performance.now();
    const d0 = gpu.dispatchCount;
    withHalfWeights(unet, () => {
      const l = reflowLoss(
        gpu,
        (zt, ts, c) => unet.forward(zt, ts, c),
        {
          z0,
          z1,
          shape: [B, 4, S, S],
          context,
        },
        t,
        lossOpts,
      );
      const seed = Tensor.from(gpu, [scaler.scale], [1]);
      backward([l], [seed]);
      seed.dispose();
      l.dispose();
    });
    const norm = opt.gradNorm();
    gpu.flush();
    record += performance.now() - r0;
    const finite = Number.isFinite((await norm.toF32())[0]);
    const r1 = performance.now();
    if (scaler.update(finite)) opt.update(1e-5, 1 / scaler.scale, norm);
    norm.dispose();
    zeroGrads(params);
    record += performance.now() - r1;
    return gpu.dispatchCount - d0;
  };
  try {
    await step(); // warm-up: compiles every pipeline of forward, recompute and backward
    await gpu.sync();
    gpu.pool.resetPeak();
    record = 0;
    const s0 = gpu.submitCount, sm0 = gpu.submitMs;
    let dispatches = 0;
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) dispatches += await step();
    // The norm read-backs submitted too; their submit time is in the step's already.
    const submitMs = (gpu.submitMs - sm0) / reps;
    await gpu.sync();
    const ms = (performance.now() - t0) / reps;
    return {
      checkpointing: true,
      mixed_precision: "fp16",
      params: unet.numParameters(),
      ms,
      record_ms: record / reps - submitMs,
      submit_ms: submitMs,
      dispatches: dispatches / reps,
      submits: (gpu.submitCount - s0 - 1) / reps,
      peak_mb: gpu.pool.peakBytes / 2 ** 20,
      pool_mb: (gpu.pool.liveBytes + gpu.pool.reservedBytes) / 2 ** 20,
      loss_scale: scaler.scale,
    };
  } finally {
    context.dispose();
  }
}

/**
 * Writes what scripts/compare_diffusers.py needs: `unet/` (config.json and the f16 weights, the
 * exact values this run used), x.npy [B, 4, S, S], t.npy [B], ctx.npy [B, L, cross] (f32, cast to
 * f16 on both sides), out.npy (this implementation's f32 output for all B rows) and meta.json.
 * The forward times to compare with are the `unet_forward` rows of the bench JSON.
 */
async function writeComparison(
  gpu: Gpu,
  unet: UNet2DConditionModel,
  m: SdModel,
  x: Tensor,
  ctx: Tensor,
  tVals: number[],
  dir: string,
): Promise<void> {
  await Deno.mkdir(`${dir}/unet`, { recursive: true });
  const config = { _class_name: "UNet2DConditionModel", ...unet.config };
  await Deno.writeTextFile(`${dir}/unet/config.json`, JSON.stringify(config, null, 2) + "\n");
  await saveModule(unet, `${dir}/unet/diffusion_pytorch_model.safetensors`, { dtype: "F16" });
  const B = x.shape[0];
  const t = Tensor.from(gpu, tVals, [B]);
  const out = tidy(() => noGrad(() => unet.forward(x, t, ctx)));
  const f32 = async (name: string, tensor: Tensor) =>
    await writeNpy(`${dir}/${name}.npy`, {
      dtype: "<f4",
      shape: [...tensor.shape],
      data: await tensor.toF32(),
    });
  try {
    await f32("x", x);
    await f32("ctx", ctx);
    await f32("t", t);
    await f32("out", out);
  } finally {
    t.dispose();
    out.dispose();
  }
  await Deno.writeTextFile(
    `${dir}/meta.json`,
    JSON.stringify({ model: m.name, latent: m.latent, tokens: m.tokens, batch: B }, null, 2) + "\n",
  );
}

export type { StepStats };
