/**
 * `deno task bench [--quick] [--json FILE] [--filter NAME] [--jobs|--no-jobs]`: measures the
 * adapter's register-only FMA peak, then the kernel cases of core/bench/cases.ts, then (unless
 * --no-jobs or a --filter) the model and job benchmarks: UNet forward / training step, generate
 * pairs/s (1 and 2 workers), train steps/s (and the 2-worker step-time ratio), sample images/s, and
 * the LPIPS loss's step time against L2. Prints tables and optionally writes the JSON record
 * {adapter, peak_gflops, results, jobs}.
 *
 * `deno task bench --sd [--scale full|small] [--models sd15,sd21,alt] [--reps N] [--json FILE]
 * [--compare-dir DIR]` (or `--preset sd`) runs the Stable Diffusion benchmark instead
 * (core/bench/sd_bench.ts): SD-1.5-, SD-2.1- and AltDiffusion-shaped models with random weights,
 * at full size (a GPU) or shrunk (`--scale small`, the CPU smoke test). The JSON record
 * {preset, scale, adapter, date, rows} is rewritten after every row, so a run cut short keeps what
 * it measured. The job benchmarks load only when they run: the SD benchmark needs no npm package.
 */
import { type CommandSpec, parseCommand, usageError } from "../core/config/cli.ts";
import { Gpu } from "../core/gpu/device.ts";
import { measurePeak } from "../core/bench/peak.ts";
import { BENCH_CASES } from "../core/bench/cases.ts";
import { type BenchResult, formatTable, runCase } from "../core/bench/run.ts";
import { runSdBench, type SdRow } from "../core/bench/sd_bench.ts";
import type { SdScale } from "../core/bench/sd_configs.ts";

interface Args {
  quick: boolean;
  json?: string;
  filter?: string;
  jobs?: boolean;
  sd: boolean;
  scale: SdScale;
  models?: string[];
  reps?: number;
  compareDir?: string;
}

/** The command line; `exitOnError` false (the tests) throws instead of exiting. */
function benchSpec(exitOnError: boolean): CommandSpec {
  return {
    name: "bench",
    description: "Kernel, model and job benchmarks against the adapter's measured FMA peak, or " +
      "(--sd) the Stable Diffusion benchmark.",
    usage: "deno task bench [--quick] [--json FILE] [--filter NAME] [--jobs|--no-jobs]\n" +
      "       deno task bench --sd|--preset sd [--scale full|small] [--models sd15,sd21,alt] " +
      "[--reps N] [--json FILE] [--compare-dir DIR]",
    options: [
      { flags: "--quick", description: "fewer cases and repetitions", default: false },
      { flags: "--json <file>", description: "write the JSON record here" },
      { flags: "--filter <name>", description: "only the kernel cases whose name holds this" },
      { flags: "--jobs", description: "run the model and job benchmarks (default: no --filter)" },
      { flags: "--no-jobs", description: "skip the model and job benchmarks" },
      { flags: "--sd", description: "the Stable Diffusion benchmark instead", default: false },
      { flags: "--preset <name>", description: "sd: the same as --sd" },
      { flags: "--scale <scale>", description: "--sd: full (a GPU) or small (the CPU smoke test)" },
      { flags: "--models <list>", description: "--sd: comma-separated, of sd15, sd21, alt" },
      { flags: "--reps <n>", description: "--sd: timed repetitions" },
      { flags: "--compare-dir <dir>", description: "--sd: write inputs and outputs to compare" },
    ],
    exitOnError,
  };
}

/** Parses bench's flags (throwing on bad ones, unless `exitOnError`). */
export function parseArgs(args: string[], exitOnError = false): Args {
  const spec = benchSpec(exitOnError);
  const o = parseCommand<{
    quick: boolean;
    json?: string;
    filter?: string;
    jobs?: boolean;
    sd: boolean;
    preset?: string;
    scale?: string;
    models?: string;
    reps?: string;
    compareDir?: string;
  }>(args, spec);
  if (o.preset !== undefined && o.preset !== "sd") {
    usageError(spec, `unknown --preset '${o.preset}' (known: sd)`);
  }
  if (o.scale !== undefined && o.scale !== "full" && o.scale !== "small") {
    usageError(spec, `--scale must be full or small, got '${o.scale}'`);
  }
  const reps = o.reps === undefined ? undefined : Number(o.reps);
  if (reps !== undefined && (!Number.isInteger(reps) || reps < 1)) {
    usageError(spec, "--reps must be a positive integer");
  }
  const out: Args = {
    quick: o.quick,
    json: o.json,
    filter: o.filter,
    jobs: o.jobs,
    sd: o.sd || o.preset === "sd",
    scale: (o.scale ?? "full") as SdScale,
    models: o.models?.split(",").filter(Boolean),
    reps,
    compareDir: o.compareDir,
  };
  const sdOnly = o.models !== undefined || reps !== undefined || o.compareDir !== undefined ||
    o.scale !== undefined;
  if (sdOnly && !out.sd) {
    usageError(spec, "--scale, --models, --reps and --compare-dir belong to --sd");
  }
  return out;
}

/** Writes `text` to `path` through a temporary name, so readers never see half a file. */
async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(tmp, text);
  await Deno.rename(tmp, path);
}

