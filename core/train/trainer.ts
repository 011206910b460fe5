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
 * The {@link Trainer} class is kept whole in this file (a little over 600 lines) so that its loop,
 * `run()` -> step / exchange / evaluate / checkpoint / drawSamples, reads top to bottom like the
 * original's; its settings checks, shard loader, sample grids and objective live beside it.
 *
 * @module
 */

import { join } from "node:path";
import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { keep } from "../tensor/scope.ts";
import { backward, noGrad } from "../tensor/autograd.ts";
import { readMany } from "../tensor/readback.ts";
import type { TrainConfig } from "../../configs/train.ts";
import type { UNet2DConditionModel } from "../models/unet2d_condition.ts";
import { saveModule } from "../models/load.ts";
import { EpochSampler, type PairBatch } from "../data/dataset.ts";
import type { EventWriter } from "../io/tensorboard.ts";
import type { Logger } from "../util/log.ts";
import { createProgress, type Progress } from "../util/progress.ts";
import { encodeCaptions } from "../flow/captions.ts";
import { type GradientExchange, LocalExchange } from "../distributed/allreduce.ts";
import { GradientBuckets } from "../distributed/grad_buckets.ts";
import { AdamW, zeroGrads } from "./adamw.ts";
import { type LossScaler, lossScalerFor, withHalfWeightsAsync } from "./mixed_precision.ts";
import { Ema } from "./ema.ts";
import { lrLambda } from "./lr_schedule.ts";
import { CounterRng, STREAM_EVAL, STREAM_SAMPLE, STREAM_TRAIN } from "./rng.ts";
import type { LossBatch, TSchedule } from "./reflow_loss.ts";
import {
  checkpointName,
  loadResumeState,
  NonFiniteStateError,
  saveTrainState,
  scoreModelMetadata,
  scoreModelName,
  type TrainStateJson,
} from "./train_state.ts";
import { gridSamples, writeGrid } from "./sample_grid.ts";
import { TrainingObjective } from "./objective.ts";
import { flipRows, ShardLoader } from "./shard_loader.ts";
import { checkBatchFinite, checkCompatibility, checkTrainConfig } from "./train_checks.ts";
import { broadcastWeights, openRunLogs } from "./setup.ts";
import { newTrainResult, type TrainerInit, type TrainResult } from "./types.ts";

export type { TrainerInit, TrainModels, TrainResult } from "./types.ts";
export { checkCompatibility, checkTrainConfig };

/** What one optimizer step left for the loop's logging and stop decision. */
interface StepOutcome {
  /** The learning rate applied. */
  lr: number;
  /** The gradient norm tensor [1] (scaled by the loss scale and accumulation; disposed by the loop). */
  norm: Tensor;
  /** 1 / loss scale under fp16, else 1. */
  unscale: number;
  /** Stop after this step (SIGINT, `stopAtStep`, or the main worker's stop under several workers). */
  stopAfter: boolean;
}

const isLogStep = (step: number, freq: number) => step % freq === 0 || step === 1;

/**
 * One training run. {@link Trainer.create} sets the run up (models, optimizer, EMA, logs, resume);
 * {@link Trainer.run} is the original's loop: step, log, evaluate, checkpoint, draw samples.
 * Rank 0 writes the logs, TensorBoard, samples and checkpoints; the other ranks only compute their
 * shard and average gradients.
 */
class Trainer {
  readonly gpu: Gpu;
  readonly config: TrainConfig;
  readonly tc: TrainConfig["training"];
  readonly unet: UNet2DConditionModel;
  readonly rank: number;
  readonly worldSize: number;
  /** Rank 0: the worker that logs, evaluates, samples and saves. */
  readonly main: boolean;
  /** Pairs per worker and micro-batch, pairs per global micro-batch, micro-batches per step. */
  readonly B: number;
  readonly G: number;
  readonly accum: number;
  /** Latent shape [C, H, W] and its size. */
  readonly shape: [number, number, number];
  readonly n: number;
  readonly params: Tensor[];
  readonly opt: AdamW;
  /** The LR schedule's factor after s optimizer steps. */
  readonly lam: (s: number) => number;
  readonly rngTrain: CounterRng;
  readonly rngEval: CounterRng;
  readonly rngSample: CounterRng;
  readonly checkpointDir: string;
  readonly sampleDir: string;
  /** The loss gradient's seed (1) without fp16 loss scaling. */
  readonly one: Tensor;
  /** The student as the losses call it: velocity of zt at UNet timesteps, given caption states. */
  readonly velocity = (zt: Tensor, ts: Tensor, ctx: Tensor): Tensor =>
    this.unet.forward(zt, ts, ctx);

