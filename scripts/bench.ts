/**
 * `deno task bench [--quick] [--json FILE] [--filter NAME]`: measures the adapter's register-only FMA
 * peak, then the kernel cases of core/bench/cases.ts; prints a markdown table and optionally writes
 * the JSON record {adapter, peak_gflops, results}.
 */
import { Gpu } from "../core/gpu/device.ts";
import { measurePeak } from "../core/bench/peak.ts";
import { BENCH_CASES } from "../core/bench/cases.ts";
import { type BenchResult, formatTable, runCase } from "../core/bench/run.ts";

function parseArgs(args: string[]): { quick: boolean; json?: string; filter?: string } {
  const out: { quick: boolean; json?: string; filter?: string } = { quick: false };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--quick") out.quick = true;
    else if (a === "--json") out.json = args[++i];
    else if (a === "--filter") out.filter = args[++i];
    else if (a === "--help" || a === "-h") {
      console.log("usage: deno task bench [--quick] [--json FILE] [--filter NAME]");
      Deno.exit(0);
    } else throw new Error(`bench: unknown argument '${a}'`);
  }
  if (args.includes("--json") && !out.json) throw new Error("bench: --json needs a file name");
  return out;
}

async function main(): Promise<void> {
  const opts = parseArgs(Deno.args);
  const gpu = await Gpu.open();
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
  if (opts.json) {
    const record = { adapter, peak_gflops: peak, date: new Date().toISOString(), results };
    await Deno.writeTextFile(opts.json, JSON.stringify(record, null, 2) + "\n");
    console.log(`wrote ${opts.json}`);
  }
  gpu.destroy();
}

if (import.meta.main) await main();
