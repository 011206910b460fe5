/**
 * The reflow training loop (the original's `reflow_train_ddp.py` main loop): a student UNet trained
 * on (z0, z1, caption) pairs with the reflow L2 loss, AdamW with a warmed-up LR schedule, global-norm
 * clipping, gradient accumulation, an EMA of the weights, evaluation with the EMA weights, sample
 * grids, TensorBoard scalars, full checkpoints and exact resume, and optionally several worker
 * processes that average their gradients (see `core/distributed/`).
 *
 * Step numbering: `step` counts completed optimizer steps. `checkpoint_s{step}` holds the state
 * after `step` steps, and resuming from it continues with step `step + 1` exactly as an
 * uninterrupted run would (same batches, t, noise, weights). Logs, evaluation, samples and
 * snapshots happen after the steps where `step % freq == 0` (logs and evaluation also after the
 * first step), and snapshots and samples after the last step. The original names its files by the
 * 0-based loop index of the same update, one less than here.
 *
 * Learning rate: `optim.lr * lambda(s)` where s is the number of optimizer steps taken before the
 * update and lambda is diffusers' schedule `optim.lr_scheduler` built, as the original does, with
 * `warmup * gradient_accumulation_steps` warm-up steps and `num_steps * gradient_accumulation_steps`
 * total steps. The schedule advances once per optimizer step (as accelerate's scheduler does for one
 * process), so with accumulation A the warm-up spans `warmup * A` optimizer steps and the linear decay
 * only reaches 1 - 1/A of the way to zero by the last step. (With several processes accelerate
 * advances it once per process and step; the workers here do not copy that.)
 *
 * @module
 */

import { encodeCaptions as encodePromptStates } from "../generate/teacher.ts";
import { dirname, join } from "node:path";
import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { keep, tidy } from "../tensor/scope.ts";
import { backward, noGrad } from "../tensor/autograd.ts";
import { readMany } from "../tensor/readback.ts";
import { addInPlace } from "../kernels/binary.ts";
import type { TrainConfig } from "../../configs/train.ts";
import { formatConfig, validateConfig } from "../config/overrides.ts";
import { schema as trainSchema } from "../../configs/train.ts";
import type { UNet2DConditionModel } from "../models/unet2d_condition.ts";
import type { AutoencoderKL } from "../models/autoencoder_kl.ts";
import type { TextEncoder } from "../models/text_encoders.ts";
import type { TextTokenizer } from "../models/tokenizers/types.ts";
import { saveModule } from "../models/load.ts";
import { EpochSampler, type PairBatch, type PairDataset } from "../data/dataset.ts";
import { EventWriter } from "../io/tensorboard.ts";
import { makeGrid, saveImage } from "../io/png.ts";
import { createLogger, type Logger } from "../util/log.ts";
import { createProgress, type Progress } from "../util/progress.ts";
import { eulerSample, rk45Sample, type VelocityModel } from "../schedulers/flow_samplers.ts";
import { AdamW, zeroGrads } from "./adamw.ts";
import { LossScaler, withHalfWeights } from "./mixed_precision.ts";
import { Ema } from "./ema.ts";
import { lrLambda } from "./lr_schedule.ts";
import { CounterRng, STREAM_EVAL, STREAM_SAMPLE, STREAM_TRAIN } from "./rng.ts";
import {
  checkLossKind,
  parseTSchedule,
  timesAt,
  type TSchedule,
  unetTimestep,
} from "./reflow_loss.ts";
import { checkLpipsConfig, selectReflowLoss } from "./lpips_loss.ts"; // issue 8: LPIPS losses
import {
  checkpointName,
  type DataPosition,
  firstNonFinite,
  loadTrainState,
  NonFiniteStateError,
  repairCheckpoints,
  saveTrainState,
  scoreModelMetadata,
  scoreModelName,
  stepFromCheckpointPath,
  type TrainStateJson,
} from "./train_state.ts";
import { type GradientExchange, LocalExchange } from "../distributed/allreduce.ts";
import { type BucketOptions, GradientBuckets } from "../distributed/grad_buckets.ts";
import { DEFAULT_CAPTION_DROPOUT, DiffusionObjective, SAMPLE_GRID } from "./diffusion_loss.ts";
import type { LossBatch } from "./reflow_loss.ts";
import { DiffusionTeacher } from "../generate/teacher.ts";

