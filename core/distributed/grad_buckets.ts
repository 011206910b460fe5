/// <reference types="@webgpu/types" />
/**
 * Bucketed gradient exchange, as PyTorch's DDP does it: the parameters are grouped into buckets of
 * about `bucketBytes` (25 MB by default) in the order their gradients become final during
 * backward; each bucket is read back and averaged over the workers as a unit, and the averages are
 * written back into `.grad`.
 *
 * With `overlap` (the default), backward runs as a pipeline of segments, one per bucket. When a
 * bucket's last gradient is final (the autograd hook, core/tensor/autograd.ts), its copy to a
 * staging buffer is recorded and backward pauses: the read-back of the bucket completed one pause
 * earlier is requested, then the new segment (the backward work since that pause, ending with the
 * copy) is submitted, then the exchanges of earlier buckets whose read-backs are done start, and
 * backward's recording goes on while the GPU runs the segment and the exchange travels (MPI on a
 * native thread, TCP on the socket). The order is forced by Deno 2.9: `mapAsync` blocks the
 * JavaScript thread until every piece of GPU work submitted so far is done
 * (`device_poll(Maintain::wait())`, ext/webgpu/buffer.rs) and resolves 10 ms later, so a read-back
 * is requested just before the next segment is submitted (it then waits for its own segment only)
 * and used at a later pause once those 10 ms have passed (waiting for them would stall backward's
 * recording). Each pause costs a submit and a wait for the GPU, so buckets should stay large.
 * Without overlap every bucket is copied out and exchanged after backward.
 *
 * The first step groups the parameters in reverse registration order and records the order in
 * which their gradients become final; later steps use buckets built from that order (every rank
 * runs the same graph, so every rank builds the same buckets, and exchanges them in the same order).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu } from "../gpu/device.ts";
 * import { mul, sum } from "../ops.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { connectWorker, listenHub } from "./allreduce.ts";
 *
 * const gpu = await Gpu.open();
 * // Two ranks; rank 1 is normally another process (see allreduce.ts), here it runs alongside.
 * const hub = listenHub(2);
 * const exchanges = await Promise.all([hub.accept(), connectWorker(hub.port, 1, 2)]);
 * const data = [[1, 0, 2], [3, 4, 0]]; // each rank's batch x: loss = sum(w * x), d loss / d w = x
 * const one = Tensor.from(gpu, [1], [1]);
 * const steps = exchanges.map(async (exchange, rank) => {
 *   const w = Tensor.from(gpu, [0.5, -1, 2], [3]); // the model's one parameter
 *   w.requiresGrad = true;
 *   const buckets = new GradientBuckets(gpu, [w], exchange, { overlap: true });
 *   const loss = sum(mul(w, Tensor.from(gpu, data[rank], [3])), [0], true);
 *   await buckets.backward([loss], [one]);
 *   const [meanLoss] = await buckets.finish([loss], []); // averages .grad and the loss
 *   return { w, meanLoss };
 * });
 * const [r0, r1] = await Promise.all(steps);
 * assert.equal(r0.meanLoss, (4.5 + -2.5) / 2);
 * assert.deepEqual([...await r1.w.grad!.toF32()], [2, 2, 1]); // the mean of the two x
 * exchanges.forEach((ex) => ex.close());
 * ```
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { keep } from "../tensor/scope.ts";
import { backward, backwardAsync, withGradFinalHook } from "../tensor/autograd.ts";
import { fill } from "../ops.ts";
import { f16BitsToF32 } from "../io/half.ts";
import type { GradientExchange, Transport } from "./allreduce.ts";

/** Options of {@link GradientBuckets}. */
export interface BucketOptions {
  /** Bytes of f32 gradients per bucket (default 25 MiB, DDP's bucket_cap_mb). */
  bucketBytes?: number;
  /** Wire format of the gradients (default f32). */
  transport?: Transport;
  /** Exchange buckets while backward still runs, as a pipeline (module notes; default true). */
  overlap?: boolean;
}

