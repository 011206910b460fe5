/**
 * The training data set: (z0, z1, caption) triples from a pair folder (npy files or LMDB), or
 * from several `part*` folders concatenated in part-number order; a seeded, resumable epoch
 * sampler; and a prefetching batch iterator.
 *
 * @module
 */

import { join } from "node:path";
import { readCaptions } from "./captions.ts";
import { f16BitsToF32 as halfBitsToFloat32 } from "../io/half.ts";
import type { NpyArray } from "./npy.ts";
import { openLmdbPairStore, openNpyPairStore, pairPaths, type PairStore } from "./pair_store.ts";
import { PythonRandom } from "./python_random.ts";

/** Which storage to read: npy files, the LMDB database, or LMDB when present else npy. */
export type PairSource = "npy" | "lmdb" | "auto";

/** One training example. z0 is the noise, z1 the teacher's latent, both float32 [C, H, W]. */
export interface PairExample {
  z0: Float32Array;
  z1: Float32Array;
  shape: [number, number, number];
  caption: string;
}

/** A batch: z0 and z1 are [B, C, H, W] float32, captions[b] belongs to row b. */
export interface PairBatch {
  indices: number[];
  z0: Float32Array;
  z1: Float32Array;
  shape: [number, number, number];
  captions: string[];
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

interface Part {
  root: string;
  store: PairStore;
  captions: string[];
  offset: number;
}

async function openPart(root: string, source: PairSource): Promise<Part> {
  const paths = pairPaths(root);
  const captions = await readCaptions(paths.captions);
  const useLmdb = source === "lmdb" || (source === "auto" && (await exists(paths.lmdb)));
  let store: PairStore;
  if (useLmdb) {
    store = await openLmdbPairStore(paths.lmdb);
    if (captions.length < store.length) {
      await store.close();
      throw new Error(
        `${paths.captions} has ${captions.length} captions but ${paths.lmdb} holds ${store.length} pairs`,
      );
    }
  } else {
    // As the original: the caption count is the pair count.
    store = openNpyPairStore(paths.images, captions.length);
  }
  return { root, store, captions, offset: 0 };
}

/** Pairs of one data root, read on demand. */
export class PairDataset {
  /** Total number of pairs over all parts. */
  readonly length: number;

  /** @internal use {@link openPairDataset} */
  constructor(readonly root: string, private readonly parts: Part[]) {
    let offset = 0;
    for (const p of parts) {
      p.offset = offset;
      offset += p.store.length;
    }
    this.length = offset;
  }

  /** Roots of the parts, in the order they are concatenated. */
  get partRoots(): string[] {
    return this.parts.map((p) => p.root);
  }

  #locate(i: number): { part: Part; local: number } {
    if (!Number.isInteger(i) || i < 0 || i >= this.length) {
      throw new Error(`${this.root}: pair index ${i} out of range [0, ${this.length})`);
    }
    let lo = 0;
    let hi = this.parts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.parts[mid].offset <= i) lo = mid;
      else hi = mid - 1;
    }
    const part = this.parts[lo];
    return { part, local: i - part.offset };
  }

  /** Pair i with its caption; float16 data is widened to float32. */
  async get(i: number): Promise<PairExample> {
    const { part, local } = this.#locate(i);
    const arr: NpyArray = await part.store.readPair(local);
    const [, c, h, w] = arr.shape;
    const n = c * h * w;
    const all = arr.dtype === "<f2"
      ? halfBitsToFloat32(arr.data as Uint16Array)
      : (arr.data as Float32Array);
    return {
      z0: all.slice(0, n),
      z1: all.slice(n, 2 * n),
      shape: [c, h, w],
      caption: part.captions[local],
    };
  }

  /** Several pairs stacked into [B, C, H, W] arrays (all must share one shape). */
  async getBatch(indices: readonly number[]): Promise<PairBatch> {
    if (indices.length === 0) throw new Error("getBatch: no indices");
    const items = await Promise.all(indices.map((i) => this.get(i)));
    const shape = items[0].shape;
    const n = shape[0] * shape[1] * shape[2];
    const z0 = new Float32Array(n * items.length);
    const z1 = new Float32Array(n * items.length);
    items.forEach((it, b) => {
      if (it.shape.some((d, j) => d !== shape[j])) {
        throw new Error(
          `${this.root}: pair ${indices[b]} has shape [${it.shape}], pair ${
            indices[0]
          } has [${shape}]`,
        );
      }
      z0.set(it.z0, b * n);
      z1.set(it.z1, b * n);
    });
    return { indices: [...indices], z0, z1, shape, captions: items.map((it) => it.caption) };
  }

  /** Releases open databases. */
  async close(): Promise<void> {
    await Promise.all(this.parts.map((p) => p.store.close()));
  }
}

/**
 * Opens the pairs under `root`: the root itself when it has `index.json`, else every `part*`
 * folder below it, concatenated in part-number order (part2 before part10). A part without
 * `index.json` or captions is skipped with a warning, as the original skips unreadable parts.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { writeTinyPairs } from "../bench/tiny_setup.ts";
 *
 * // a data root generated in two parts (`generate` with save_dir .../part1, .../part2)
 * const root = await Deno.makeTempDir();
 * await writeTinyPairs(`${root}/part1`, 3); // [2, 4, 8, 8] pairs captioned "caption {i}"
 * await writeTinyPairs(`${root}/part2`, 2);
 * const ds = await openPairDataset(root);
 * assert.equal(ds.length, 5);
 * const { z0, z1, shape, caption } = await ds.get(3); // part2's pair 0
 * assert.deepEqual(shape, [4, 8, 8]);
 * assert.equal(caption, "caption 0");
 * assert.equal(z0.length, 4 * 8 * 8);
 * assert.equal(z1.length, z0.length);
 * await ds.close();
 * await Deno.remove(root, { recursive: true });
 * ```
 */