/** The models a run uses: the student and the frozen text side (and VAE for sample grids). */
export interface TrainModels {
  unet: UNet2DConditionModel;
  textEncoder: TextEncoder;
  tokenizer: TextTokenizer;
  /** null: sample grids show the latents themselves (see {@link latentsToImages}). */
  vae: AutoencoderKL | null;
}

/** Everything {@link runTraining} needs. */
export interface TrainerInit {
  gpu: Gpu;
  config: TrainConfig;
  workdir: string;
  comment?: string;
  models: TrainModels;
  trainData: PairDataset;
  evalData: PairDataset;
  /** Gradient averaging with the other workers (default: a single worker). */
  exchange?: GradientExchange;
  /** How gradients are exchanged: bucket size, f16 transport, overlap with backward. */
  dist?: BucketOptions;
  /** Echo log lines to stderr (default true). */
  console?: boolean;
  /** Draw a progress bar / progress lines on stderr (default true). */
  progress?: boolean;
  /** Stop after this step with a checkpoint, as Ctrl-C does (tests). */
  stopAtStep?: number;
  /** Save a checkpoint and stop on SIGINT (default true). */
  handleSignals?: boolean;
  /** Called after every optimizer step (benchmarks time steps with it). */
  onStep?: (step: number) => void;
}

/** What a run did. */
export interface TrainResult {
  /** Optimizer steps completed. */
  step: number;
  /** Stopped early by SIGINT or `stopAtStep` (a checkpoint was saved). */
  interrupted: boolean;
  /** Training loss of every step whose loss was read back (mean over the global batch). */
  losses: Map<number, number>;
  evalLosses: Map<number, number>;
  /** The last checkpoint folder written, if any. */
  lastCheckpoint: string | null;
  /** Seconds spent in the loop, and steps in it. */
  seconds: number;
  stepsRun: number;
}

/** Refuses settings this implementation does not have, naming them. */
export function checkTrainConfig(config: TrainConfig): TSchedule {
  // Types, choices, tuple lengths and ranges, as for a config given on the command line.
  validateConfig(config, trainSchema, "config");
  const t = config.training;
  if (t.mixed_precision !== "no" && t.mixed_precision !== "fp16") {
    throw new Error(
      `config.training.mixed_precision = "${t.mixed_precision}": supported are "no" and "fp16"`,
    );
  }
  if (config.optim.use_8bit_adam) {
    throw new Error("config.optim.use_8bit_adam: 8-bit Adam is not available; set it to false");
  }
  if (config.sampling.method !== "rectified_flow") {
    throw new Error(
      `config.sampling.method: "${config.sampling.method}" is unknown (only "rectified_flow")`,
    );
  }
  if (config.training.objective !== "reflow" && config.training.objective !== "diffusion") {
    throw new Error(
      `config.training.objective = "${config.training.objective}": not "reflow" or "diffusion"`,
    );
  }
  checkLossKind(config.reflow.reflow_loss);
  checkLpipsConfig(config.reflow); // issue 8: t0 schedule and weight paths for LPIPS losses
  for (
    const k of [
      "num_steps",
      "batch_size",
      "gradient_accumulation_steps",
      "log_freq",
      "eval_freq",
      "snapshot_freq",
      "sampling_freq",
    ] as const
  ) {
    const v = (t as unknown as Record<string, number>)[k];
    if (!Number.isInteger(v) || v < 1) {
      throw new Error(`config.training.${k} must be a positive integer, got ${v}`);
    }
  }
  return parseTSchedule(config.reflow.reflow_t_schedule);
}

/**
 * Checks the data against the models before training: latent channels, latent size, and the
 * cross-attention width against the text encoder's hidden size.
 */