/** The Stable Diffusion benchmark; the JSON record is rewritten after every row. */
async function mainSd(gpu: Gpu, opts: Args): Promise<void> {
  const adapter = gpu.describe();
  const record = {
    preset: "sd",
    scale: opts.scale,
    adapter,
    adapter_info: {
      vendor: gpu.info.vendor,
      architecture: gpu.info.architecture,
      device: gpu.info.device,
      description: gpu.info.description,
      adapter_features: [...gpu.adapter.features].sort(),
    },
    date: new Date().toISOString(),
    rows: [] as SdRow[],
  };
  console.log(`bench --sd (${opts.scale}): ${gpu.summary()}`);
  await runSdBench(gpu, {
    scale: opts.scale,
    models: opts.models,
    reps: opts.reps,
    compareDir: opts.compareDir,
    log: (line) => console.log(line),
    onRow: async (row) => {
      record.rows.push(row);
      if (opts.json) await writeAtomic(opts.json, JSON.stringify(record, null, 2) + "\n");
    },
  });
  if (opts.json) console.log(`wrote ${opts.json}`);
}

async function main(): Promise<void> {
  const opts = parseArgs(Deno.args, true);
  const gpu = await Gpu.open();
  if (opts.sd) {
    try {
      await mainSd(gpu, opts);
    } finally {
      await gpu.close();
    }
    return;
  }
  const adapter = gpu.describe();
  console.log(
    `adapter: ${adapter.description} (vendor ${adapter.vendor}, fallback ${adapter.fallback})`,
  );
  const peak = await measurePeak(gpu, opts.quick ? { iters: 1024 } : {});
  console.log(`register-only FMA peak: ${peak.toFixed(1)} GFLOP/s`);
  const cases = BENCH_CASES.filter((c) =>
    (!opts.quick || c.quick) && (!opts.filter || c.name.includes(opts.filter))
  );
  const results: (BenchResult & { peak_nearby_gflops: number })[] = [];
  for (const c of cases) {
    // On a shared machine the available throughput drifts: each case is also compared with a peak
    // measured right before it (pct_of_peak uses that one).
    const near = await measurePeak(gpu, { iters: 1024, reps: 2 });
    const r = {
      ...(await runCase(gpu, c, near, opts.quick ? { targetMs: 500, maxReps: 5 } : {})),
      peak_nearby_gflops: near,
    };
    results.push(r);
    console.log(
      `${r.name.padEnd(16)} ${r.shape.padEnd(22)} ${r.dtype} ${r.ms.toFixed(2).padStart(10)} ms` +
        (r.gflops === null
          ? ""
          : `  ${r.gflops.toFixed(2)} GFLOP/s (${r.pct_of_peak!.toFixed(1)}% of ${
            near.toFixed(1)
          })`),
    );
  }
  console.log(`\n${formatTable(results)}`);
  const jobs = (opts.jobs ?? !opts.filter) ? await runJobs(gpu, opts.quick) : null;
  if (opts.json) {
    const record = { adapter, peak_gflops: peak, date: new Date().toISOString(), results, jobs };
    await Deno.writeTextFile(opts.json, JSON.stringify(record, null, 2) + "\n");
    console.log(`wrote ${opts.json}`);
  }
  gpu.destroy();
}

/** Model and job benchmarks (each logs its figures as it finishes). */
async function runJobs(gpu: Gpu, quick: boolean): Promise<Record<string, unknown>> {
  // Loaded here: these modules pull in npm packages the SD benchmark does without.
  const { benchUNet } = await import("../core/bench/bench_unet.ts");
  const { TEACHER_UNET_CONFIG } = await import("../core/demo/tiny_teacher.ts");
  const { benchGenerate } = await import("../core/bench/bench_generate.ts");
  const { benchTrain } = await import("../core/bench/bench_train.ts");
  const { benchSample } = await import("../core/bench/bench_sample.ts");
  const { benchLpips } = await import("../core/bench/bench_lpips.ts");
  const jobs: Record<string, unknown> = {};
  const step = async (name: string, fn: () => Promise<unknown>) => {
    const t0 = performance.now();
    try {
      jobs[name] = await fn();
    } catch (e) {
      // A failing job benchmark is reported, not hidden, and the others still run.
      jobs[name] = { error: (e as Error).message };
    }
    console.log(`\n${name} (${((performance.now() - t0) / 1000).toFixed(0)} s):`);
    console.log(JSON.stringify(jobs[name], null, 2));
  };
  await step("unet_small_32x32", () => benchUNet(gpu, { reps: quick ? 1 : 2 }));
  await step(
    "unet_small_32x32_f16",
    () => benchUNet(gpu, { reps: 1, dtype: "f16", train: false, name: "unet_small_f16" }),
  );
  // The demo's tiny teacher UNet (3x12x12 pixels, 8-token captions) at the demo's batch.
  await step(
    "unet_tiny_teacher_12x12",
    () =>
      benchUNet(gpu, {
        config: TEACHER_UNET_CONFIG,
        name: "unet_tiny_teacher",
        batch: 16,
        latent: 12,
        contextLen: 8,
        reps: quick ? 2 : 5,
      }),
  );
  await step("generate", () => benchGenerate(quick ? { workers: [1] } : {}));
  await step("train", () => benchTrain({ gpu, workers: !quick, steps: quick ? 4 : 12 }));
  await step("sample", () => benchSample({ gpu, repeats: quick ? 1 : 3 }));
  await step("lpips_vs_l2", () => benchLpips({ gpu, steps: quick ? 3 : 8 }));
  return jobs;
}

if (import.meta.main) await main();
