/**
 * Gradient averaging between worker processes over loopback TCP (the zero-install exchange of one
 * machine; `mpi_exchange.ts` is the one for several machines, behind the same interface). The
 * workers send their flat Float32Arrays to rank 0, which sums them in rank order (float64),
 * divides by the number of workers and sends the same average back to all of them. The flat
 * arrays may carry extra values at the end (the loss, a stop flag) that are averaged alike. With
 * the f16 transport the workers send f16 and rank 0 sends back the mean rounded to f16 (which
 * rank 0 uses too, so that every rank holds the same values).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * const hub = listenHub(2); // rank 0
 * // Rank 1 is normally another process, started with `--port ${hub.port}`; here it runs alongside.
 * const [ex, worker] = await Promise.all([hub.accept(), connectWorker(hub.port, 1, 2)]);
 * const [avg, workerAvg] = await Promise.all([
 *   ex.allReduceMean(Float32Array.from([1, 2, 3])), // rank 0's gradients
 *   worker.allReduceMean(Float32Array.from([3, 4, 7])), // rank 1's
 * ]);
 * assert.deepEqual([...avg], [2, 3, 5]);
 * assert.deepEqual(workerAvg, avg); // every rank holds the same mean
 * ex.close();
 * worker.close();
 * ```
 *
 * @module
 */

import { f16BitsToF32, f32ToF16Bits } from "../io/half.ts";

/** How values travel: f32, or f16 (half the bytes; the mean is rounded to f16). */
export type Transport = "f32" | "f16";

/** Options of {@link GradientExchange.allReduceMean}. */
export interface ReduceOptions {
  transport?: Transport;
}

/** What the trainer needs from the other workers. */
export interface GradientExchange {
  readonly rank: number;
  readonly worldSize: number;
  /**
   * The element-wise mean of `flat` over all workers (every worker gets the same values). The
   * result may be `flat` itself, overwritten.
   */
  allReduceMean(flat: Float32Array, opts?: ReduceOptions): Promise<Float32Array>;
  /** Rank 0's `flat` on every worker. */
  broadcast(flat: Float32Array): Promise<Float32Array>;
  close(): void;
}

/** The single-worker exchange: nothing to average. */
export class LocalExchange implements GradientExchange {
  readonly rank = 0;
  readonly worldSize = 1;
  allReduceMean(flat: Float32Array): Promise<Float32Array> {
    return Promise.resolve(flat);
  }
  broadcast(flat: Float32Array): Promise<Float32Array> {
    return Promise.resolve(flat);
  }
  close(): void {}
}

/** Length-prefixed frames over a TCP connection. */
class FramedConn {
  private pending = new Uint8Array(0);
  constructor(readonly conn: Deno.Conn, public peer: string) {}

  async write(bytes: Uint8Array): Promise<void> {
    const head = new Uint8Array(4);
    new DataView(head.buffer).setUint32(0, bytes.byteLength, true);
    await this.writeAll(head);
    await this.writeAll(bytes);
  }

  private async writeAll(bytes: Uint8Array): Promise<void> {
    for (let done = 0; done < bytes.length;) {
      done += await this.conn.write(bytes.subarray(done));
    }
  }

  private async readExact(n: number): Promise<Uint8Array> {
    const out = new Uint8Array(n);
    let got = Math.min(n, this.pending.length);
    out.set(this.pending.subarray(0, got));
    this.pending = this.pending.subarray(got);
    const chunk = new Uint8Array(1 << 20);
    while (got < n) {
      const r = await this.conn.read(chunk);
      if (r === null) throw new Error(`${this.peer} closed the connection (did it fail?)`);
      const take = Math.min(r, n - got);
      out.set(chunk.subarray(0, take), got);
      got += take;
      if (take < r) this.pending = chunk.slice(take, r);
    }
    return out;
  }

  async read(): Promise<Uint8Array> {
    const head = await this.readExact(4);
    return this.readExact(new DataView(head.buffer).getUint32(0, true));
  }

  async readF32(expect: number): Promise<Float32Array> {
    const b = await this.readValues(expect, 4);
    return new Float32Array(b.buffer, b.byteOffset, expect);
  }

  async readF16(expect: number): Promise<Uint16Array> {
    const b = await this.readValues(expect, 2);
    return new Uint16Array(b.buffer.slice(b.byteOffset, b.byteOffset + expect * 2));
  }

  private async readValues(expect: number, size: number): Promise<Uint8Array> {
    const b = await this.read();
    if (b.byteLength !== expect * size) {
      throw new Error(
        `${this.peer} sent ${b.byteLength / size} values, expected ${expect} (do the workers ` +
          `run the same model and settings?)`,
      );
    }
    return b;
  }

  close(): void {
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }
}

const f32Bytes = (a: Float32Array | Uint16Array) =>
  new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/**
 * Runs exchanges one at a time in call order: callers may start several (one per gradient
 * bucket) without waiting, and frames on a connection must not interleave.
 */
class Serial {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.tail.then(fn, fn);
    this.tail = p.catch(() => {});
    return p;
  }
}

/** Rank 0's side: one connection per other worker, in rank order. */
class HubExchange implements GradientExchange {
  readonly rank = 0;
  private readonly serial = new Serial();
  constructor(readonly worldSize: number, private readonly peers: FramedConn[]) {}

