/**
 * Benchmarks of the gradient exchange (docs/benchmarks.md, "Gradient exchange"):
 *
 * ```sh
 * # all-reduce time of 2 local ranks: the loopback TCP star (this process is rank 0), then MPI
 * deno run -A core/bench/bench_dist.ts allreduce-tcp --mb 64,256,1024
 * mpirun -np 2 deno run -A core/bench/bench_dist.ts allreduce-mpi --mb 64,256,1024
 * # training step time of the tiny UNet on 2 MPI ranks (batch 2 each), with and without overlap;
 * # --width k makes its channels k times wider (k^2 times the parameters)
 * mpirun -np 2 deno run -A core/bench/bench_dist.ts step --steps 14 --warm 4 [--no_overlap]
 *   [--bucket_mb 0.0625] [--transport f16] [--width 4]
 * ```
 *
 * Each prints one JSON line (rank 0). The all-reduce is timed after one warm-up call, as the
 * median of `--reps` calls; the step time is the mean over the steps after `--warm`.
 *
 * @module
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  connectWorker,
  type GradientExchange,
  listenHub,
  type Transport,
} from "../distributed/allreduce.ts";
import { MpiExchange } from "../distributed/mpi_exchange.ts";
import { joinMpiJob } from "../distributed/mpi_job.ts";
import {
  benchConfig,
  charTokenizer,
  TINY_BENCH_CLIP,
  TINY_BENCH_UNET,
  writeTinyPairs,
} from "./tiny_setup.ts";
import { Gpu } from "../gpu/device.ts";
import { UNet2DConditionModel } from "../models/unet2d_condition.ts";
import { CLIPTextModel } from "../models/text_encoders.ts";
import { openPairDataset } from "../data/dataset.ts";
import { runTraining } from "../train/trainer.ts";
import { GradientBuckets } from "../distributed/grad_buckets.ts";

function flag(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] : fallback;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Seconds of `reps` all-reduces of `n` f32 values (after one warm-up), sorted. */
async function timeAllReduce(
  ex: GradientExchange,
  n: number,
  reps: number,
  transport: Transport,
): Promise<number[]> {
  const buf = new Float32Array(n);
  for (let i = 0; i < n; i += 4096) buf[i] = ex.rank + i;
  const times: number[] = [];
  for (let r = 0; r <= reps; r++) {
    const t0 = performance.now();
    await ex.allReduceMean(buf, { transport });
    if (r > 0) times.push((performance.now() - t0) / 1000);
  }
  return times.sort((a, b) => a - b);
}

async function allReduceBench(ex: GradientExchange, backend: string): Promise<void> {
  const reps = Number(flag("reps", "3"));
  const transport = flag("transport", "f32") as Transport;
  const rows = [];
  for (const mb of flag("mb", "64,256").split(",").map(Number)) {
    const n = Math.floor((mb * 1024 * 1024) / 4);
    const t = await timeAllReduce(ex, n, reps, transport);
    const s = median(t);
    rows.push({ mb, seconds: s, best: t[0], gbPerSec: (n * 4) / s / 1e9 });
  }
  if (ex.rank === 0) {
    console.log(
      JSON.stringify({ bench: "allreduce", backend, transport, ranks: ex.worldSize, rows }),
    );
  }
}

async function stepBench(): Promise<void> {
  const steps = Number(flag("steps", "14"));
  const warm = Number(flag("warm", "4"));
  const overlap = !Deno.args.includes("--no_overlap");
  const transport = flag("transport", "f32") as Transport;
  const bucketBytes = Math.round(Number(flag("bucket_mb", "25")) * 1024 * 1024);
  const { exchange } = await joinMpiJob({ shareAdapter: true, timeoutSecs: 600 });
  const gpu = await Gpu.open();
  const tmp = join(Deno.env.get("TMPDIR") ?? "/tmp", `reflow_bench_dist_${Deno.pid}`);
  try {
    // Every rank writes the same seeded pairs to a folder of its own.
    const data = join(tmp, "data");
    await writeTinyPairs(join(data, "train"), 16);
    await writeTinyPairs(join(data, "eval"), 4);
    const c = benchConfig(data, steps);
    const width = Number(flag("width", "1"));
    const unet = UNet2DConditionModel.create(gpu, {
      ...TINY_BENCH_UNET,
      block_out_channels: TINY_BENCH_UNET.block_out_channels.map((ch) => ch * width),
    }, 5);
    const textEncoder = CLIPTextModel.create(gpu, TINY_BENCH_CLIP, 3);
    const times: number[] = [];
    const syncMs: number[] = [];
    // Reads the buckets' timings through the trainer's step callback.
    let buckets: GradientBuckets | null = null;
    const orig = GradientBuckets.prototype.finish;
    GradientBuckets.prototype.finish = function (this: GradientBuckets, ...a) {
      buckets = this;
      return orig.apply(this, a);
    };
    await runTraining({
      gpu,
      config: c,
      workdir: join(tmp, "run"),
      models: { unet, textEncoder, tokenizer: charTokenizer, vae: null },
      trainData: await openPairDataset(c.data.train_root),
      evalData: await openPairDataset(c.data.eval_root),
      exchange,
      dist: { overlap, transport, bucketBytes },
      console: false,
      progress: false,
      handleSignals: false,
      onStep: () => {
        times.push(performance.now());
        syncMs.push((buckets as GradientBuckets | null)?.lastTimings.syncMs ?? 0);
      },
    });
    const b = buckets as GradientBuckets | null;
    const stepSecs = (times[times.length - 1] - times[warm - 1]) / 1000 / (steps - warm);
    if (exchange.rank === 0) {
      console.log(JSON.stringify({
        bench: "step",
        ranks: exchange.worldSize,
        overlap,
        transport,
        bucketBytes,
        buckets: b?.layout.length ?? 0,
        width,
        parameters: unet.numParameters(),
        stepSecs,
        exchangeMs: median(syncMs.slice(warm)),
        adapter: gpu.describe().description,
      }));
    }
    unet.dispose();
    textEncoder.dispose();
  } finally {
    exchange.close();
    gpu.destroy();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const mode = Deno.args[0];
  if (mode === "allreduce-mpi") {
    const ex = MpiExchange.open({ timeoutSecs: 3600 });
    try {
      await allReduceBench(ex, `MPI (${ex.version.split(",")[0]})`);
    } finally {
      ex.close();
    }
  } else if (mode === "allreduce-tcp") {
    const hub = listenHub(2);
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        fileURLToPath(import.meta.url),
        "tcp-rank1",
        String(hub.port),
        ...Deno.args.slice(1),
      ],
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    const ex = await hub.accept(60_000);
    try {
      await allReduceBench(ex, "loopback TCP star");
    } finally {
      ex.close();
    }
    await child.status;
  } else if (mode === "tcp-rank1") {
    const ex = await connectWorker(Number(Deno.args[1]), 1, 2);
    try {
      await allReduceBench(ex, "loopback TCP star");
    } finally {
      ex.close();
    }
  } else if (mode === "step") {
    await stepBench();
  } else {
    console.error("usage: bench_dist.ts allreduce-tcp|allreduce-mpi|step [options]; see the notes");
    Deno.exit(2);
  }
}