  ema!: Ema;
  /** Gradient averaging over the workers, bucket by bucket (null for a single worker). */
  buckets: GradientBuckets | null = null;
  log: Logger | null = null;
  tb: EventWriter | null = null;
  loader!: ShardLoader;
  objective!: TrainingObjective;
  /** fp16 mixed precision: f16 working weights, a dynamic loss scale (mixed_precision.ts). */
  scaler: LossScaler | null = null;
  progress: Progress | null = null;

  /** Completed optimizer steps. */
  globalStep = 0;
  evalPosition = 0;
  stopRequested = false;
  result: TrainResult;
  /** Losses of steps not yet read back (single worker: read every log_freq steps, in one map). */
  pending: { step: number; parts: Tensor[] }[] = [];
  lastLogTime = 0;
  lastLogStep = 0;
  /**
   * Every checkpoint on disk has passed the finiteness check (saveTrainState refuses otherwise,
   * loadTrainState checks the one resumed from), so the newest one is good.
   */
  lastGood: string | null;

  private constructor(
    readonly init: TrainerInit,
    readonly exchanger: GradientExchange,
    shape: [number, number, number],
  ) {
    const { gpu, config } = init;
    this.gpu = gpu;
    this.config = config;
    this.tc = config.training;
    this.unet = init.models.unet;
    this.rank = exchanger.rank;
    this.worldSize = exchanger.worldSize;
    this.main = this.rank === 0;
    this.B = this.tc.batch_size;
    this.G = this.B * this.worldSize;
    this.accum = this.tc.gradient_accumulation_steps;
    this.shape = shape;
    this.n = shape[0] * shape[1] * shape[2];

    init.models.textEncoder.requiresGrad(false);
    init.models.vae?.requiresGrad(false);
    this.unet.requiresGrad(true);
    this.unet.checkpointing.on = config.diffusers.gradient_checkpointing;
    this.params = this.unet.namedParameters().map(([, p]) => p);
    this.opt = new AdamW(gpu, this.params, {
      lr: config.optim.lr,
      beta1: config.optim.betas[0],
      beta2: config.optim.betas[1],
      eps: config.optim.eps,
      weightDecay: config.optim.weight_decay,
      gradClip: config.optim.grad_clip,
    });
    this.lam = lrLambda({
      name: config.optim.lr_scheduler,
      warmup: config.optim.warmup * this.accum,
      total: this.tc.num_steps * this.accum,
    });
    this.rngTrain = new CounterRng(config.seed, STREAM_TRAIN);
    this.rngEval = new CounterRng(config.seed, STREAM_EVAL);
    this.rngSample = new CounterRng(config.seed, STREAM_SAMPLE);
    this.checkpointDir = join(init.workdir, "checkpoints");
    this.sampleDir = join(init.workdir, "samples");
    this.lastGood = this.tc.ckpt_path;
    this.result = newTrainResult();
    this.one = keep(Tensor.from(gpu, [1], [1]));
  }

