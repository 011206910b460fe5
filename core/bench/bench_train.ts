/**
 * Training benchmark: steps per second and peak GPU memory of the trainer on a tiny UNet (two
 * levels, 8x8 latents, batch 2), and the step time of two worker processes (batch 2 each, gradients
 * averaged over loopback TCP) over that of one. Timings skip the first steps (pipeline compilation).
 *
 * Run as a script, this file is the second worker of the two-worker measurement.
 *
 * @example
 * ```ts ignore
 * // not a doc test: even 3 steps of one worker take ~15 s on lavapipe (compile, eval, checkpoint)
 * const r = await benchTrain({ steps: 10 }); // one worker, then two worker processes
 * console.log(r.stepsPerSec, r.peakGpuBytes, r.twoWorkerStepRatio);
 * const one = await benchTrain({ steps: 3, warm: 1, workers: false }); // no second worker
 * console.log(one.stepSecs1);
 * ```
 *
 * @module
 */

import {
  benchConfig,
  charTokenizer,
  TINY_BENCH_CLIP,
  TINY_BENCH_UNET,
  writeTinyPairs,
} from "./tiny_setup.ts";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Gpu } from "../gpu/device.ts";
import { UNet2DConditionModel } from "../models/unet2d_condition.ts";
import { CLIPTextModel } from "../models/text_encoders.ts";
import { openPairDataset } from "../data/dataset.ts";
import { connectWorker, type GradientExchange, listenHub } from "../distributed/allreduce.ts";
import { runTraining } from "../train/trainer.ts";

/** Runs the tiny training and returns mean seconds per step after `warm` steps. */
async function timedRun(
  gpu: Gpu,
  data: string,
  workdir: string,
  steps: number,
  warm: number,
  exchange?: GradientExchange,
): Promise<number> {
  const c = benchConfig(data, steps);
  const times: number[] = [];
  const models = {
    unet: UNet2DConditionModel.create(gpu, TINY_BENCH_UNET, 5),
    textEncoder: CLIPTextModel.create(gpu, TINY_BENCH_CLIP, 3),
    tokenizer: charTokenizer,
    vae: null,
  };
  const trainData = await openPairDataset(c.data.train_root);
  const evalData = await openPairDataset(c.data.eval_root);
  try {
    await runTraining({
      gpu,
      config: c,
      workdir,
      models,
      trainData,
      evalData,
      exchange,
      console: false,
      progress: false,
      handleSignals: false,
      onStep: () => times.push(performance.now()),
    });
  } finally {
    models.unet.dispose();
    models.textEncoder.dispose();
  }
  await gpu.sync();
  return (times[times.length - 1] - times[warm - 1]) / 1000 / (steps - warm);
}

/** Results of {@link benchTrain}. */
export interface TrainBench {
  device: string;
  /** Optimizer steps per second of one worker (batch 2, tiny UNet). */
  stepsPerSec: number;
  /** Peak bytes held by GPU tensors during the one-worker run. */
  peakGpuBytes: number;
  /** Seconds per step: one worker, and two workers (batch 2 each). */
  stepSecs1: number;
  stepSecs2: number;
  /** stepSecs2 / stepSecs1 (1 = perfect weak scaling). */
  twoWorkerStepRatio: number;
}

/** Measures the trainer on a tiny config; `workers: false` skips the two-worker part. */
export async function benchTrain(
  opts: { steps?: number; warm?: number; workers?: boolean; gpu?: Gpu } = {},
): Promise<TrainBench> {
  const steps = opts.steps ?? 12;
  const warm = opts.warm ?? 2;
  const gpu = opts.gpu ?? await Gpu.open();
  const tmp = await Deno.makeTempDir({ prefix: "reflow_bench_train_" });
  try {
    const data = join(tmp, "data");
    await writeTinyPairs(join(data, "train"), 16);
    await writeTinyPairs(join(data, "eval"), 4);
    gpu.pool.resetPeak();
    const s1 = await timedRun(gpu, data, join(tmp, "one"), steps, warm);
    const peak = gpu.pool.peakBytes;
    let s2 = NaN;
    if (opts.workers ?? true) {
      const hub = listenHub(2);
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          fileURLToPath(import.meta.url),
          "--bench-worker",
          data,
          join(tmp, "w1"),
          String(hub.port),
          String(steps),
        ],
        stdout: "inherit",
        stderr: "inherit",
      }).spawn();
      const ex = await hub.accept(120_000);
      try {
        s2 = await timedRun(gpu, data, join(tmp, "two"), steps, warm, ex);
      } finally {
        ex.close();
      }
      const st = await child.status;
      if (st.code !== 0) throw new Error(`benchTrain: worker exited with code ${st.code}`);
    }
    return {
      device: gpu.describe().description,
      stepsPerSec: 1 / s1,
      peakGpuBytes: peak,
      stepSecs1: s1,
      stepSecs2: s2,
      twoWorkerStepRatio: s2 / s1,
    };
  } finally {
    if (!opts.gpu) gpu.destroy();
    await Deno.remove(tmp, { recursive: true });
  }
}

if (import.meta.main && Deno.args[0] === "--bench-worker") {
  const [, data, workdir, port, steps] = Deno.args;
  const ex = await connectWorker(Number(port), 1, 2);
  const gpu = await Gpu.open();
  try {
    await timedRun(gpu, data, workdir, Number(steps), 1, ex);
  } finally {
    ex.close();
    gpu.destroy();
  }
} else if (import.meta.main) {
  console.log(JSON.stringify(await benchTrain(), null, 2));
}
