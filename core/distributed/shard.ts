/**
 * Splitting an index range [0, total) among ranks (generate and sample across machines) and the
 * manifest each rank leaves: `<folder>/manifest/rank{r}.json` says which indices that rank was
 * given and which it wrote, so that the outputs of several machines can be gathered and checked.
 * Every index's output depends only on (seed, index), never on the rank that made it.
 *
 * @example
 * ```ts
 * const [lo, hi] = shardRange(1000, { rank: 1, worldSize: 4 }); // [250, 500)
 * ```
 *
 * @module
 */

import { hostname } from "node:os";
import { join } from "node:path";
import { writeFileAtomic } from "../data/atomic_write.ts";
import { detectLaunch } from "./launch_env.ts";

/** A rank's place among the ranks sharing a job. */
export interface Shard {
  rank: number;
  worldSize: number;
}

/** The ranks of this process's launch (mpirun, srun), or the whole job for one process. */
export function shardFromEnv(env: Record<string, string> = Deno.env.toObject()): Shard {
  const l = detectLaunch(env);
  return l ? { rank: l.rank, worldSize: l.worldSize } : { rank: 0, worldSize: 1 };
}

/**
 * Rank r's contiguous share [lo, hi) of [0, total): ceil(total / worldSize) indices each, the
 * last ones shorter (empty when total is small), as the generate job splits among its workers.
 */
export function shardRange(total: number, shard: Shard): [number, number] {
  const { rank, worldSize } = shard;
  if (!Number.isInteger(worldSize) || worldSize < 1 || !Number.isInteger(rank) || rank < 0) {
    throw new Error(`bad shard: rank ${rank} of ${worldSize}`);
  }
  if (rank >= worldSize) throw new Error(`bad shard: rank ${rank} of ${worldSize}`);
  const size = Math.ceil(total / worldSize);
  const lo = Math.min(total, rank * size);
  return [lo, Math.min(total, lo + size)];
}

/** Sorted indices as [first, last] runs: [0,1,2,5] -> [[0,2],[5,5]]. */
export function indexRuns(indices: Iterable<number>): [number, number][] {
  const sorted = [...new Set(indices)].sort((a, b) => a - b);
  const runs: [number, number][] = [];
  for (const i of sorted) {
    const last = runs[runs.length - 1];
    if (last && i === last[1] + 1) last[1] = i;
    else runs.push([i, i]);
  }
  return runs;
}

/** What `manifest/rank{r}.json` holds. */
export interface RankManifest {
  job: string;
  rank: number;
  world_size: number;
  host: string;
  /** The rank's share [lo, hi). */
  range: [number, number];
  /** Indices this run wrote, as [first, last] runs (inclusive). */
  written: [number, number][];
  /** Indices of the share that were already complete and kept. */
  kept: [number, number][];
  /** Free-form details (workers and their adapters, seconds...). */
  details?: Record<string, unknown>;
  finished_at: string;
}

/** Writes `<folder>/manifest/rank{r}.json` (atomically) and returns its path. */
export async function writeRankManifest(
  folder: string,
  m: Omit<RankManifest, "host" | "finished_at">,
): Promise<string> {
  const dir = join(folder, "manifest");
  await Deno.mkdir(dir, { recursive: true });
  const path = join(dir, `rank${m.rank}.json`);
  const full: RankManifest = { ...m, host: hostname(), finished_at: new Date().toISOString() };
  await writeFileAtomic(path, new TextEncoder().encode(JSON.stringify(full, null, 2) + "\n"));
  return path;
}