/** Timings of the last {@link GradientBuckets.finish} (milliseconds), for benchmarks and logs. */
export interface BucketTimings {
  /** From the end of backward's recording until every bucket was averaged and written back. */
  syncMs: number;
  buckets: number;
  /** Buckets whose copy was recorded from inside backward. */
  launchedDuringBackward: number;
  /** Buckets whose exchange started before backward returned. */
  exchangedDuringBackward: number;
}

/** A bucket whose copy to its staging buffer has been recorded. */
interface Launched {
  bucket: number;
  staging: GPUBuffer;
  /** The copy has been submitted to the GPU queue. */
  submitted: boolean;
  /** The read-back, once requested: at which pause and when (ms), and whether it resolved. */
  map?: Promise<void>;
  mappedAt?: number;
  mapTime?: number;
  mapped?: boolean;
  /** The exchange, once started. */
  mean?: Promise<Float32Array>;
}

export const DEFAULT_BUCKET_BYTES = 25 * 1024 * 1024;

/** Deno resolves a `mapAsync` this long after the GPU work it waited for (ext/webgpu/buffer.rs). */
const MAP_RESOLVE_MS = 10;

/** Keeps a promise that is awaited later from being reported as unhandled in the meantime. */
function awaitedLater<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

/** See the module notes. */
export class GradientBuckets {
  private buckets: number[][];
  private readonly index = new Map<Tensor, number>();
  private bucketOf: number[] = [];
  private readonly bucketBytes: number;
  readonly transport: Transport;
  readonly overlap: boolean;
  /** Order in which gradients became final during the first step (parameter indices). */
  private observed: number[] = [];
  private rebuilt = false;
  private readonly noGrad = new Set<number>();
  // Per step:
  private final: boolean[] = [];
  private finalCount: number[] = [];
  private nextLaunch = 0;
  private launched: Launched[] = [];
  private duringBackward = 0;
  private exchangedEarly = 0;
  private inBackward = false;
  /** A bucket was launched since the last pause of backward. */
  private segmentEnds = false;
  private pauses = 0;
  lastTimings: BucketTimings = {
    syncMs: 0,
    buckets: 0,
    launchedDuringBackward: 0,
    exchangedDuringBackward: 0,
  };

  constructor(
    private readonly gpu: Gpu,
    private readonly params: Tensor[],
    private readonly exchange: GradientExchange,
    opts: BucketOptions = {},
  ) {
    this.bucketBytes = opts.bucketBytes ?? DEFAULT_BUCKET_BYTES;
    if (!(this.bucketBytes >= 4)) {
      throw new Error(
        `--bucket_mb: a bucket must hold at least one value, got ${this.bucketBytes} bytes`,
      );
    }
    this.transport = opts.transport ?? "f32";
    this.overlap = opts.overlap ?? true;
    params.forEach((p, i) => this.index.set(p, i));
    this.buckets = this.group(params.map((_, i) => params.length - 1 - i));
    this.resetStep();
  }

  /** The buckets (parameter indices), in exchange order. */
  get layout(): readonly (readonly number[])[] {
    return this.buckets;
  }

  /** Groups parameter indices, in `order`, into buckets of <= bucketBytes (a larger tensor alone). */
  private group(order: number[]): number[][] {
    const out: number[][] = [];
    let cur: number[] = [];
    let bytes = 0;
    for (const i of order) {
      const b = this.params[i].size * 4;
      if (cur.length && bytes + b > this.bucketBytes) {
        out.push(cur);
        cur = [];
        bytes = 0;
      }
      cur.push(i);
      bytes += b;
    }
    if (cur.length) out.push(cur);
    this.bucketOf = new Array(this.params.length);
    out.forEach((ids, b) => ids.forEach((i) => (this.bucketOf[i] = b)));
    return out;
  }

  private resetStep(): void {
    this.final = new Array(this.params.length).fill(false);
    this.finalCount = new Array(this.buckets.length).fill(0);
    this.nextLaunch = 0;
    this.launched = [];
    this.duringBackward = 0;
    this.exchangedEarly = 0;
    this.segmentEnds = false;
    this.pauses = 0;
  }

