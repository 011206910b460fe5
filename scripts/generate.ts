/**
 * `deno task generate --config configs/generate.ts [--config.total_nums=8 ...]`: the teacher draws
 * (z0, z1) pairs for captions (the original's `reflow_generate_data.py`). Outputs go to
 * `<save_dir>[/part{n}]/index.json` and `content/{captions.txt,images/{i}.npy}`; rerun the same
 * command to resume an interrupted run.
 *
 * @module
 */

import { formatConfig, loadJobConfig, parseJobArgs } from "../core/config/overrides.ts";
import type { GenerateConfig } from "../configs/generate.ts";
import { runGenerate } from "../core/pipeline/generate.ts";

const args = parseJobArgs(Deno.args, {
  name: "generate",
  description: "Generate (noise, teacher latent, caption) triples for reflow training.",
  defaultConfig: "configs/generate.ts",
});

try {
  const config = await loadJobConfig<GenerateConfig>(args);
  console.log(formatConfig(config));
  if (args.comment) console.log(`comment: ${args.comment}`);
  await runGenerate(config);
} catch (err) {
  console.error(`generate: ${(err as Error).message}`);
  Deno.exit(1);
}