  /** Checks the settings and data, then builds the run (resuming from `training.ckpt_path`). */
  static async create(init: TrainerInit): Promise<Trainer> {
    const { config } = init;
    const schedule: TSchedule = checkTrainConfig(config);
    const B = config.training.batch_size;
    const shape = await checkCompatibility(config, init.models, init.trainData);
    await checkCompatibility(config, init.models, init.evalData, "config.data.eval_root");
    if (init.evalData.length < B) {
      throw new Error(
        `config.data.eval_root (${init.evalData.root}) holds ${init.evalData.length} pairs, ` +
          `fewer than one batch of ${B}`,
      );
    }
    const t = new Trainer(init, init.exchange ?? new LocalExchange(), shape);
    // Workers start from rank 0's weights (identical models give identical steps from there on).
    if (t.worldSize > 1 && config.training.ckpt_path === null) {
      await broadcastWeights(t.params, t.exchanger);
    }
    t.ema = new Ema(t.gpu, t.params, config.ema.decay);
    // Gradients are averaged in buckets, read back as backward completes them (core/distributed/).
    if (t.worldSize > 1) {
      t.buckets = new GradientBuckets(t.gpu, t.params, t.exchanger, init.dist);
    }
    if (t.main) {
      const dirs = { checkpointDir: t.checkpointDir, sampleDir: t.sampleDir };
      ({ log: t.log, tb: t.tb } = await openRunLogs(init, dirs));
    }
    const resumed = await t.resume();
    const sampler = new EpochSampler(init.trainData.length, t.G, config.seed, true);
    t.loader = new ShardLoader(init.trainData, sampler, t.rank, B, resumed.trainData);
    t.objective = await TrainingObjective.create(t.gpu, config, init.models.vae, schedule);
    t.scaler = lossScalerFor(config.training.mixed_precision, t.gpu, resumed.lossScale);
    return t;
  }

  /**
   * Loads `training.ckpt_path` (weights, optimizer, EMA, random generators, data positions) when
   * set; returns where the training data continue and the saved loss scale.
   */
  private async resume(): Promise<Pick<TrainStateJson, "trainData" | "lossScale">> {
    const path = this.tc.ckpt_path;
    if (path === null) return { trainData: { epoch: 0, position: 0 }, lossScale: undefined };
    const s = await loadResumeState(path, this.unet, this.opt, this.ema, this.worldSize);
    this.globalStep = s.step;
    this.rngTrain.load(s.rng.train, "train random generator");
    this.rngEval.load(s.rng.eval, "eval random generator");
    this.rngSample.load(s.rng.sample, "sample random generator");
    this.evalPosition = s.evalPosition;
    this.log?.info(`resumed from ${path} at step ${s.step}`);
    return { trainData: s.trainData, lossScale: s.lossScale };
  }

  /**
   * The loop: optimizer steps until `training.num_steps`, each followed by its log line,
   * evaluation, checkpoint and sample grid when due; stops early after a checkpoint on SIGINT or
   * at `stopAtStep`.
   */
  async run(): Promise<TrainResult> {
    const { tc, main, result } = this;
    const onSigint = () => {
      if (main && !this.stopRequested) {
        this.log?.warn("SIGINT: saving a checkpoint after this step");
      }
      this.stopRequested = true;
    };
    const signals = this.init.handleSignals ?? true;
    if (signals) Deno.addSignalListener("SIGINT", onSigint);
    this.progress = main && (this.init.progress ?? true)
      ? createProgress({ total: tc.num_steps, start: this.globalStep, label: "Steps" })
      : null;
    result.step = this.globalStep;
    this.lastLogTime = performance.now();
    this.lastLogStep = this.globalStep;
    const t0 = performance.now();
    this.logStart();
    try {
      while (this.globalStep < tc.num_steps) {
        const { lr, norm, unscale, stopAfter } = await this.step();
        const step = this.globalStep;
        const last = step === tc.num_steps;
        await this.logStep(lr, norm, unscale, isLogStep(step, tc.log_freq) || last);
        if (main && (isLogStep(step, tc.eval_freq) || last)) await this.evaluate();
        if (main && (step % tc.snapshot_freq === 0 || last || stopAfter)) {
          await this.drainPending(); // a NaN stops before a bad checkpoint is written
          await this.checkpoint();
        }
        if (main && (step % tc.sampling_freq === 0 || last)) await this.drawSamples();
        if (stopAfter && !last) {
          result.interrupted = true;
          this.log?.info(`stopped at step ${step}`);
          break;
        }
      }
      if (main) await this.drainPending();
    } finally {
      if (signals) Deno.removeSignalListener("SIGINT", onSigint);
      this.dispose();
    }
    result.seconds = (performance.now() - t0) / 1000;
    return result;
  }

  private logStart(): void {
    if (!this.main) return;
    const { config, log } = this;
    log!.info(`OBJECTIVE: ${config.training.objective}`);
    log!.info(`REFLOW T SCHEDULE: ${config.reflow.reflow_t_schedule}`);
    log!.info(`LOSS: ${config.reflow.reflow_loss}`);
    log!.info(
      `Starting reflow training loop at step ${this.globalStep} (${this.worldSize} worker(s), ` +
        `${this.G} pairs per micro-batch, ${this.accum} micro-batch(es) per step, ` +
        `${this.unet.numParameters()} parameters).`,
    );
  }

