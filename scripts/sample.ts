/**
 * `deno task sample --config configs/sample.ts --eval_folder out/run1
 *  [--config.sampling.sample_N=4 ...] [--prompt "a cat" --prompt "a dog"] [--prompts_file p.txt]
 *  [--sigma_var 0] [--ode_tol 1e-5] [--comment ...]`
 *
 * Samples a trained rectified-flow student (the original's `reflow_sample.py`): the score model of
 * `sampling.ckpt_path` (safetensors, the original's `.pth`, or a diffusers UNet folder) integrated
 * with Euler or RK45 from the eval data's z0 (or seeded noise), decoded with the model folder's VAE,
 * written to the eval folder with `caption.txt`, `sample.log` and `summary.json`.
 */
import { loadJobConfig, parseJobArgs } from "../core/config/overrides.ts";
import { Gpu } from "../core/gpu/device.ts";
import type { SampleConfig } from "../configs/sample.ts";
import {
  DEFAULT_ODE_TOL,
  DEFAULT_SIGMA_VAR,
  readPromptsFile,
  runSample,
} from "../core/sample/run_sample.ts";

/** Pulls every `--prompt <text>` / `--prompt=<text>` out of argv (commander keeps only the last). */
function takePrompts(argv: readonly string[]): { rest: string[]; prompts: string[] } {
  const rest: string[] = [];
  const prompts: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--") {
      rest.push(...argv.slice(i));
      break;
    }
    if (a.startsWith("--prompt=")) prompts.push(a.slice("--prompt=".length));
    else if (a === "--prompt") {
      if (i + 1 >= argv.length) {
        throw new Error("sample: option '--prompt <text>' argument missing");
      }
      prompts.push(argv[++i]);
    } else rest.push(a);
  }
  return { rest, prompts };
}

function numberOption(v: unknown, flag: string, min: number, strict: boolean): number {
  const x = Number(v);
  if (!Number.isFinite(x) || (strict ? x <= min : x < min)) {
    throw new Error(`${flag} must be a number ${strict ? ">" : ">="} ${min}, got ${v}`);
  }
  return x;
}

async function main(): Promise<void> {
  const { rest, prompts } = takePrompts(Deno.args);
  const args = parseJobArgs(rest, {
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
        description: "sample this prompt from seeded noise instead of the eval data (repeatable)",
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
    ],
  });
  const config = await loadJobConfig<SampleConfig>(args);
  const file = args.options.prompts_file;
  if (typeof file === "string") prompts.push(...(await readPromptsFile(file)));
  const gpu = await Gpu.open();
  await runSample({
    gpu,
    config,
    evalFolder: String(args.options.eval_folder),
    prompts,
    sigmaVar: numberOption(args.options.sigma_var, "--sigma_var", 0, false),
    odeTol: numberOption(args.options.ode_tol, "--ode_tol", 0, true),
    comment: args.comment,
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
