/**
 * The training batches of one worker: its shard of successive global batches of the epoch
 * sampler, read ahead two batches deep so that disk reads overlap the GPU work, and the random
 * horizontal flip applied to them.
 *
 * @module
 */

import type { EpochSampler, PairBatch, PairDataset } from "../data/dataset.ts";
import type { DataPosition } from "./train_state.ts";

/** This worker's shard of successive global batches, read ahead (depth 2). */
export class ShardLoader {
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
export function flipRows(x: Float32Array, flip: boolean[], C: number, H: number, W: number): void {
  const n = C * H * W;
  flip.forEach((f, b) => {
    if (!f) return;
    for (let r = 0; r < C * H; r++) {
      const o = b * n + r * W;
      x.subarray(o, o + W).reverse();
    }
  });
}