  /**
   * One optimizer step: forward and backward of `accum` micro-batches, the exchange of gradients
   * and losses with the other workers, then the update of the weights and their EMA.
   */
  private async step(): Promise<StepOutcome> {
    const next = this.globalStep + 1;
    const parts: Tensor[] = [];
    for (let a = 0; a < this.accum; a++) parts.push(await this.microBatch(a === this.accum - 1));
    const { loss, stopAfter } = await this.exchange(next, parts);
    const update = await this.update(next);
    this.globalStep = next;
    this.result.step = next;
    this.result.stepsRun++;
    if (loss !== null) this.result.losses.set(next, loss);
    this.init.onStep?.(next);
    return { ...update, stopAfter };
  }

  /**
   * Forward and backward of this worker's share of one micro-batch; returns its loss [1]. Draws
   * per global batch, in this order: times, flips, noise (randz0 = "random"), caption dropout
   * (diffusion), so every worker reads its own slice of the same draws.
   */
  private async microBatch(last: boolean): Promise<Tensor> {
    const { config, tc, rank, B, G, n, rngTrain: rng } = this;
    const [C, H, W] = this.shape;
    const diffusion = this.objective.diffusion;
    const batch = await this.loader.take();
    checkBatchFinite(batch, this.init.trainData.root, "config.data.train_root");
    const tBase = rng.advance(G);
    const flipBase = config.data.random_flip ? rng.advance(G) : -1;
    const noiseBase = tc.randz0 === "random" ? rng.advance(G * n) : -1;
    const dropBase = diffusion ? rng.advance(G) : -1;
    const z0 = noiseBase >= 0 ? rng.normals(noiseBase + rank * B * n, B * n) : batch.z0;
    const z1 = batch.z1;
    if (flipBase >= 0) {
      const flips = Array.from(
        { length: B },
        (_, i) => rng.uniformAt(flipBase + rank * B + i) < 0.5,
      );
      flipRows(z0, flips, C, H, W);
      flipRows(z1, flips, C, H, W);
    }
    const context = this.encode(
      diffusion
        ? diffusion.dropCaptionsAt(batch.captions, rng, dropBase + rank * B)
        : batch.captions,
    );
    const pairs: LossBatch = { z0, z1, shape: [B, C, H, W], context };
    const run = async () => {
      const loss = this.objective.lossAt(this.velocity, rng, tBase + rank * B, pairs);
      await this.backwardFrom(loss, last);
      return loss;
    };
    const loss = await (this.scaler ? withHalfWeightsAsync(this.unet, run) : run());
    context.dispose();
    return loss;
  }

  /**
   * Accumulates the gradient of `loss` (times the fp16 loss scale) into the parameters' `.grad`;
   * the last micro-batch's backward feeds the gradient buckets as it goes.
   */
  private async backwardFrom(loss: Tensor, last: boolean): Promise<void> {
    const buckets = last ? this.buckets : null;
    const seed = this.scaler ? Tensor.from(this.gpu, [this.scaler.scale], [1]) : this.one;
    if (buckets) await buckets.backward([loss], [seed]);
    else backward([loss], [seed]);
    if (seed !== this.one) seed.dispose();
  }

  /**
   * With several workers: the gradients' buckets, then the micro-batch losses and the stop flag,
   * averaged over the workers (the step's loss is then known now). A single worker keeps the
   * losses on the GPU until the next log line reads them back.
   */
  private async exchange(
    next: number,
    parts: Tensor[],
  ): Promise<{ loss: number | null; stopAfter: boolean }> {
    const stopAfter = this.stopRequested || this.init.stopAtStep === next;
    if (!this.buckets) {
      this.pending.push({ step: next, parts });
      return { loss: null, stopAfter };
    }
    const flag = this.main && stopAfter ? this.worldSize : 0;
    const avg = await this.buckets.finish(parts, [flag]);
    let s = 0;
    for (let a = 0; a < this.accum; a++) s += avg[a];
    const loss = s / this.accum;
    this.checkFinite(next, loss);
    for (const t of parts) t.dispose();
    return { loss, stopAfter: avg[this.accum] > 0.5 };
  }