  /**
   * The backward of the last micro-batch of a step (as autograd's `backward(roots, grads)`); with
   * `overlap`, buckets are exchanged while it runs.
   */
  async backward(roots: Tensor[], grads: Tensor[]): Promise<void> {
    if (!this.overlap) {
      // The first step still learns the order in which gradients become final.
      if (this.rebuilt) backward(roots, grads);
      else withGradFinalHook((leaf) => this.onFinal(leaf), () => backward(roots, grads));
      return;
    }
    this.inBackward = true;
    try {
      await backwardAsync(roots, grads, {
        onFinal: (leaf) => this.onFinal(leaf),
        pause: () => this.pause(),
      });
    } finally {
      this.inBackward = false;
    }
  }

  private onFinal(leaf: Tensor): void {
    const i = this.index.get(leaf);
    if (i === undefined) return; // an activation leaf of a checkpointed block
    if (this.final[i]) {
      throw new Error(
        `parameter ${i} ${JSON.stringify(leaf.shape)} received more gradient after it was final ` +
          `(is it used in two checkpointed blocks?); run without overlap (--no_overlap)`,
      );
    }
    this.final[i] = true;
    if (!this.rebuilt) this.observed.push(i);
    if (!this.overlap) return;
    this.finalCount[this.bucketOf[i]]++;
    this.launchReady();
  }

  /** Launches buckets in exchange order while the next one is complete. */
  private launchReady(): void {
    while (
      this.nextLaunch < this.buckets.length &&
      this.finalCount[this.nextLaunch] === this.buckets[this.nextLaunch].length
    ) {
      this.launch(this.nextLaunch++);
    }
  }

  /** Records the copy of a bucket's gradients into a staging buffer (submitted at the pause). */
  private launch(b: number): void {
    const ids = this.buckets[b];
    let bytes = 0;
    for (const i of ids) {
      const p = this.params[i];
      if (!p.grad) {
        // No gradient on this rank (nor on any: every rank runs the same graph): zeros travel.
        p.grad = keep(Tensor.empty(this.gpu, p.shape));
        fill(p.grad, 0);
        this.noGrad.add(i);
      }
      if (p.grad.dtype !== "f32") {
        throw new Error(`gradient of parameter ${i} is ${p.grad.dtype}; the exchange needs f32`);
      }
      bytes += p.size * 4;
    }
    const staging = this.gpu.device.createBuffer({
      size: Math.max(4, bytes),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      label: `grad-bucket-${b}`,
    });
    let off = 0;
    for (const i of ids) {
      const g = this.params[i].grad!;
      this.gpu.copy(g.buffer, 0, staging, off, g.size * 4);
      off += g.size * 4;
    }
    this.launched.push({ bucket: b, staging, submitted: false });
    if (this.inBackward) {
      this.duringBackward++;
      this.segmentEnds = true;
    }
  }

  /** Asked by backward after every node: a bucket launched since the last pause ends a segment. */
  private pause(): Promise<void> | undefined {
    if (!this.segmentEnds) return undefined;
    this.segmentEnds = false;
    return this.endSegment();
  }

  /** The three moves of a pause, in the order the module notes explain. */
  private async endSegment(): Promise<void> {
    this.pauses++;
    this.requestReadBacks();
    this.submitSegment();
    // Started in bucket order, as on every rank: stop at the first one not yet ready to start.
    // A read-back requested less than Deno's 10 ms ago waits for a later pause: waiting for it
    // here would stall the recording of backward when buckets are small.
    for (const l of this.launched) {
      if (l.mean) continue;
      if (!l.map || l.mappedAt! >= this.pauses) break;
      if (!l.mapped && performance.now() - l.mapTime! < MAP_RESOLVE_MS) break;
      await this.startExchange(l);
      this.exchangedEarly++;
    }
  }

  /** Read-backs of every submitted bucket (mapAsync first waits for the GPU work submitted so far). */
  private requestReadBacks(): void {
    for (const l of this.launched) {
      if (l.submitted && !l.map) {
        l.map = awaitedLater(l.staging.mapAsync(GPUMapMode.READ));
        l.map.then(() => (l.mapped = true), () => {});
        l.mappedAt = this.pauses;
        l.mapTime = performance.now();
      }
    }
  }

