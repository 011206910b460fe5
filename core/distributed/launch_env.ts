/**
 * Which rank this process is, as the launcher that started it says: `mpirun` of Open MPI
 * (`OMPI_COMM_WORLD_*`), MPICH's or Intel MPI's Hydra (`PMI_RANK`, `PMI_SIZE`, `MPI_LOCALRANKID`)
 * or a Slurm job step started by `srun` (`SLURM_PROCID`, `SLURM_STEP_NUM_TASKS`, `SLURM_LOCALID`).
 * The local rank (the rank among the processes of one machine) picks the GPU of a rank.
 *
 * @example
 * ```ts
 * const launch = detectLaunch(Deno.env.toObject());
 * if (launch) console.log(`rank ${launch.rank} of ${launch.worldSize} (${launch.launcher})`);
 * ```
 *
 * @module
 */

/** A process's place among the ranks of a job. */
export interface LaunchInfo {
  launcher: "open-mpi" | "pmi" | "slurm";
  rank: number;
  worldSize: number;
  /** Rank among the processes on this machine; null where the launcher does not say. */
  localRank: number | null;
  /** Number of ranks on this machine; null where the launcher does not say. */
  localSize: number | null;
}

function int(env: Record<string, string>, key: string): number | null {
  const v = env[key];
  if (v === undefined || v === "") return null;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) {
    throw new Error(`environment variable ${key}=${JSON.stringify(v)} is not a rank count/number`);
  }
  return n;
}

/** Slurm's "2(x3),1" task layout -> tasks on node `node`. */
function slurmTasksOnNode(layout: string | undefined, node: number | null): number | null {
  if (!layout || node === null) return null;
  const counts: number[] = [];
  for (const part of layout.split(",")) {
    const m = /^(\d+)(?:\(x(\d+)\))?$/.exec(part.trim());
    if (!m) return null;
    for (let k = 0; k < Number(m[2] ?? 1); k++) counts.push(Number(m[1]));
  }
  return counts[node] ?? null;
}

/**
 * The launch this process belongs to, or null for a process started on its own (no launcher
 * variables, or a world of one).
 */
export function detectLaunch(env: Record<string, string>): LaunchInfo | null {
  let info: LaunchInfo | null = null;
  const ompiRank = int(env, "OMPI_COMM_WORLD_RANK");
  const pmiRank = int(env, "PMI_RANK");
  const slurmRank = int(env, "SLURM_PROCID");
  if (ompiRank !== null) {
    info = {
      launcher: "open-mpi",
      rank: ompiRank,
      worldSize: int(env, "OMPI_COMM_WORLD_SIZE") ?? 0,
      localRank: int(env, "OMPI_COMM_WORLD_LOCAL_RANK"),
      localSize: int(env, "OMPI_COMM_WORLD_LOCAL_SIZE"),
    };
  } else if (pmiRank !== null) {
    info = {
      launcher: "pmi",
      rank: pmiRank,
      worldSize: int(env, "PMI_SIZE") ?? 0,
      localRank: int(env, "MPI_LOCALRANKID") ?? int(env, "PMI_LOCAL_RANK"),
      localSize: int(env, "MPI_LOCALNRANKS") ?? int(env, "PMI_LOCAL_SIZE"),
    };
  } else if (slurmRank !== null && env.SLURM_STEP_NUM_TASKS !== undefined) {
    // SLURM_PROCID is also set in a batch script itself; SLURM_STEP_NUM_TASKS only under srun.
    info = {
      launcher: "slurm",
      rank: slurmRank,
      worldSize: int(env, "SLURM_STEP_NUM_TASKS") ?? 0,
      localRank: int(env, "SLURM_LOCALID"),
      localSize: slurmTasksOnNode(env.SLURM_STEP_TASKS_PER_NODE, int(env, "SLURM_NODEID")),
    };
  }
  if (!info || info.worldSize <= 1) return null;
  if (info.rank >= info.worldSize) {
    throw new Error(
      `the ${info.launcher} launcher says rank ${info.rank} of ${info.worldSize} ranks`,
    );
  }
  return info;
}
