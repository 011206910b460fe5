/**
 * `deno task generate --config configs/generate.ts [--config.total_nums=8 ...]
 *  [--devices 0,1 | --devices 0000:01:00.0,0000:41:00.0] [--share_adapter]`: the teacher draws
 * (z0, z1) pairs for captions (the original's `reflow_generate_data.py`). Outputs go to
 * `<save_dir>[/part{n}]/index.json` and `content/{captions.txt,images/{i}.npy}`; rerun the same
 * command to resume an interrupted run.
 *
 * One worker process per entry of `devices`, each confined to that adapter (see
 * core/gpu/adapter_binding.ts). Started by `mpirun -np N` or `srun` on several machines, rank r
 * makes its contiguous share of the pairs (the same files one machine would make) and writes
 * `manifest/rank{r}.json`.
 *
 * @module
 */

import { parseJobArgs } from "../core/config/cli.ts";
import { formatConfig, loadJobConfig } from "../core/config/overrides.ts";
import type { GenerateConfig } from "../configs/generate.ts";
import { runGenerate } from "../core/generate/generate.ts";
import { splitDevicesFlag } from "../core/gpu/adapter_binding.ts";
import { shardFromEnv } from "../core/distributed/shard.ts";

const args = parseJobArgs(Deno.args, {
  name: "generate",
  description: "Generate (noise, teacher latent, caption) triples for reflow training.",
  defaultConfig: "configs/generate.ts",
  options: [
    {
      flags: "--devices <list>",
      description: "adapters of the workers, comma-separated: indices, PCI bus ids or " +
        "vendor:device ids (default: config.devices)",
    },
    { flags: "--share_adapter", description: "allow several workers on one adapter" },
  ],
});

try {
  const config = await loadJobConfig<GenerateConfig>(args);
  console.log(formatConfig(config));
  if (args.comment) console.log(`comment: ${args.comment}`);
  const devices = typeof args.options.devices === "string"
    ? splitDevicesFlag(args.options.devices)
    : undefined;
  await runGenerate(config, {
    devices,
    shareAdapter: args.options.share_adapter === true,
    shard: shardFromEnv(),
  });
} catch (err) {
  console.error(`generate: ${(err as Error).message}`);
  Deno.exit(1);
}
