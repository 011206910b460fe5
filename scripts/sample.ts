/**
 * `deno task sample --config configs/sample.ts --eval_folder out/run1
 *  [--config.sampling.sample_N=4 ...] [--prompt "a cat" --prompt "a dog"] [--prompts_file p.txt]
 *  [--sigma_var 0] [--ode_tol 1e-5] [--comment ...]`
 *
 * Samples a trained rectified-flow student (the original's `reflow_sample.py`): the score model of
 * `sampling.ckpt_path` (safetensors, the original's `.pth`, or a diffusers UNet folder) integrated
 * with Euler or RK45 from the eval data's z0 (or seeded noise), decoded with the model folder's VAE,
 * written to the eval folder with `caption.txt`, `sample.log` and `summary.json`.
 *
 * Under `mpirun -np N` or `srun` (several GPUs or machines), rank r samples its contiguous share of
 * the indices on the adapter of its local rank (`--devices`, default adapter k for local rank k)
 * and writes `summary.rank{r}.json`, `caption.rank{r}.txt` and `manifest/rank{r}.json`.
 * `--devices 0000:01:00.0` also picks the adapter of a single process.
 */
import { numberArg, parseJobArgs } from "../core/config/cli.ts";
import { loadJobConfig } from "../core/config/overrides.ts";
import { Gpu } from "../core/gpu/device.ts";
import type { SampleConfig } from "../configs/sample.ts";
import { runSample } from "../core/sample/run_sample.ts";
import {
  DEFAULT_ODE_TOL,
  DEFAULT_SIGMA_VAR,
  readPromptsFile,
} from "../core/sample/sample_setup.ts";
import { detectLaunch } from "../core/distributed/launch_env.ts";
import { bindLocalRank } from "../core/distributed/mpi_job.ts";
import { checkBoundAdapter, listAdapters, splitDevicesFlag } from "../core/gpu/adapter_binding.ts";

async function main(): Promise<void> {
  const args = parseJobArgs(Deno.args, {
    name: "sample",
    description: "Sample a rectified-flow student UNet (Euler or RK45) and save the images.",
    defaultConfig: "configs/sample.ts",
    options: [
      {
        flags: "--eval_folder <dir>",
        description: "output folder (samples/, caption.txt, sample.log, summary.json, ...)",
        required: true,
      },
      {
        flags: "--prompt <text>",
        description: "sample this prompt from seeded noise instead of the eval data",
        repeatable: true,
      },
      {
        flags: "--prompts_file <file>",
        description: "sample these prompts (one a line) from seeded noise instead of the eval data",
      },
      {
        flags: "--sigma_var <v>",
        description: "Euler SDE variance (the original's sigma_var)",
        default: String(DEFAULT_SIGMA_VAR),
      },
      {
        flags: "--ode_tol <tol>",
        description: "RK45 rtol = atol (the original's ode_tol)",
        default: String(DEFAULT_ODE_TOL),
      },
      {
        flags: "--devices <list>",
        description: "adapter (or, under mpirun/srun, adapters by local rank): indices, PCI bus " +
          "ids or vendor:device ids, comma-separated",
      },
      { flags: "--share_adapter", description: "allow several ranks of a machine on one adapter" },
    ],
  });
  const config = await loadJobConfig<SampleConfig>(args);
  const prompts = [...(args.options.prompt as string[])];
  const file = args.options.prompts_file;
  if (typeof file === "string") prompts.push(...(await readPromptsFile(file)));
  // One adapter per rank, one share of the samples per rank.
  const launch = detectLaunch(Deno.env.toObject());
  const devices = typeof args.options.devices === "string"
    ? splitDevicesFlag(args.options.devices)
    : undefined;
  if (launch || devices) {
    bindLocalRank(
      await listAdapters(),
      launch?.localRank ?? 0,
      launch ? launch.localSize : 1,
      devices,
      args.options.share_adapter === true,
    );
  }
  const gpu = await Gpu.open();
  console.error(
    `sample${launch ? ` rank ${launch.rank}/${launch.worldSize}` : ""}: adapter ` +
      checkBoundAdapter(gpu.info),
  );
  await runSample({
    gpu,
    config,
    evalFolder: String(args.options.eval_folder),
    prompts,
    sigmaVar: numberArg(args.options.sigma_var, "--sigma_var", { min: 0 }),
    odeTol: numberArg(args.options.ode_tol, "--ode_tol", { min: 0, minExclusive: true }),
    comment: args.comment,
    shard: launch ? { rank: launch.rank, worldSize: launch.worldSize } : undefined,
  });
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`sample: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
