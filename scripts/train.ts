/**
 * `deno task train --config configs/train.ts --workdir logs/run1 [--comment ...]
 *  [--workers N] [--config.training.batch_size=4 ...]`
 *
 * Reflow training of a student UNet on (noise, latent, caption) pairs (the original's
 * `reflow_train_ddp.py`). With `--workers N` this process is rank 0 and starts N - 1 more worker
 * processes (`--worker`), each with its own WebGPU device, that average gradients over loopback TCP.
 * Ctrl-C saves a checkpoint and exits; resume with `--config.training.ckpt_path=<checkpoint_s{step}>`.
 */
import { loadJobConfig, parseJobArgs } from "../core/config/overrides.ts";
import { Gpu } from "../core/gpu/device.ts";
import type { TrainConfig } from "../configs/train.ts";
import { runTraining } from "../core/train/trainer.ts";
import { loadTrainModels, openTrainData } from "../core/train/setup.ts";
import { connectWorker, type GradientExchange } from "../core/dist/allreduce.ts";
import { startWorkers, type Workers } from "../core/dist/launch.ts";

const WORKER_FLAGS = new Set(["--worker", "--rank", "--world-size", "--port", "--workers"]);

/** The command line given to the other workers: ours without the worker flags. */
function workerArgs(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const name = a.split("=")[0];
    if (WORKER_FLAGS.has(name)) {
      if (!a.includes("=") && name !== "--worker") i++;
      continue;
    }
    out.push(a);
  }
  return out;
}

function intOption(v: unknown, flag: string, min: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    throw new Error(`${flag} must be an integer >= ${min}, got ${v}`);
  }
  return n;
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
        description: "worker processes (gradients averaged)",
        default: "1",
      },
      { flags: "--worker", description: "(internal) run as a worker started by rank 0" },
      { flags: "--rank <r>", description: "(internal) this worker's rank" },
      { flags: "--world-size <n>", description: "(internal) number of workers" },
      { flags: "--port <p>", description: "(internal) rank 0's loopback port" },
    ],
  });
  const config = await loadJobConfig<TrainConfig>(args);
  const workdir = String(args.options.workdir);
  let exchange: GradientExchange | undefined;
  let workers: Workers | undefined;
  if (args.options.worker) {
    const rank = intOption(args.options.rank, "--rank", 1);
    const world = intOption(args.options.worldSize, "--world-size", 2);
    exchange = await connectWorker(intOption(args.options.port, "--port", 1), rank, world);
  }
  const gpu = await Gpu.open();
  const models = await loadTrainModels(gpu, config);
  const { trainData, evalData } = await openTrainData(config);
  const n = intOption(args.options.workers, "--workers", 1);
  if (!args.options.worker && n > 1) {
    workers = await startWorkers({
      script: new URL(import.meta.url),
      args: workerArgs(Deno.args),
      worldSize: n,
    });
    exchange = workers.exchange;
  }
  try {
    const r = await runTraining({
      gpu,
      config,
      workdir,
      comment: args.comment,
      models,
      trainData,
      evalData,
      exchange,
      progress: !args.options.worker,
    });
    if (r.interrupted) {
      console.error(`interrupted at step ${r.step}; checkpoint ${r.lastCheckpoint}`);
    }
    await workers?.wait();
  } catch (e) {
    workers?.kill();
    throw e;
  } finally {
    exchange?.close();
    await trainData.close();
    await evalData.close();
    gpu.destroy();
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
