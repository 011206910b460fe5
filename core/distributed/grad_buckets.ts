/// <reference types="@webgpu/types" />
/**
 * Bucketed gradient exchange, as PyTorch's DDP does it: the parameters are grouped into buckets of
 * about `bucketBytes` (25 MB by default) in the order their gradients become final during
 * backward; each bucket is read back and averaged over the workers as a unit, and the averages are
 * written back into `.grad`.
 *
 * With `overlap`, a bucket's copy to its staging buffer is recorded and submitted from the
 * autograd hook the moment its last gradient is final (core/tensor/autograd.ts), in the middle of
 * backward, instead of after it. Its read-back and exchange then start as soon as the backward
 * recording returns, and each bucket's exchange (on MPI a native thread, on TCP the socket) runs
 * while the next buckets are copied out of their staging buffers and the previous ones are written
 * back. What cannot overlap in Deno 2.9: `mapAsync` polls the device with `Maintain::Wait` on the
 * JavaScript thread (ext/webgpu/buffer.rs), so no bucket reaches the host before every piece of
 * GPU work submitted so far has finished, and backward's recording cannot pause to wait for one;
 * the exchange therefore overlaps the host-side work of other buckets, not backward's GPU work.
 * docs/benchmarks.md has the measured step times.
 *
 * The first step groups the parameters in reverse registration order and records the order in
 * which their gradients become final; later steps use buckets built from that order (every rank
 * runs the same graph, so every rank builds the same buckets).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu } from "../gpu/device.ts";
 * import { mul, sum } from "../ops.ts";
 * import { backward } from "../tensor/autograd.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { connectWorker, listenHub } from "./allreduce.ts";
 *
 * const gpu = await Gpu.open();
 * // Two ranks; rank 1 is normally another process (see allreduce.ts), here it runs alongside.
 * const hub = listenHub(2);
 * const exchanges = await Promise.all([hub.accept(), connectWorker(hub.port, 1, 2)]);
 * const data = [[1, 0, 2], [3, 4, 0]]; // each rank's batch x: loss = sum(w * x), d loss / d w = x
 * const one = Tensor.from(gpu, [1], [1]);
 * const steps = exchanges.map((exchange, rank) => {
 *   const w = Tensor.from(gpu, [0.5, -1, 2], [3]); // the model's one parameter
 *   w.requiresGrad = true;
 *   const buckets = new GradientBuckets(gpu, [w], exchange, { overlap: true });
 *   const loss = sum(mul(w, Tensor.from(gpu, data[rank], [3])), [0], true);
 *   buckets.backward(() => backward([loss], [one]));
 *   return { w, done: buckets.finish([loss], []) }; // averages .grad over the ranks, and the loss
 * });
 * const [[meanLoss]] = await Promise.all(steps.map((s) => s.done));
 * assert.equal(meanLoss, (4.5 + -2.5) / 2);
 * assert.deepEqual([...await steps[1].w.grad!.toF32()], [2, 2, 1]); // the mean of the two x
 * exchanges.forEach((ex) => ex.close());
 * ```
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { keep } from "../tensor/scope.ts";
import { withGradFinalHook } from "../tensor/autograd.ts";
import { fill } from "../ops.ts";
import { f16BitsToF32 } from "../io/half.ts";
import type { GradientExchange, Transport } from "./allreduce.ts";

/** Options of {@link GradientBuckets}. */
export interface BucketOptions {
  /** Bytes of f32 gradients per bucket (default 25 MiB, DDP's bucket_cap_mb). */
  bucketBytes?: number;
  /** Wire format of the gradients (default f32). */
  transport?: Transport;
  /** Start each bucket's read-back from backward as soon as it is complete (default true). */
  overlap?: boolean;
}

/** Timings of the last {@link GradientBuckets.finish} (milliseconds), for benchmarks and logs. */
export interface BucketTimings {
  /** From the end of backward's recording until every bucket was averaged and written back. */
  syncMs: number;
  buckets: number;
  /** Buckets whose copy was submitted from inside backward. */
  launchedDuringBackward: number;
}

interface Launched {
  bucket: number;
  staging: GPUBuffer;
  bytes: number;
}

export const DEFAULT_BUCKET_BYTES = 25 * 1024 * 1024;

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
  // Per step:
  private final: boolean[] = [];
  private finalCount: number[] = [];
  private nextLaunch = 0;
  private launched: Launched[] = [];
  private duringBackward = 0;
  private inBackward = false;
  lastTimings: BucketTimings = { syncMs: 0, buckets: 0, launchedDuringBackward: 0 };

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
  }

  /**
   * Runs `fn`, the backward of the last micro-batch of a step; with `overlap`, buckets are
   * submitted for read-back from inside it as they complete.
   */
  backward<T>(fn: () => T): T {
    if (!this.overlap && this.rebuilt) return fn();
    this.inBackward = true;
    try {
      return withGradFinalHook((leaf) => this.onFinal(leaf), fn);
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

  /** Records the copy of a bucket's gradients into a staging buffer and submits it. */
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
    // Submit now: the copy runs as soon as the GPU gets there, not after the rest of backward.
    this.gpu.flush();
    this.launched.push({ bucket: b, staging, bytes });
    if (this.inBackward) this.duringBackward++;
  }

  private readonly noGrad = new Set<number>();

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
    this.gpu.flush();

    // All maps at once: the first one waits for the GPU, the others are then ready (each map
    // costs Deno a 10 ms poll interval, paid once when they run together).
    const maps = this.launched.map((l) => l.staging.mapAsync(GPUMapMode.READ));
    const extraMap = extraStaging.mapAsync(GPUMapMode.READ);
    const reduced: Promise<void>[] = [];
    try {
      for (let k = 0; k < this.launched.length; k++) {
        const l = this.launched[k];
        await maps[k];
        const host = new Float32Array(l.staging.getMappedRange().slice(0));
        l.staging.unmap();
        // Started, not awaited: the next bucket is copied out while this one travels.
        reduced.push(
          this.exchange.allReduceMean(host, { transport: this.transport }).then((avg) =>
            this.writeBack(l.bucket, avg)
          ),
        );
      }
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
      await Promise.all(reduced);
      const out = await extrasAvg;
      this.lastTimings = {
        syncMs: performance.now() - t0,
        buckets: this.launched.length,
        launchedDuringBackward: this.duringBackward,
      };
      return out;
    } finally {
      await Promise.allSettled([...maps, extraMap, ...reduced]);
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