  /**
   * The optimizer step with the scheduled LR, then the EMA. Gradients carry the loss scale under
   * fp16: unscale, and skip a step that overflowed (the optimizer, its LR schedule and the EMA
   * then stay where they are, as with GradScaler).
   */
  private async update(next: number): Promise<Omit<StepOutcome, "stopAfter">> {
    const { opt, scaler, accum } = this;
    const lr = this.config.optim.lr * this.lam(opt.step);
    let norm: Tensor;
    let applied = true;
    const unscale = scaler ? 1 / scaler.scale : 1;
    if (scaler) {
      norm = opt.gradNorm();
      applied = scaler.update(Number.isFinite((await norm.toF32())[0]));
      if (applied) opt.update(lr, unscale / accum, norm);
      else {
        this.log?.info(
          `step ${next} | fp16 gradients overflowed: skipped, loss scale ${scaler.scale}`,
        );
      }
    } else norm = opt.update(lr, 1 / accum);
    if (applied) this.ema.update();
    zeroGrads(this.params);
    return { lr, norm, unscale };
  }

  /** The log line and TensorBoard scalars of a log step (main worker), else the progress bar. */
  private async logStep(lr: number, norm: Tensor, unscale: number, logNow: boolean): Promise<void> {
    const step = this.globalStep;
    if (this.main && logNow) {
      const gn = (await norm.toF32())[0] * unscale / this.accum;
      await this.drainPending();
      const loss = this.result.losses.get(step)!;
      const now = performance.now();
      const sps = (step - this.lastLogStep) / Math.max(1e-9, (now - this.lastLogTime) / 1000);
      this.lastLogTime = now;
      this.lastLogStep = step;
      this.log!.info(`step ${step} | training_loss ${loss.toFixed(5)}`);
      const tb = this.tb!;
      tb.addScalar("training_loss", loss, step);
      tb.addScalar("lr", lr, step);
      tb.addScalar("grad_norm", gn, step);
      tb.addScalar("steps_per_sec", sps, step);
      this.progress?.update(step, { loss: loss.toFixed(5) });
    } else this.progress?.update(step);
    norm.dispose();
  }

  /** The loss of the EMA weights on the next eval batch, logged; non-finite stops the run. */
  private async evaluate(): Promise<void> {
    const step = this.globalStep;
    const ev = await this.evalLoss();
    if (!Number.isFinite(ev)) {
      // The eval pairs are finite (checked), so the EMA weights have diverged.
      throw new Error(
        `eval loss is ${ev} at step ${step} (EMA weights on finite eval pairs); stopping. ` +
          this.lastGoodText(),
      );
    }
    this.result.evalLosses.set(step, ev);
    this.log!.info(`step ${step} | eval_loss ${ev.toFixed(5)}`);
    this.tb!.addScalar("eval_loss", ev, step);
  }

  private async evalLoss(): Promise<number> {
    const { B, rngEval } = this;
    const batch = await this.evalBatch();
    checkBatchFinite(batch, this.init.evalData.root, "config.data.eval_root");
    const context = this.encode(batch.captions);
    try {
      const base = rngEval.advance(B);
      const pairs: LossBatch = { z0: batch.z0, z1: batch.z1, shape: [B, ...this.shape], context };
      return await this.ema.withAverage(async () => {
        const loss = noGrad(() => this.objective.lossAt(this.velocity, rngEval, base, pairs));
        try {
          return (await loss.toF32())[0];
        } finally {
          loss.dispose();
        }
      });
    } finally {
      context.dispose();
    }
  }

  /** The next batch of the eval data, in order, cycling. */
  private async evalBatch(): Promise<PairBatch> {
    const { B } = this;
    const nb = Math.floor(this.init.evalData.length / B);
    const p = this.evalPosition % nb;
    this.evalPosition++;
    return await this.init.evalData.getBatch(Array.from({ length: B }, (_, i) => p * B + i));
  }