  private submitSegment(): void {
    this.gpu.flush();
    for (const l of this.launched) l.submitted = true;
  }

  /** Copies a read-back bucket to the host and starts its exchange (not awaited here). */
  private async startExchange(l: Launched): Promise<void> {
    await l.map;
    const host = new Float32Array(l.staging.getMappedRange().slice(0));
    l.staging.unmap();
    l.mean = awaitedLater(this.exchange.allReduceMean(host, { transport: this.transport }));
  }

  /**
   * After the step's backward: launches what is left, averages every bucket and `extras` over the
   * workers (the extras are 1-element tensors, such as the losses, then plain numbers such as a
   * stop flag, averaged in f32), writes the averaged gradients back into `.grad`, and returns the
   * averaged extras.
   */
  async finish(extraTensors: Tensor[], extraValues: number[]): Promise<Float32Array> {
    const t0 = performance.now();
    for (let i = 0; i < this.params.length; i++) {
      if (!this.final[i]) {
        this.final[i] = true;
        if (!this.rebuilt) this.observed.push(i);
      }
    }
    for (let b = 0; b < this.buckets.length; b++) this.finalCount[b] = this.buckets[b].length;
    this.launchReady();
    // Extras ride in their own small staging buffer, submitted last.
    const extraStaging = this.gpu.device.createBuffer({
      size: Math.max(4, extraTensors.length * 4),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      label: "grad-extras",
    });
    extraTensors.forEach((t, k) => {
      if (t.size !== 1) throw new Error(`exchange extras must be scalars, got [${t.shape}]`);
      this.gpu.copy(t.buffer, 0, extraStaging, k * 4, 4); // an f16 scalar's buffer is padded to 4
    });
    this.submitSegment();
    // The remaining maps at once: the first one waits for the GPU, the others are then ready (each
    // costs Deno a 10 ms poll interval, paid once when they run together).
    this.requestReadBacks();
    const extraMap = awaitedLater(extraStaging.mapAsync(GPUMapMode.READ));
    try {
      for (const l of this.launched) if (!l.mean) await this.startExchange(l);
      await extraMap;
      const extra = new Float32Array(extraTensors.length + extraValues.length);
      const raw = extraStaging.getMappedRange().slice(0, extraTensors.length * 4);
      extraTensors.forEach((t, k) => {
        extra[k] = t.dtype === "f16"
          ? f16BitsToF32(new Uint16Array(raw, k * 4, 1))[0]
          : new Float32Array(raw, k * 4, 1)[0];
      });
      extraStaging.unmap();
      extra.set(extraValues, extraTensors.length);
      // f32 on the wire: the extras are the loss and control flags.
      const extrasAvg = this.exchange.allReduceMean(extra);
      for (const l of this.launched) this.writeBack(l.bucket, await l.mean!);
      const out = await extrasAvg;
      this.lastTimings = {
        syncMs: performance.now() - t0,
        buckets: this.launched.length,
        launchedDuringBackward: this.duringBackward,
        exchangedDuringBackward: this.exchangedEarly,
      };
      return out;
    } finally {
      await Promise.allSettled([
        ...this.launched.flatMap((l) => [l.map, l.mean]).filter((p) => p),
        extraMap,
      ]);
      for (const l of this.launched) l.staging.destroy();
      extraStaging.destroy();
      this.afterStep();
    }
  }

  private writeBack(b: number, avg: Float32Array): void {
    let off = 0;
    for (const i of this.buckets[b]) {
      const g = this.params[i].grad!;
      this.gpu.write(g.buffer, 0, avg.subarray(off, off + g.size));
      off += g.size;
    }
  }

  private afterStep(): void {
    // Parameters without a gradient on every rank get none, as with one worker (AdamW skips them).
    for (const i of this.noGrad) {
      this.params[i].grad?.dispose();
      this.params[i].grad = null;
    }
    this.noGrad.clear();
    if (!this.rebuilt) {
      this.rebuilt = true;
      this.buckets = this.group(this.observed);
    }
    this.resetStep();
  }
}