  allReduceMean(flat: Float32Array, opts: ReduceOptions = {}): Promise<Float32Array> {
    return this.serial.run(() => this.reduce(flat, opts));
  }

  private async reduce(flat: Float32Array, opts: ReduceOptions): Promise<Float32Array> {
    const f16 = opts.transport === "f16";
    const parts = await Promise.all(
      this.peers.map(async (p) =>
        f16 ? f16BitsToF32(await p.readF16(flat.length)) : await p.readF32(flat.length)
      ),
    );
    const out = new Float32Array(flat.length);
    const inv = 1 / this.worldSize;
    for (let i = 0; i < flat.length; i++) {
      let s = flat[i];
      for (const p of parts) s += p[i];
      out[i] = s * inv;
    }
    if (!f16) {
      await Promise.all(this.peers.map((p) => p.write(f32Bytes(out))));
      return out;
    }
    const bits = f32ToF16Bits(out);
    await Promise.all(this.peers.map((p) => p.write(f32Bytes(bits))));
    return f16BitsToF32(bits, out);
  }

  broadcast(flat: Float32Array): Promise<Float32Array> {
    return this.serial.run(async () => {
      await Promise.all(this.peers.map((p) => p.write(f32Bytes(flat))));
      return flat;
    });
  }

  close(): void {
    for (const p of this.peers) p.close();
  }
}

/** A worker's side: one connection to rank 0. */
class WorkerExchange implements GradientExchange {
  private readonly serial = new Serial();
  constructor(
    readonly rank: number,
    readonly worldSize: number,
    private readonly hub: FramedConn,
  ) {}

  allReduceMean(flat: Float32Array, opts: ReduceOptions = {}): Promise<Float32Array> {
    return this.serial.run(() => this.reduce(flat, opts));
  }

  private async reduce(flat: Float32Array, opts: ReduceOptions): Promise<Float32Array> {
    if (opts.transport === "f16") {
      await this.hub.write(f32Bytes(f32ToF16Bits(flat)));
      return f16BitsToF32(await this.hub.readF16(flat.length));
    }
    await this.hub.write(f32Bytes(flat));
    return (await this.hub.readF32(flat.length)).slice();
  }

  broadcast(flat: Float32Array): Promise<Float32Array> {
    return this.serial.run(async () => (await this.hub.readF32(flat.length)).slice());
  }

  close(): void {
    this.hub.close();
  }
}

/** Rank 0's listener on 127.0.0.1 with an ephemeral port. */
export interface Hub {
  readonly port: number;
  /** Waits for the other `worldSize - 1` workers to connect (each says its rank). */
  accept(timeoutMs?: number): Promise<GradientExchange>;
  close(): void;
}

/** Opens rank 0's listener for `worldSize` workers. */
export function listenHub(worldSize: number): Hub {
  if (!Number.isInteger(worldSize) || worldSize < 2) {
    throw new Error(`listenHub: worldSize must be an integer >= 2, got ${worldSize}`);
  }
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  return {
    port,
    async accept(timeoutMs = 300_000) {
      const peers: (FramedConn | undefined)[] = new Array(worldSize - 1);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new Error(
                `workers: only ${peers.filter(Boolean).length + 1} of ${worldSize} connected ` +
                  `to 127.0.0.1:${port} within ${timeoutMs / 1000} s`,
              ),
            ),
          timeoutMs,
        );
      });
      try {
        await Promise.race([
          (async () => {
            for (let k = 1; k < worldSize; k++) {
              const conn = await listener.accept();
              conn.setNoDelay(true);
              const f = new FramedConn(conn, "a worker");
              const hello = new DataView((await f.read()).buffer);
              const rank = hello.getUint32(0, true);
              const world = hello.getUint32(4, true);
              if (rank < 1 || rank >= worldSize || peers[rank - 1] || world !== worldSize) {
                f.close();
                throw new Error(`workers: bad hello (rank ${rank}, world size ${world})`);
              }
              f.peer = `worker ${rank}`;
              peers[rank - 1] = f;
            }
          })(),
          timeout,
        ]);
      } finally {
        clearTimeout(timer);
        listener.close();
      }
      return new HubExchange(worldSize, peers as FramedConn[]);
    },
    close() {
      try {
        listener.close();
      } catch { /* closed */ }
    },
  };
}

/** A worker (rank >= 1) connects to rank 0's port on 127.0.0.1. */
export async function connectWorker(
  port: number,
  rank: number,
  worldSize: number,
): Promise<GradientExchange> {
  if (!(rank >= 1 && rank < worldSize)) {
    throw new Error(`--rank ${rank} must be in [1, ${worldSize}) (rank 0 is the launcher)`);
  }
  let conn: Deno.TcpConn | null = null;
  for (let attempt = 0; !conn; attempt++) {
    try {
      conn = await Deno.connect({ hostname: "127.0.0.1", port });
    } catch (e) {
      if (attempt >= 50) {
        throw new Error(`worker ${rank}: cannot reach rank 0 at 127.0.0.1:${port}: ${e}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  conn.setNoDelay(true);
  const f = new FramedConn(conn, "rank 0");
  const hello = new Uint8Array(8);
  new DataView(hello.buffer).setUint32(0, rank, true);
  new DataView(hello.buffer).setUint32(4, worldSize, true);
  await f.write(hello);
  return new WorkerExchange(rank, worldSize, f);
}