export async function checkCompatibility(
  config: TrainConfig,
  models: TrainModels,
  data: PairDataset,
  what = "config.data.train_root",
): Promise<[number, number, number]> {
  const first = await data.get(0);
  const [C, H, W] = first.shape;
  const uc = models.unet.config;
  const root = data.root;
  if (C !== uc.in_channels || C !== uc.out_channels) {
    throw new Error(
      `${what} (${root}) holds ${C}-channel latents, the score model takes ${uc.in_channels} ` +
        `and gives ${uc.out_channels} (unet/config.json in_channels/out_channels)`,
    );
  }
  if (C !== config.data.num_channels) {
    throw new Error(
      `${what} (${root}) holds ${C}-channel latents, config.data.num_channels is ` +
        `${config.data.num_channels}`,
    );
  }
  if (H !== config.data.image_size || W !== config.data.image_size) {
    throw new Error(
      `${what} (${root}) holds ${H}x${W} latents, config.data.image_size is ` +
        `${config.data.image_size}`,
    );
  }
  const f = 2 ** (uc.block_out_channels.length - 1);
  if (H % f !== 0 || W % f !== 0) {
    throw new Error(
      `${what} (${root}): ${H}x${W} latents cannot pass the score model's ` +
        `${uc.block_out_channels.length} levels (need multiples of ${f})`,
    );
  }
  const cross = Array.isArray(uc.cross_attention_dim)
    ? uc.cross_attention_dim[0]
    : uc.cross_attention_dim;
  if (cross !== models.textEncoder.hiddenSize) {
    throw new Error(
      `score model cross_attention_dim ${cross} does not match the text encoder's hidden size ` +
        `${models.textEncoder.hiddenSize} (unet/config.json vs text_encoder/config.json)`,
    );
  }
  if (models.vae && models.vae.config.latent_channels !== C) {
    throw new Error(
      `${what} (${root}) holds ${C}-channel latents, the VAE has ` +
        `${models.vae.config.latent_channels} (vae/config.json latent_channels)`,
    );
  }
  return [C, H, W];
}

/**
 * Sample-grid images without a VAE: the first min(3, C) latent channels as (z / 2 + 0.5) clamped to
 * [0, 1] (grey for one channel) — the latents themselves, as the original's identity codec would
 * pass them on to the image writer.
 */
export function latentsToImages(
  z: Float32Array,
  B: number,
  C: number,
  H: number,
  W: number,
): { data: Float32Array; channels: number; height: number; width: number }[] {
  const ch = C >= 3 ? 3 : 1;
  const out = [];
  for (let b = 0; b < B; b++) {
    const data = new Float32Array(ch * H * W);
    for (let j = 0; j < ch * H * W; j++) {
      data[j] = Math.min(1, Math.max(0, z[b * C * H * W + j] / 2 + 0.5));
    }
    out.push({ data, channels: ch, height: H, width: W });
  }
  return out;
}

/** This worker's shard of successive global batches, read ahead (depth 2). */
class ShardLoader {
  private readonly source: Generator<{ epoch: number; position: number; indices: number[] }>;
  private readonly queue: { pos: DataPosition; batch: Promise<PairBatch> }[] = [];
  /** The next batch to be consumed. */
  next: DataPosition;

  constructor(
    private readonly data: PairDataset,
    sampler: EpochSampler,
    private readonly rank: number,
    private readonly perWorker: number,
    start: DataPosition,
  ) {
    this.next = { ...start };
    this.source = sampler.batches(start);
    for (let k = 0; k < 2; k++) this.issue();
  }

  private issue(): void {
    const { epoch, position, indices } = this.source.next().value!;
    const mine = indices.slice(this.rank * this.perWorker, (this.rank + 1) * this.perWorker);
    const batch = this.data.getBatch(mine);
    batch.catch(() => {}); // reported when awaited
    this.queue.push({ pos: { epoch, position }, batch });
  }

  async take(): Promise<PairBatch> {
    const head = this.queue.shift()!;
    this.issue();
    const b = await head.batch;
    const after = this.queue[0].pos;
    this.next = { ...after };
    return b;
  }
}

/** Flips [B, C, H, W] rows b where `flip[b]` along W, in place. */
function flipRows(x: Float32Array, flip: boolean[], C: number, H: number, W: number): void {
  const n = C * H * W;
  flip.forEach((f, b) => {
    if (!f) return;
    for (let r = 0; r < C * H; r++) {
      const o = b * n + r * W;
      x.subarray(o, o + W).reverse();
    }
  });
}

const isLogStep = (step: number, freq: number) => step % freq === 0 || step === 1;

