/**
 * A counter-based host random generator for training: draw i of a stream is a hash of
 * (seed, stream, i), so the generator's whole state is one counter that checkpoints save and
 * resume from exactly, and a worker can draw its shard of a global batch without drawing the rest.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * const rng = new CounterRng(2333, STREAM_TRAIN);
 * const base = rng.advance(4); // reserve 4 draws
 * const u = rng.uniformAt(base + 2); // the third of them
 * // A resumed run (or another worker) gets the same draw from the saved counter alone.
 * const resumed = new CounterRng(2333, STREAM_TRAIN);
 * resumed.load({ seed: 2333, stream: STREAM_TRAIN, counter: 2 });
 * assert.equal(resumed.uniformAt(resumed.advance(1)), u);
 * assert.notEqual(new CounterRng(2333, STREAM_EVAL).uniformAt(2), u); // streams never share
 * ```
 *
 * @module
 */

/** Stream ids, so that train, eval and sampling noise never share draws. */
export const STREAM_TRAIN = 1;
export const STREAM_EVAL = 2;
export const STREAM_SAMPLE = 3;

function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** What a checkpoint stores of a {@link CounterRng}. */
export interface RngState {
  seed: number;
  stream: number;
  counter: number;
}

/** Seeded counter-based generator (uniform doubles, integers, standard normals). */
export class CounterRng {
  /** Draws used so far (the next draw's index). */
  counter = 0;

  constructor(readonly seed: number, readonly stream = 0) {
    if (!Number.isSafeInteger(seed)) throw new Error(`random seed must be an integer, got ${seed}`);
  }

  private bits(i: number, lane: number): number {
    const lo = i >>> 0;
    const hi = Math.floor(i / 4294967296) >>> 0;
    let h = mix32((this.seed >>> 0) ^ 0x243f6a88);
    h = mix32(h ^ Math.floor(this.seed / 4294967296) ^ Math.imul(this.stream, 0x9e3779b9));
    h = mix32((h + lo) >>> 0);
    h = mix32(h ^ hi ^ 0x6a09e667);
    return mix32((h + Math.imul(lane + 1, 0x9e3779b9)) >>> 0);
  }

  /** Reserves `n` draws and returns the index of the first. */
  advance(n: number): number {
    const base = this.counter;
    this.counter += n;
    return base;
  }

  /** Uniform double in [0, 1) for draw `i` (53 random bits, numpy's construction). */
  uniformAt(i: number, lane = 0): number {
    const a = this.bits(i, 2 * lane) >>> 5;
    const b = this.bits(i, 2 * lane + 1) >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }

  /** Integer in [0, k) for draw `i`. */
  intAt(i: number, k: number): number {
    return Math.min(k - 1, Math.floor(this.uniformAt(i) * k));
  }

  /** Standard normal for draw `i` (Box-Muller on two uniforms of the draw). */
  normalAt(i: number): number {
    const u1 = 1 - this.uniformAt(i, 0); // (0, 1]
    const u2 = this.uniformAt(i, 1);
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }

  /** Normals for draws [base, base + n) as float32. */
  normals(base: number, n: number): Float32Array {
    const out = new Float32Array(n);
    for (let j = 0; j < n; j++) out[j] = this.normalAt(base + j);
    return out;
  }

  state(): RngState {
    return { seed: this.seed, stream: this.stream, counter: this.counter };
  }

  /** Restores a state saved by {@link state}; the seed and stream must match. */
  load(s: RngState, what = "random generator"): void {
    if (s.seed !== this.seed || s.stream !== this.stream) {
      throw new Error(
        `${what}: checkpoint was made with seed ${s.seed} (stream ${s.stream}), ` +
          `this run uses seed ${this.seed} (stream ${this.stream})`,
      );
    }
    if (!Number.isSafeInteger(s.counter) || s.counter < 0) {
      throw new Error(`${what}: bad counter ${s.counter} in checkpoint`);
    }
    this.counter = s.counter;
  }
}
