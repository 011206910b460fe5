/**
 * Runs benchmark cases: warm up once (compiles the pipeline), then launch the op `reps` times and
 * `await gpu.sync()` once around the whole batch, so per-launch host overhead and the ~10 ms sync cost
 * are amortised. The repetition count adapts to the warm-up time to keep the whole run short.
 */
import type { Gpu } from "../gpu/device.ts";
import { noGradAsync } from "../tensor/autograd.ts";
import type { BenchCase } from "./cases.ts";

/** One benchmark result row (the JSON record's `results` entries). */
export interface BenchResult {
  name: string;
  shape: string;
  dtype: string;
  ms: number;
  gflops: number | null;
  pct_of_peak: number | null;
}

/** Options of {@link runCase}. */
export interface RunOptions {
  /** Target wall time of the timed batch in ms (default 1500). */
  targetMs?: number;
  /** Most repetitions in the timed batch (default 20). */
  maxReps?: number;
}

/** Times one case; `peak` (GFLOP/s) gives the percentage column. */
export function runCase(
  gpu: Gpu,
  c: BenchCase,
  peak: number,
  opts: RunOptions = {},
): Promise<BenchResult> {
  return noGradAsync(async () => {
    const { run, dispose } = c.setup(gpu);
    try {
      await gpu.sync();
      let t0 = performance.now();
      run().dispose();
      await gpu.sync();
      const warm = performance.now() - t0;
      const reps = Math.max(
        1,
        Math.min(opts.maxReps ?? 20, Math.floor((opts.targetMs ?? 1500) / Math.max(warm, 1e-3))),
      );
      t0 = performance.now();
      for (let i = 0; i < reps; i++) run().dispose();
      await gpu.sync();
      const ms = (performance.now() - t0) / reps;
      const gflops = c.flops > 0 ? c.flops / (ms * 1e6) : null;
      return {
        name: c.name,
        shape: c.shape,
        dtype: c.dtype,
        ms,
        gflops,
        pct_of_peak: gflops !== null && peak > 0 ? (100 * gflops) / peak : null,
      };
    } finally {
      dispose();
    }
  });
}

/** Formats results as a markdown table. */
export function formatTable(results: (BenchResult & { peak_nearby_gflops?: number })[]): string {
  const rows = [
    "| op | shape | dtype | ms | GFLOP/s | peak nearby | % of peak |",
    "| --- | --- | --- | ---: | ---: | ---: | ---: |",
  ];
  for (const r of results) {
    rows.push(
      `| ${r.name} | ${r.shape} | ${r.dtype} | ${r.ms.toFixed(2)} | ${
        r.gflops === null ? "-" : r.gflops.toFixed(2)
      } | ${r.peak_nearby_gflops?.toFixed(1) ?? "-"} | ${
        r.pct_of_peak === null ? "-" : r.pct_of_peak.toFixed(1)
      } |`,
    );
  }
  return rows.join("\n");
}