/**
 * Throws naming the data set and pair when a batch holds a NaN or an infinity, so that bad data is
 * told apart from a diverging model (a scan of host arrays already read; no GPU work).
 */
function checkBatchFinite(batch: PairBatch, root: string, what: string): void {
  for (const [name, x] of [["z0 (noise)", batch.z0], ["z1 (latent)", batch.z1]] as const) {
    const at = firstNonFinite(x);
    if (at < 0) continue;
    const per = x.length / batch.indices.length;
    throw new Error(
      `${what} (${root}): pair ${batch.indices[Math.floor(at / per)]} holds a non-finite ` +
        `value (${x[at]}) in ${name}; regenerate or remove that pair`,
    );
  }
}

/**
 * Runs (or resumes) training. Rank 0 writes the logs, TensorBoard, samples and checkpoints; the
 * other ranks only compute their shard and average gradients.
 */
export async function runTraining(init: TrainerInit): Promise<TrainResult> {
  const { gpu, config, workdir } = init;
  const { unet, textEncoder, tokenizer, vae } = init.models;
  const exchange = init.exchange ?? new LocalExchange();
  const { rank, worldSize } = exchange;
  const main = rank === 0;
  const schedule = checkTrainConfig(config);
  const tc = config.training;
  const B = tc.batch_size;
  const G = B * worldSize;
  const accum = tc.gradient_accumulation_steps;
  const [C, H, W] = await checkCompatibility(config, init.models, init.trainData);
  await checkCompatibility(config, init.models, init.evalData, "config.data.eval_root");
  if (init.evalData.length < B) {
    throw new Error(
      `config.data.eval_root (${init.evalData.root}) holds ${init.evalData.length} pairs, ` +
        `fewer than one batch of ${B}`,
    );
  }
  const n = C * H * W;

  textEncoder.requiresGrad(false);
  vae?.requiresGrad(false);
  unet.requiresGrad(true);
  unet.checkpointing.on = config.diffusers.gradient_checkpointing;
  const named = unet.namedParameters();
  const params = named.map(([, p]) => p);
  const opt = new AdamW(gpu, params, {
    lr: config.optim.lr,
    beta1: config.optim.betas[0],
    beta2: config.optim.betas[1],
    eps: config.optim.eps,
    weightDecay: config.optim.weight_decay,
    gradClip: config.optim.grad_clip,
  });
  const lam = lrLambda({
    name: config.optim.lr_scheduler,
    warmup: config.optim.warmup * accum,
    total: tc.num_steps * accum,
  });
  const rngTrain = new CounterRng(config.seed, STREAM_TRAIN);
  const rngEval = new CounterRng(config.seed, STREAM_EVAL);
  const rngSample = new CounterRng(config.seed, STREAM_SAMPLE);
  let step = 0;
  let dataPos: DataPosition = { epoch: 0, position: 0 };
  let evalPosition = 0;

  // Workers start from rank 0's weights (identical models give identical steps from there on).
  if (worldSize > 1 && tc.ckpt_path === null) {
    const flat = concat(await readMany(params));
    const got = await exchange.broadcast(flat);
    writeFlat(params, got);
  }
  const ema = new Ema(gpu, params, config.ema.decay);
  // Gradients are averaged in buckets, read back as backward completes them (core/distributed/).
  const buckets = worldSize > 1 ? new GradientBuckets(gpu, params, exchange, init.dist) : null;

  let log: Logger | null = null;
  let tb: EventWriter | null = null;
  const checkpointDir = join(workdir, "checkpoints");
  const sampleDir = join(workdir, "samples");
  if (main) {
    await Deno.mkdir(checkpointDir, { recursive: true });
    await Deno.mkdir(sampleDir, { recursive: true });
    log = createLogger({ file: join(workdir, "exp.log"), console: init.console ?? true });
    log.info(`\n${formatConfig(config)}`);
    log.info(`comment : ${init.comment ?? "None"}`);
    tb = new EventWriter(join(workdir, "tensorboard"));
    // A run killed mid-save leaves temporaries, or a checkpoint without its score model.
    const dirs = new Set([checkpointDir]);
    if (tc.ckpt_path !== null) dirs.add(dirname(tc.ckpt_path.replace(/[\\/]+$/, "")));
    for (const dir of dirs) {
      const r = await repairCheckpoints(dir);
      for (const n of r.removed) log.warn(`removed ${join(dir, n)} (left by an interrupted save)`);
      for (const n of r.restored) log.warn(`restored ${join(dir, n)}`);
      for (const n of r.exported) log.warn(`wrote the missing ${join(dir, n)} from its checkpoint`);
      for (const n of r.skipped) log.warn(`cannot complete ${join(dir, n)}`);
    }
  }

  let resumedLossScale: TrainStateJson["lossScale"];
  if (tc.ckpt_path !== null) {
    step = stepFromCheckpointPath(tc.ckpt_path);
    const s = await loadTrainState(tc.ckpt_path, unet, opt, ema);
    if (s.step !== step) {
      throw new Error(`${tc.ckpt_path}: state.json says step ${s.step}, the folder name ${step}`);
    }
    if (s.worldSize !== worldSize) {
      throw new Error(
        `${tc.ckpt_path} was made by ${s.worldSize} worker(s); resume with the same number ` +
          `(now ${worldSize}) so that the data order continues`,
      );
    }
    resumedLossScale = s.lossScale;
    rngTrain.load(s.rng.train, "train random generator");
    rngEval.load(s.rng.eval, "eval random generator");
    rngSample.load(s.rng.sample, "sample random generator");
    dataPos = s.trainData;
    evalPosition = s.evalPosition;
    log?.info(`resumed from ${tc.ckpt_path} at step ${step}`);
  }

  const sampler = new EpochSampler(init.trainData.length, G, config.seed, true);
  const loader = new ShardLoader(init.trainData, sampler, rank, B, dataPos);
  const lossOpts = {
    loss: config.reflow.reflow_loss,
    reduceMean: tc.reduce_mean,
    orientation: tc.timestep_orientation,
  };
  const velocity = (zt: Tensor, ts: Tensor, ctx: Tensor) => unet.forward(zt, ts, ctx);
  // issue 8: "l2" -> reflowLoss; "lpips" / "lpips+l2" -> through the frozen VAE and LPIPS.
  const lossImpl = await selectReflowLoss(gpu, config, vae);
  const reflowLoss = lossImpl.loss;
  // --- training.objective hook (diffusion_loss.ts): "diffusion" trains epsilon prediction with
  // caption dropout on (noise z0, clean z1) pairs; "reflow" is the original's loss. ---
  const diffusion = config.training.objective === "diffusion"
    ? await DiffusionObjective.fromModelDir(
      config.diffusers.ckpt_path,
      tc.caption_dropout ?? DEFAULT_CAPTION_DROPOUT,
    )
    : null;
  /** The objective's loss for B samples whose times come from draws [base, base + B) of rng. */
  const lossAt = (rng: CounterRng, base: number, batch: LossBatch): Tensor =>
    diffusion
      ? diffusion.loss(gpu, velocity, batch, diffusion.timestepsAt(rng, base, B), tc.reduce_mean)
      : reflowLoss(gpu, velocity, batch, timesAt(schedule, rng, base, B), lossOpts);
  // --- end of the objective hook ---
  const one = keep(Tensor.from(gpu, [1], [1]));
  // fp16 mixed precision: f16 working weights, a dynamic loss scale (mixed_precision.ts).
  const scaler = tc.mixed_precision === "fp16" ? new LossScaler() : null;
  if (scaler && !gpu.hasF16) {
    throw new Error(
      'config.training.mixed_precision = "fp16" needs the adapter feature shader-f16; use "no"',
    );
  }
  if (scaler && resumedLossScale) scaler.load(resumedLossScale);

  // The same hidden states the teacher saw: the mask reaches the encoder only where its config
  // asks for it (diffusers' rule; see pipeline/teacher.ts).
  const encodeCaptions = (captions: string[]): Tensor =>
    keep(encodePromptStates(tokenizer, textEncoder, captions));

  const evalBatch = async (): Promise<PairBatch> => {
    const nb = Math.floor(init.evalData.length / B);
    const p = evalPosition % nb;
    evalPosition++;
    return await init.evalData.getBatch(Array.from({ length: B }, (_, i) => p * B + i));
  };

  let stopRequested = false;
  const onSigint = () => {
    if (main && !stopRequested) log?.warn("SIGINT: saving a checkpoint after this step");
    stopRequested = true;
  };
  const signals = init.handleSignals ?? true;
  if (signals) Deno.addSignalListener("SIGINT", onSigint);

  const progress: Progress | null = main && (init.progress ?? true)
    ? createProgress({ total: tc.num_steps, start: step, label: "Steps" })
    : null;

  const result: TrainResult = {
    step,
    interrupted: false,
    losses: new Map(),
    evalLosses: new Map(),
    lastCheckpoint: null,
    seconds: 0,
    stepsRun: 0,
  };
  // Losses of steps not yet read back (single worker: read every log_freq steps, in one map).
  let pending: { step: number; parts: Tensor[] }[] = [];
  let lastLogTime = performance.now();
  let lastLogStep = step;
  const t0 = performance.now();

  // Every checkpoint on disk has passed the finiteness check (saveTrainState refuses otherwise,
  // loadTrainState checks the one resumed from), so the newest one is good.
  let lastGood: string | null = tc.ckpt_path;
  const lastGoodText = () =>
    `The last good checkpoint is ${lastGood ?? "(none: no checkpoint was written)"}`;
  const checkFinite = (s: number, v: number) => {
    if (!Number.isFinite(v)) {
      throw new Error(`training loss is ${v} at step ${s}; stopping. ${lastGoodText()}`);
    }
  };

  const drainPending = async (): Promise<void> => {
    if (!pending.length) return;
    const all = pending.flatMap((p) => p.parts);
    const vals = await readMany(all);
    let k = 0;
    for (const p of pending) {
      let s = 0;
      for (let i = 0; i < p.parts.length; i++) s += vals[k++][0];
      const v = s / p.parts.length;
      checkFinite(p.step, v);
      result.losses.set(p.step, v);
    }
    for (const t of all) t.dispose();
    pending = [];
  };

  const saveCheckpoint = async (): Promise<void> => {
    const dir = join(checkpointDir, checkpointName(step));
    try {
      await saveTrainState(dir, unet, opt, ema, {
        step,
        rng: { train: rngTrain.state(), eval: rngEval.state(), sample: rngSample.state() },
        trainData: loader.next,
        evalPosition,
        worldSize,
        config,
        lossScale: scaler?.state(),
      });
    } catch (e) {
      if (!(e instanceof NonFiniteStateError)) throw e;
      throw new Error(
        `training diverged by step ${step} (${e.message}); stopping. ${lastGoodText()}`,
        { cause: e },
      );
    }
    lastGood = dir;
    await ema.withAverage(() =>
      saveModule(unet, join(checkpointDir, scoreModelName(step)), {
        // The sample job and flow teachers read the orientation the student was trained with.
        metadata: scoreModelMetadata(step, tc.timestep_orientation),
      })
    );
    result.lastCheckpoint = dir;
    log?.info(`step ${step} | saved ${dir} and ${scoreModelName(step)} (EMA)`);
  };

  const diffusionGrid = async (captions: string[], z0: Float32Array): Promise<Float32Array> => {
    const teacher = new DiffusionTeacher({
      gpu,
      tokenizer,
      textEncoder,
      unet,
      schedulerConfig: diffusion!.schedulerConfig,
      ...SAMPLE_GRID,
    });
    try {
      return await teacher.sample(captions, z0);
    } finally {
      teacher.dispose();
    }
  };

  const drawSamples = async (): Promise<void> => {
    const batch = await evalBatch();
    const context = encodeCaptions(batch.captions);
    try {
      const z0 = config.sampling.randz0 === "random"
        ? rngSample.normals(rngSample.advance(B * n), B * n)
        : batch.z0;
      const model: VelocityModel = async (x, t) => {
        const v = tidy(() =>
          noGrad(() => {
            const ts = new Float32Array(B).fill(unetTimestep(t, tc.timestep_orientation));
            return unet.forward(
              Tensor.from(gpu, x, [B, C, H, W]),
              Tensor.from(gpu, ts, [B]),
              context,
            );
          })
        );
        try {
          return await v.toF32();
        } finally {
          v.dispose();
        }
      };
      const sample = await ema.withAverage(async () =>
        diffusion
          ? await diffusionGrid(batch.captions, z0)
          : config.sampling.use_ode_sampler === "rk45"
          ? (await rk45Sample(model, z0)).x
          : (await eulerSample(model, z0, { steps: config.sampling.sample_N })).x
      );
      let images;
      if (vae) {
        const img = noGrad(() => {
          const z = Tensor.from(gpu, sample, [B, C, H, W]);
          const out = vae.decodeLatents(z);
          z.dispose();
          return out;
        });
        const [, c3, h3, w3] = img.shape;
        const data = await img.toF32();
        img.dispose();
        images = Array.from({ length: B }, (_, b) => ({
          data: data.slice(b * c3 * h3 * w3, (b + 1) * c3 * h3 * w3),
          channels: c3,
          height: h3,
          width: w3,
        }));
      } else images = latentsToImages(sample, B, C, H, W);
      const path = join(sampleDir, `sample_s${step}.png`);
      saveImage(path, makeGrid(images, Math.max(1, Math.floor(Math.sqrt(B))), 2));
      log?.info(`step ${step} | samples written to ${path}`);
    } finally {
      context.dispose();
    }
  };

  const evaluate = async (): Promise<number> => {
    const batch = await evalBatch();
    checkBatchFinite(batch, init.evalData.root, "config.data.eval_root");
    const context = encodeCaptions(batch.captions);
    try {
      const base = rngEval.advance(B);
      return await ema.withAverage(async () => {
        const loss = noGrad(() =>
          lossAt(rngEval, base, { z0: batch.z0, z1: batch.z1, shape: [B, C, H, W], context })
        );
        try {
          return (await loss.toF32())[0];
        } finally {
          loss.dispose();
        }
      });
    } finally {
      context.dispose();
    }
  };

  if (main) {
    log!.info(`OBJECTIVE: ${config.training.objective}`);
    log!.info(`REFLOW T SCHEDULE: ${config.reflow.reflow_t_schedule}`);
    log!.info(`LOSS: ${config.reflow.reflow_loss}`);
    log!.info(
      `Starting reflow training loop at step ${step} (${worldSize} worker(s), ${G} pairs per ` +
        `micro-batch, ${accum} micro-batch(es) per step, ${unet.numParameters()} parameters).`,
    );
  }

  try {
    while (step < tc.num_steps) {
      const next = step + 1;
      const parts: Tensor[] = [];
      for (let a = 0; a < accum; a++) {
        const batch = await loader.take();
        checkBatchFinite(batch, init.trainData.root, "config.data.train_root");
        const tBase = rngTrain.advance(G);
        const flipBase = config.data.random_flip ? rngTrain.advance(G) : -1;
        const noiseBase = tc.randz0 === "random" ? rngTrain.advance(G * n) : -1;
        const dropBase = diffusion ? rngTrain.advance(G) : -1;
        const z0 = noiseBase >= 0 ? rngTrain.normals(noiseBase + rank * B * n, B * n) : batch.z0;
        const z1 = batch.z1;
        if (flipBase >= 0) {
          const flips = Array.from(
            { length: B },
            (_, i) => rngTrain.uniformAt(flipBase + rank * B + i) < 0.5,
          );
          flipRows(z0, flips, C, H, W);
          flipRows(z1, flips, C, H, W);
        }
        const context = encodeCaptions(
          diffusion
            ? diffusion.dropCaptionsAt(batch.captions, rngTrain, dropBase + rank * B)
            : batch.captions,
        );
        // The last micro-batch's backward feeds the gradient buckets as it goes.
        const last = a === accum - 1 && buckets;
        const bw = (f: () => void) => (last ? buckets.backward(f) : f());
        const run = () => {
          const l = lossAt(rngTrain, tBase + rank * B, { z0, z1, shape: [B, C, H, W], context });
          if (!scaler) {
            bw(() => backward([l], [one], addInPlace));
            return l;
          }
          const seed = Tensor.from(gpu, [scaler.scale], [1]);
          bw(() => backward([l], [seed], addInPlace));
          seed.dispose();
          return l;
        };
        const loss = scaler ? withHalfWeights(unet, run) : run();
        context.dispose();
        parts.push(loss);
      }

      let stepLoss: number | null = null;
      let stopAfter = stopRequested || init.stopAtStep === next;
      if (buckets) {
        // The gradients' buckets, then the losses and the stop flag, averaged over the workers.
        const avg = await buckets.finish(parts, [main && stopAfter ? worldSize : 0]);
        let s = 0;
        for (let a = 0; a < accum; a++) s += avg[a];
        stepLoss = s / accum;
        checkFinite(next, stepLoss);
        stopAfter = avg[accum] > 0.5;
        for (const t of parts) t.dispose();
      } else {
        pending.push({ step: next, parts });
      }

      const lr = config.optim.lr * lam(opt.step);
      let norm: Tensor;
      let applied = true;
      // Gradients carry the loss scale under fp16: unscale, and skip a step that overflowed
      // (the optimizer, its LR schedule and the EMA then stay where they are, as with GradScaler).
      const unscale = scaler ? 1 / scaler.scale : 1;
      if (scaler) {
        norm = opt.gradNorm();
        applied = scaler.update(Number.isFinite((await norm.toF32())[0]));
        if (applied) opt.update(lr, unscale / accum, norm);
        else {log?.info(
            `step ${next} | fp16 gradients overflowed: skipped, loss scale ${scaler.scale}`,
          );}
      } else norm = opt.update(lr, 1 / accum);
      if (applied) ema.update();
      zeroGrads(params);
      step = next;
      result.step = step;
      result.stepsRun++;
      if (stepLoss !== null) result.losses.set(step, stepLoss);
      init.onStep?.(step);

      const last = step === tc.num_steps;
      const logNow = isLogStep(step, tc.log_freq) || last;
      if (main && logNow) {
        const gn = (await norm.toF32())[0] * unscale / accum;
        await drainPending();
        const loss = result.losses.get(step)!;
        const now = performance.now();
        const sps = (step - lastLogStep) / Math.max(1e-9, (now - lastLogTime) / 1000);
        lastLogTime = now;
        lastLogStep = step;
        log!.info(`step ${step} | training_loss ${loss.toFixed(5)}`);
        tb!.addScalar("training_loss", loss, step);
        tb!.addScalar("lr", lr, step);
        tb!.addScalar("grad_norm", gn, step);
        tb!.addScalar("steps_per_sec", sps, step);
        progress?.update(step, { loss: loss.toFixed(5) });
      } else progress?.update(step);
      norm.dispose();

      if (main && (isLogStep(step, tc.eval_freq) || last)) {
        const ev = await evaluate();
        if (!Number.isFinite(ev)) {
          // The eval pairs are finite (checked), so the EMA weights have diverged.
          throw new Error(
            `eval loss is ${ev} at step ${step} (EMA weights on finite eval pairs); stopping. ` +
              lastGoodText(),
          );
        }
        result.evalLosses.set(step, ev);
        log!.info(`step ${step} | eval_loss ${ev.toFixed(5)}`);
        tb!.addScalar("eval_loss", ev, step);
      }
      const snapshot = step % tc.snapshot_freq === 0 || last || stopAfter;
      if (main && snapshot) {
        await drainPending(); // a NaN stops before a bad checkpoint is written
        await saveCheckpoint();
      }
      if (main && (step % tc.sampling_freq === 0 || last)) await drawSamples();
      if (stopAfter && !last) {
        result.interrupted = true;
        log?.info(`stopped at step ${step}`);
        break;
      }
    }
    if (main) await drainPending();
  } finally {
    if (signals) Deno.removeSignalListener("SIGINT", onSigint);
    for (const p of pending) for (const t of p.parts) t.dispose();
    progress?.stop();
    tb?.close();
    log?.close();
    one.dispose();
    lossImpl.dispose(); // issue 8
    opt.dispose();
    ema.dispose();
    for (const p of params) {
      p.grad?.dispose();
      p.grad = null;
    }
  }
  result.seconds = (performance.now() - t0) / 1000;
  return result;
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Writes consecutive slices of `flat` into `tensors` (in order). */
function writeFlat(tensors: Tensor[], flat: Float32Array): void {
  let off = 0;
  for (const t of tensors) {
    t.gpu.write(t.buffer, 0, flat.subarray(off, off + t.size));
    off += t.size;
  }
}
