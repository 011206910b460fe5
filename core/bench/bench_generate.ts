/**
 * Benchmark of the generate job on the tiny pipeline fixture: pairs per second with 1 and with
 * 2 worker processes (each its own WebGPU device on the same adapter). The rate covers a whole
 * run: worker start-up, model loading, the teacher and the writes.
 *
 * @module
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { getConfig } from "../../configs/generate.ts";
import { runGenerate } from "../generate/generate.ts";

/** The tiny pipeline fixture (made by core/generate/tiny_pipeline.ts). */
export const TINY_PIPELINE_DIR = fileURLToPath(
  new URL("../../tests/fixtures/tiny_pipeline", import.meta.url),
);

/** Options of {@link benchGenerate}. */
export interface BenchGenerateOptions {
  /** Pairs per run (default 4). */
  totalNums?: number;
  /** Teacher steps (default 3). */
  inferSteps?: number;
  /** Batch size (default 2). */
  bs?: number;
  /** Worker counts to time (default [1, 2]). */
  workers?: number[];
  /** Model folder (default the tiny fixture). */
  modelDir?: string;
}

/** One timed configuration. */
export interface BenchGenerateResult {
  workers: number;
  pairs: number;
  seconds: number;
  pairsPerSecond: number;
}

/** Times the generate job for each worker count; returns pairs/s per count. */
export async function benchGenerate(
  opts: BenchGenerateOptions = {},
): Promise<BenchGenerateResult[]> {
  const tmp = await Deno.makeTempDir({ prefix: "reflow-bench-generate-" });
  try {
    const captions = join(tmp, "captions.txt");
    await Deno.writeTextFile(
      captions,
      ["a red cube", "a photo of a cat", "two dogs on a beach", "a city at night"].join("\n"),
    );
    const out: BenchGenerateResult[] = [];
    for (const w of opts.workers ?? [1, 2]) {
      const config = getConfig();
      config.model_dir = opts.modelDir ?? TINY_PIPELINE_DIR;
      config.captions_file = captions;
      config.save_dir = join(tmp, `w${w}`);
      config.total_nums = opts.totalNums ?? 4;
      config.infer_steps = opts.inferSteps ?? 3;
      config.bs = opts.bs ?? 2;
      // w workers on this machine's first adapter (sharing an adapter must be asked for).
      config.devices = Array.from({ length: w }, () => 0);
      const r = await runGenerate(config, { log: () => {}, progress: false, shareAdapter: true });
      out.push({
        workers: r.workers,
        pairs: r.generated,
        seconds: r.seconds,
        pairsPerSecond: r.pairsPerSecond,
      });
    }
    return out;
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  for (const r of await benchGenerate()) {
    console.log(
      `generate (tiny): ${r.workers} worker(s): ${r.pairs} pairs in ${r.seconds.toFixed(2)} s = ` +
        `${r.pairsPerSecond.toFixed(3)} pairs/s`,
    );
  }
}
