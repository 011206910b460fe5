/**
 * The gradient exchange over MPI (Open MPI through FFI, see mpi_ffi.ts): ranks started by
 * `mpirun` or `srun`, on one machine or several. f32 gradients are summed with MPI_Allreduce in
 * place and scaled by 1/N; with the f16 transport a ring reduce-scatter + all-gather over
 * MPI_Sendrecv carries f16 (half the bytes; partial sums added in f32, the mean rounded to f16 by
 * the rank that owns its chunk, so every rank holds the same values).
 *
 * Failure: if a rank dies, the launcher ends the others (Open MPI's mpirun sends SIGTERM within
 * about a second; they then print which rank they are and exit). A rank that hangs instead (a
 * stuck GPU, a stopped process) is caught by a watchdog: a collective that does not complete
 * within `timeoutSecs` prints what it was waiting for and calls MPI_Abort, which ends every rank.
 *
 * @example
 * ```ts ignore
 * // not a doc test: needs Open MPI and ranks started by mpirun (tests/distributed/mpi_exchange_test.ts)
 * const ex = MpiExchange.open({ timeoutSecs: 600 }); // under mpirun -np 2
 * const avg = await ex.allReduceMean(grads, { transport: "f16" });
 * ex.close();
 * ```
 *
 * @module
 */

import { f16BitsToF32, f32ToF16Bits } from "../io/half.ts";
import type { GradientExchange, ReduceOptions } from "./allreduce.ts";
import { Mpi } from "./mpi_ffi.ts";

/** Options of {@link MpiExchange.open}. */
export interface MpiExchangeOptions {
  /** Seconds a collective may wait for the other ranks before the job is aborted (default 600). */
  timeoutSecs?: number;
  /** Where watchdog and signal messages go (default: stderr). */
  report?: (line: string) => void;
}

const bytesOf = (a: Float32Array | Uint16Array) =>
  new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Chunk k of n over length L: [floor(k L / n), floor((k + 1) L / n)). */
function chunk(k: number, n: number, length: number): [number, number] {
  return [Math.floor((k * length) / n), Math.floor(((k + 1) * length) / n)];
}

/** MPI ranks averaging gradients: see the module notes. */
export class MpiExchange implements GradientExchange {
  readonly rank: number;
  readonly worldSize: number;
  /** This rank among the ranks of its machine, and how many they are. */
  readonly localRank: number;
  readonly localSize: number;
  readonly version: string;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly timeoutMs: number;
  private readonly report: (line: string) => void;
  private readonly onTerm: () => void;
  private closed = false;

  private constructor(private readonly mpi: Mpi, opts: MpiExchangeOptions) {
    this.rank = mpi.rank;
    this.worldSize = mpi.size;
    this.version = mpi.version;
    const local = mpi.localRank();
    this.localRank = local.rank;
    this.localSize = local.size;
    this.timeoutMs = (opts.timeoutSecs ?? 600) * 1000;
    if (!(this.timeoutMs > 0)) {
      throw new Error(
        `--dist_timeout must be a positive number of seconds, got ${opts.timeoutSecs}`,
      );
    }
    this.report = opts.report ?? ((l) => console.error(l));
    // The launcher ends the surviving ranks with SIGTERM when one fails: say so, then exit.
    this.onTerm = () => {
      this.report(
        `rank ${this.rank}: stopped by the MPI launcher (SIGTERM): another rank failed or the ` +
          `job was cancelled`,
      );
      Deno.exit(143);
    };
    Deno.addSignalListener("SIGTERM", this.onTerm);
  }

  /** Initialises MPI in this process (started by mpirun/srun) and returns its exchange. */
  static open(opts: MpiExchangeOptions = {}): MpiExchange {
    return new MpiExchange(Mpi.init(), opts);
  }

  /** Runs collectives one at a time, in call order (every rank must call them in one order). */
  private serial<T>(what: string, fn: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new Error(`MPI exchange closed (${what})`));
    const run = async () => {
      const timer = setTimeout(() => {
        this.report(
          `rank ${this.rank}: ${what} did not complete within ${this.timeoutMs / 1000} s: ` +
            `another rank is dead or stuck. Aborting the job (MPI_Abort).`,
        );
        this.mpi.abort(3);
        Deno.exit(3);
      }, this.timeoutMs);
      try {
        return await fn();
      } finally {
        clearTimeout(timer);
      }
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => {});
    return p;
  }

  allReduceMean(flat: Float32Array, opts: ReduceOptions = {}): Promise<Float32Array> {
    const what = `all-reduce of ${flat.length} values (${opts.transport ?? "f32"})`;
    if (opts.transport === "f16") return this.serial(what, () => this.ringMeanF16(flat));
    return this.serial(what, async () => {
      await this.mpi.allreduceSum(flat);
      const inv = 1 / this.worldSize;
      for (let i = 0; i < flat.length; i++) flat[i] *= inv;
      return flat;
    });
  }

  /**
   * Ring reduce-scatter then ring all-gather, f16 on the wire. After N-1 steps rank r holds the
   * full sum of chunk (r + 1) mod N; it rounds the mean to f16 and the all-gather passes the
   * chunks on unchanged.
   */
  private async ringMeanF16(flat: Float32Array): Promise<Float32Array> {
    const n = this.worldSize;
    const r = this.rank;
    if (n === 1) return flat;
    const next = (r + 1) % n;
    const prev = (r - 1 + n) % n;
    const L = flat.length;
    for (let s = 0; s < n - 1; s++) {
      const [sa, sb] = chunk((r - s + n) % n, n, L);
      const [ra, rb] = chunk((r - s - 1 + 2 * n) % n, n, L);
      const send = f32ToF16Bits(flat.subarray(sa, sb));
      const recv = new Uint16Array(rb - ra);
      await this.mpi.sendrecv(bytesOf(send), next, bytesOf(recv), prev);
      const part = f16BitsToF32(recv);
      for (let i = 0; i < part.length; i++) flat[ra + i] += part[i];
    }
    const mean = new Uint16Array(L);
    const [oa, ob] = chunk(next, n, L);
    const inv = 1 / n;
    const own = flat.subarray(oa, ob);
    for (let i = 0; i < own.length; i++) own[i] *= inv;
    mean.set(f32ToF16Bits(own), oa);
    for (let s = 0; s < n - 1; s++) {
      const [sa, sb] = chunk((r + 1 - s + n) % n, n, L);
      const [ra, rb] = chunk((r - s + n) % n, n, L);
      await this.mpi.sendrecv(
        bytesOf(mean.subarray(sa, sb)),
        next,
        bytesOf(mean.subarray(ra, rb)),
        prev,
      );
    }
    flat.set(f16BitsToF32(mean));
    return flat;
  }

  broadcast(flat: Float32Array): Promise<Float32Array> {
    return this.serial(`broadcast of ${flat.length} values`, async () => {
      await this.mpi.bcast(bytesOf(flat), 0);
      return flat;
    });
  }

  /** Waits for every rank (with the watchdog). */
  barrier(what = "barrier"): Promise<void> {
    return this.serial(what, () => this.mpi.barrier());
  }

  /** Ends every rank of the job after printing `reason`. */
  abort(reason: string): never {
    this.report(`rank ${this.rank}: ${reason}; aborting the job (MPI_Abort)`);
    this.mpi.abort(1);
    Deno.exit(1);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    Deno.removeSignalListener("SIGTERM", this.onTerm);
    this.mpi.finalize();
  }
}
