/**
 * `deno task train --config configs/train.ts --workdir logs/run1 [--comment ...]
 *  [--workers N] [--devices 0,1] [--share_adapter] [--bucket_mb 25] [--grad_transport f16]
 *  [--no_overlap] [--dist_timeout 600] [--config.training.batch_size=4 ...]`
 *
 * Reflow training of a student UNet on (noise, latent, caption) pairs (the original's
 * `reflow_train_ddp.py`). Several ranks average their gradients (each rank takes batch_size pairs
 * of every global batch):
 *
 * - `mpirun -np N deno run -A scripts/train.ts ...` or `srun -n N ...` (the same): N ranks on one
 *   machine or several, gradients averaged over MPI (Open MPI through FFI); each rank binds to the
 *   GPU of its local rank (`--devices` by local rank, default adapter k for local rank k).
 * - `--workers N` on one machine without MPI: this process is rank 0 and starts N - 1 more
 *   (`--worker`), averaging over loopback TCP; worker k runs on `--devices[k]` (default adapter k).
 *
 * Two ranks on one adapter are refused unless `--share_adapter`. Ctrl-C saves a checkpoint and
 * exits; resume with `--config.training.ckpt_path=<checkpoint_s{step}>`.
 */
import { intArg, numberArg, parseJobArgs } from "../core/config/cli.ts";
import { loadJobConfig } from "../core/config/overrides.ts";
import { Gpu } from "../core/gpu/device.ts";
import type { TrainConfig } from "../configs/train.ts";
import { runTraining } from "../core/train/trainer.ts";
import { loadTrainModels, openTrainData } from "../core/train/setup.ts";
import { connectWorker, type GradientExchange } from "../core/distributed/allreduce.ts";
import { startWorkers, type Workers } from "../core/distributed/launch.ts";
import { detectLaunch } from "../core/distributed/launch_env.ts";
import { joinMpiJob } from "../core/distributed/mpi_job.ts";
import type { MpiExchange } from "../core/distributed/mpi_exchange.ts";
import type { BucketOptions } from "../core/distributed/grad_buckets.ts";
import {
  bindThisProcess,
  checkBoundAdapter,
  defaultDevices,
  listAdapters,
  planBindings,
  splitDevicesFlag,
  type WorkerBinding,
} from "../core/gpu/adapter_binding.ts";

const WORKER_FLAGS = new Set(["--worker", "--rank", "--world-size", "--port", "--workers"]);
/** Flags that take no value. */
const SWITCHES = new Set(["--worker", "--share_adapter", "--no_overlap"]);

/** The command line given to the other workers: ours without the worker flags. */
function workerArgs(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const name = a.split("=")[0];
    if (WORKER_FLAGS.has(name)) {
      if (!a.includes("=") && !SWITCHES.has(name)) i++;
      continue;
    }
    out.push(a);
  }
  return out;
}

const POSITIVE = { min: 0, minExclusive: true };

/** The exchange settings shared by every rank (they must agree). */
function bucketOptions(o: Record<string, unknown>): BucketOptions {
  const transport = String(o.grad_transport);
  if (transport !== "f32" && transport !== "f16") {
    throw new Error(`--grad_transport must be f32 or f16, got ${transport}`);
  }
  return {
    bucketBytes: Math.round(numberArg(o.bucket_mb, "--bucket_mb", POSITIVE) * 1024 * 1024),
    transport,
    overlap: o.no_overlap !== true,
  };
}