  /**
   * A grid of samples of the EMA weights from the next eval batch's captions (and its z0, or fresh
   * noise with `sampling.randz0 = "random"`), written to `samples/sample_s{step}.png`; the latents
   * become images as the sample job draws them (core/flow/images.ts).
   */
  private async drawSamples(): Promise<void> {
    const { B, n, config, rngSample } = this;
    const batch = await this.evalBatch();
    const context = this.encode(batch.captions);
    try {
      const z0 = config.sampling.randz0 === "random"
        ? rngSample.normals(rngSample.advance(B * n), B * n)
        : batch.z0;
      const grid = { ...this.init.models, gpu: this.gpu, diffusion: this.objective.diffusion };
      const latents = await this.ema.withAverage(() =>
        gridSamples(grid, config, batch.captions, context, z0, this.shape)
      );
      const path = join(this.sampleDir, `sample_s${this.globalStep}.png`);
      await writeGrid(grid, latents, this.shape, path);
      this.log?.info(`step ${this.globalStep} | samples written to ${path}`);
    } finally {
      context.dispose();
    }
  }

  /** Saves `checkpoint_s{step}` (the full state) and `score_model_s{step}` (the EMA weights). */
  private async checkpoint(): Promise<void> {
    const step = this.globalStep;
    const dir = join(this.checkpointDir, checkpointName(step));
    try {
      await saveTrainState(dir, this.unet, this.opt, this.ema, {
        step,
        rng: {
          train: this.rngTrain.state(),
          eval: this.rngEval.state(),
          sample: this.rngSample.state(),
        },
        trainData: this.loader.next,
        evalPosition: this.evalPosition,
        worldSize: this.worldSize,
        config: this.config,
        lossScale: this.scaler?.state(),
      });
    } catch (e) {
      if (!(e instanceof NonFiniteStateError)) throw e;
      throw new Error(
        `training diverged by step ${step} (${e.message}); stopping. ${this.lastGoodText()}`,
        { cause: e },
      );
    }
    this.lastGood = dir;
    await this.ema.withAverage(() =>
      saveModule(this.unet, join(this.checkpointDir, scoreModelName(step)), {
        // The sample job and flow teachers read the orientation the student was trained with.
        metadata: scoreModelMetadata(step, this.tc.timestep_orientation),
      })
    );
    this.result.lastCheckpoint = dir;
    this.log?.info(`step ${step} | saved ${dir} and ${scoreModelName(step)} (EMA)`);
  }

  /** Reads back the losses of the steps since the last read, checking each is finite. */
  private async drainPending(): Promise<void> {
    const { pending } = this;
    if (!pending.length) return;
    const all = pending.flatMap((p) => p.parts);
    const vals = await readMany(all);
    let k = 0;
    for (const p of pending) {
      let s = 0;
      for (let i = 0; i < p.parts.length; i++) s += vals[k++][0];
      const v = s / p.parts.length;
      this.checkFinite(p.step, v);
      this.result.losses.set(p.step, v);
    }
    for (const t of all) t.dispose();
    this.pending = [];
  }

  private checkFinite(step: number, v: number): void {
    if (!Number.isFinite(v)) {
      throw new Error(`training loss is ${v} at step ${step}; stopping. ${this.lastGoodText()}`);
    }
  }

  private lastGoodText(): string {
    return `The last good checkpoint is ${this.lastGood ?? "(none: no checkpoint was written)"}`;
  }

  /**
   * The captions' hidden states, kept past `tidy` scopes (the caller disposes them): the same
   * states the teacher saw (core/flow/captions.ts).
   */
  private encode(captions: string[]): Tensor {
    const { tokenizer, textEncoder } = this.init.models;
    return keep(encodeCaptions(tokenizer, textEncoder, captions));
  }

  /** Releases what the run holds on the GPU and closes its logs. */
  private dispose(): void {
    for (const p of this.pending) for (const t of p.parts) t.dispose();
    this.progress?.stop();
    this.tb?.close();
    this.log?.close();
    this.one.dispose();
    this.objective.dispose();
    this.opt.dispose();
    this.ema.dispose();
    for (const p of this.params) {
      p.grad?.dispose();
      p.grad = null;
    }
  }
}

/** Runs (or resumes) training; see {@link Trainer}. */
export async function runTraining(init: TrainerInit): Promise<TrainResult> {
  const trainer = await Trainer.create(init);
  return await trainer.run();
}
