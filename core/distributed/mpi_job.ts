/**
 * Joining an MPI job (a process started by `mpirun -np N` or `srun`): MPI is initialised, and the
 * process is bound to its GPU by its local rank — local rank k gets `devices[k]` (default: the
 * machine's adapter k; see core/gpu/adapter_binding.ts) — before it opens the GPU.
 *
 * @example
 * ```ts ignore
 * // not a doc test: needs Open MPI and ranks started by mpirun (tests/distributed/mpi_train_test.ts)
 * const { exchange, binding } = await joinMpiJob({ shareAdapter: false });
 * const gpu = await Gpu.open(); // now on the adapter of `binding`
 * ```
 *
 * @module
 */

import {
  type AdapterListing,
  bindThisProcess,
  defaultDevices,
  listAdapters,
  planBindings,
  type WorkerBinding,
} from "../gpu/adapter_binding.ts";
import { MpiExchange, type MpiExchangeOptions } from "./mpi_exchange.ts";

/** Options of {@link joinMpiJob}. */
export interface JoinOptions extends MpiExchangeOptions {
  /** Adapters of this machine's ranks by local rank (`--devices`); default: adapter k for rank k. */
  devices?: (string | number)[];
  /** Allow several ranks of one machine on one adapter (`--share_adapter`). */
  shareAdapter: boolean;
}

/**
 * Binds this process to the adapter of its local rank: `devices[localRank]`, default adapter
 * `localRank`. Two ranks of one machine on one adapter are refused unless `shareAdapter`. Where
 * the launcher does not say how many ranks share the machine (`localSize` null), the ranks below
 * this one are checked.
 */
export function bindLocalRank(
  listing: AdapterListing,
  localRank: number,
  localSize: number | null,
  devices: (string | number)[] | undefined,
  shareAdapter: boolean,
): WorkerBinding {
  const n = localSize ?? localRank + 1;
  const list = devices ?? defaultDevices(n, listing.adapters, shareAdapter);
  if (list.length < n) {
    throw new Error(`--devices lists ${list.length} adapter(s) but ${n} ranks run on this machine`);
  }
  const plan = planBindings(list.slice(0, n), listing.adapters, {
    shareAdapter,
    what: devices ? "--devices (by local rank)" : "the ranks of this machine",
  }, listing.reason);
  bindThisProcess(plan[localRank]);
  return plan[localRank];
}

/** Initialises MPI and binds this rank to its adapter (before the GPU is opened). */
export async function joinMpiJob(
  opts: JoinOptions,
): Promise<{ exchange: MpiExchange; binding: WorkerBinding }> {
  // Listed before MPI_Init: the listing runs a child process.
  const listing = await listAdapters();
  const exchange = MpiExchange.open(opts);
  try {
    const { localRank, localSize } = exchange;
    const binding = bindLocalRank(listing, localRank, localSize, opts.devices, opts.shareAdapter);
    return { exchange, binding };
  } catch (e) {
    // The other ranks would wait for this one in their first collective: end the job now.
    exchange.abort(`cannot bind to an adapter: ${(e as Error).message}`);
    throw e; // not reached: MPI_Abort ends the process
  }
}