async function main(): Promise<void> {
  const args = parseJobArgs(Deno.args, {
    name: "train",
    description: "Reflow training of a rectified-flow student UNet.",
    defaultConfig: "configs/train.ts",
    options: [
      {
        flags: "--workdir <dir>",
        description: "log folder (exp.log, tensorboard/, samples/, checkpoints/)",
        required: true,
      },
      {
        flags: "--workers <n>",
        description: "worker processes on this machine, gradients averaged over loopback TCP " +
          "(default: one per --devices entry, else 1)",
      },
      {
        flags: "--devices <list>",
        description: "adapters of the workers (or of this machine's MPI ranks, by local rank), " +
          "comma-separated: indices, PCI bus ids or vendor:device ids",
      },
      { flags: "--share_adapter", description: "allow several workers/ranks on one adapter" },
      { flags: "--bucket_mb <mb>", description: "gradient bucket size", default: "25" },
      {
        flags: "--grad_transport <t>",
        description: "gradients on the wire: f32 or f16",
        default: "f32",
      },
      {
        flags: "--no_overlap",
        description: "exchange gradient buckets after backward, not during it",
      },
      {
        flags: "--dist_timeout <s>",
        description: "MPI: seconds a collective may wait for the other ranks before the job aborts",
        default: "600",
      },
      { flags: "--worker", description: "(internal) run as a worker started by rank 0" },
      { flags: "--rank <r>", description: "(internal) this worker's rank" },
      { flags: "--world-size <n>", description: "(internal) number of workers" },
      { flags: "--port <p>", description: "(internal) rank 0's loopback port" },
    ],
  });
  const o = args.options;
  const config = await loadJobConfig<TrainConfig>(args);
  const workdir = String(o.workdir);
  const dist = bucketOptions(o);
  const shareAdapter = o.share_adapter === true;
  const devices = typeof o.devices === "string" ? splitDevicesFlag(o.devices) : undefined;
  const n = o.workers === undefined
    ? devices?.length ?? 1
    : intArg(o.workers, "--workers", { min: 1 });
  if (devices && !o.worker && devices.length !== n) {
    throw new Error(`--devices lists ${devices.length} adapter(s) for --workers ${n}`);
  }
  const launch = o.worker ? null : detectLaunch(Deno.env.toObject());
  if (launch && n > 1) {
    throw new Error(
      `started by ${launch.launcher} as rank ${launch.rank} of ${launch.worldSize}: use either ` +
        `the launcher's ranks or --workers, not both`,
    );
  }

  let exchange: GradientExchange | undefined;
  let mpi: MpiExchange | undefined;
  let workers: Workers | undefined;
  let rankLabel = "train";
  let plan: WorkerBinding[] | undefined;
  if (o.worker) {
    // Started by rank 0, already bound through its environment.
    const rank = intArg(o.rank, "--rank", { min: 1 });
    const world = intArg(o.worldSize, "--world-size", { min: 2 });
    exchange = await connectWorker(intArg(o.port, "--port", { min: 1 }), rank, world);
    rankLabel = `train rank ${rank}/${world}`;
  } else if (launch) {
    const joined = await joinMpiJob({
      devices,
      shareAdapter,
      timeoutSecs: numberArg(o.dist_timeout, "--dist_timeout", POSITIVE),
    });
    exchange = mpi = joined.exchange;
    rankLabel = `train rank ${mpi.rank}/${mpi.worldSize}`;
    console.error(
      `${rankLabel} (local ${mpi.localRank}/${mpi.localSize}, pid ${Deno.pid}): ${mpi.version}`,
    );
  } else if (n > 1 || devices) {
    // This process is rank 0 of n workers, each on its own adapter (worker k: devices[k]).
    const listing = await listAdapters();
    plan = planBindings(
      devices ?? defaultDevices(n, listing.adapters, shareAdapter),
      listing.adapters,
      { shareAdapter, what: devices ? "--devices" : "--workers" },
      listing.reason,
    );
    bindThisProcess(plan[0]);
    if (n > 1) rankLabel = `train rank 0/${n}`;
  }

  try {
    const gpu = await Gpu.open();
    try {
      console.error(`${rankLabel}: adapter ${checkBoundAdapter(gpu.info)}`);
      const models = await loadTrainModels(gpu, config);
      const { trainData, evalData } = await openTrainData(config);
      try {
        if (!o.worker && !launch && n > 1) {
          workers = await startWorkers({
            script: new URL(import.meta.url),
            args: workerArgs(Deno.args),
            worldSize: n,
            env: (r) => plan![r].env,
          });
          exchange = workers.exchange;
        }
        const r = await runTraining({
          gpu,
          config,
          workdir,
          comment: args.comment,
          models,
          trainData,
          evalData,
          exchange,
          dist,
          progress: !o.worker && (mpi?.rank ?? 0) === 0,
        });
        if (r.interrupted) {
          console.error(`interrupted at step ${r.step}; checkpoint ${r.lastCheckpoint}`);
        }
        await workers?.wait();
      } finally {
        await trainData.close();
        await evalData.close();
      }
    } finally {
      gpu.destroy();
    }
  } catch (e) {
    workers?.kill();
    // Under MPI the other ranks would wait for this one: end the whole job, saying why.
    mpi?.abort(`train failed: ${(e as Error).message}`);
    throw e;
  } finally {
    exchange?.close();
  }
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`train: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