export async function openPairDataset(
  root: string,
  options: { source?: PairSource } = {},
): Promise<PairDataset> {
  const source = options.source ?? "auto";
  if (await exists(pairPaths(root).index)) {
    return new PairDataset(root, [await openPart(root, source)]);
  }
  const partDirs: { n: number; path: string }[] = [];
  try {
    for await (const e of Deno.readDir(root)) {
      const m = /^part(\d+)$/.exec(e.name);
      if (m && e.isDirectory) partDirs.push({ n: Number(m[1]), path: join(root, e.name) });
    }
  } catch (err) {
    throw new Error(`pair data root ${root} cannot be read: ${(err as Error).message}`, {
      cause: err,
    });
  }
  partDirs.sort((a, b) => a.n - b.n);
  const parts: Part[] = [];
  for (const { path } of partDirs) {
    const paths = pairPaths(path);
    if (!(await exists(paths.index)) || !(await exists(paths.captions))) {
      console.warn(`${path}: no index.json or captions.txt, part skipped`);
      continue;
    }
    parts.push(await openPart(path, source));
  }
  if (parts.length === 0) {
    throw new Error(`${root}: no index.json and no usable part* folders (expected pair data)`);
  }
  return new PairDataset(root, parts);
}

/**
 * Seeded shuffled batches, epoch after epoch. The order of epoch e depends only on (seed, e), so
 * a run resumes exactly from (epoch, position) without replaying earlier epochs.
 */
export class EpochSampler {
  #cachedEpoch = -1;
  #cachedOrder: Uint32Array = new Uint32Array(0);

  constructor(
    readonly length: number,
    readonly batchSize: number,
    readonly seed: number,
    readonly dropLast = true,
  ) {
    if (!Number.isSafeInteger(length) || length <= 0) {
      throw new Error(`sampler: bad data length ${length}`);
    }
    if (!Number.isSafeInteger(batchSize) || batchSize <= 0) {
      throw new Error(`sampler: batch size must be a positive integer, got ${batchSize}`);
    }
    if (!Number.isSafeInteger(seed) || seed < 0) {
      throw new Error(`sampler: seed must be a non-negative integer`);
    }
    if (dropLast && length < batchSize) {
      throw new Error(
        `sampler: ${length} pairs cannot fill one batch of ${batchSize} with dropLast`,
      );
    }
  }

  /** Batches per epoch. */
  get batchesPerEpoch(): number {
    return this.dropLast
      ? Math.floor(this.length / this.batchSize)
      : Math.ceil(this.length / this.batchSize);
  }

  /** The permutation of [0, length) used in `epoch`. */
  epochOrder(epoch: number): Uint32Array {
    if (!Number.isSafeInteger(epoch) || epoch < 0) throw new Error(`sampler: bad epoch ${epoch}`);
    if (epoch !== this.#cachedEpoch) {
      // The seed and epoch become two words of one Mersenne Twister seed.
      const rng = new PythonRandom((BigInt(epoch) << 64n) | BigInt(this.seed));
      const order = Array.from({ length: this.length }, (_, i) => i);
      rng.shuffle(order);
      this.#cachedOrder = Uint32Array.from(order);
      this.#cachedEpoch = epoch;
    }
    return this.#cachedOrder;
  }

  /** Indices of batch `position` of `epoch`. */
  batch(epoch: number, position: number): number[] {
    if (!Number.isSafeInteger(position) || position < 0 || position >= this.batchesPerEpoch) {
      throw new Error(`sampler: batch position ${position} outside [0, ${this.batchesPerEpoch})`);
    }
    const order = this.epochOrder(epoch);
    const start = position * this.batchSize;
    return Array.from(order.subarray(start, Math.min(start + this.batchSize, this.length)));
  }

  /** Endless batches from (epoch, position) on. */
  *batches(start: { epoch: number; position: number } = { epoch: 0, position: 0 }): Generator<
    { epoch: number; position: number; indices: number[] }
  > {
    let { epoch, position } = start;
    for (;;) {
      if (position >= this.batchesPerEpoch) {
        epoch++;
        position = 0;
      }
      yield { epoch, position, indices: this.batch(epoch, position) };
      position++;
    }
  }
}

/**
 * Loads batches ahead of the consumer: up to `depth` batches are being read while the current
 * one is in use. Stops after `limit` batches (default: never).
 */
export async function* prefetchBatches(
  dataset: PairDataset,
  sampler: EpochSampler,
  options: { start?: { epoch: number; position: number }; depth?: number; limit?: number } = {},
): AsyncGenerator<PairBatch & { epoch: number; position: number }> {
  const depth = Math.max(1, options.depth ?? 2);
  const limit = options.limit ?? Infinity;
  const source = sampler.batches(options.start);
  const queue: Promise<PairBatch & { epoch: number; position: number }>[] = [];
  let issued = 0;
  const issue = () => {
    if (issued >= limit) return;
    const { epoch, position, indices } = source.next().value!;
    const p = dataset.getBatch(indices).then((b) => ({ ...b, epoch, position }));
    p.catch(() => {}); // surfaced when awaited; avoids an unhandled rejection meanwhile
    queue.push(p);
    issued++;
  };
  for (let k = 0; k < depth; k++) issue();
  while (queue.length) {
    const next = await queue.shift()!;
    issue();
    yield next;
  }
}
