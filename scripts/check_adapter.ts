/**
 * `deno run -A scripts/check_adapter.ts [--require texture,f16] [--json]`: opens the WebGPU adapter
 * Deno finds, runs the capability probes and prints one line naming it, its backend and the kernel
 * paths it can run. scripts/setup.sh uses the exit code to decide whether to install Mesa's Vulkan
 * driver: 0 all asked-for paths work, 2 a path is missing (e.g. wgpu's GL backend), 3 no adapter.
 *
 * @module
 */

import { parseCommand } from "../core/config/cli.ts";
import { checkAdapter, parseRequired } from "../core/gpu/adapter_check.ts";

const o = parseCommand<{ require: string; json: boolean }>(Deno.args, {
  name: "check_adapter",
  usage: "deno run -A scripts/check_adapter.ts [--require texture,f16] [--json]",
  description: "Probe the WebGPU adapter and name the kernel paths it can run. Exit code: 0 all " +
    "required paths work, 2 a path is missing, 3 no adapter.",
  options: [
    {
      flags: "--require <paths>",
      description: "kernel paths that must work, comma-separated: texture, f16",
      default: "",
    },
    { flags: "--json", description: "print the verdict as JSON", default: false },
  ],
});
let required;
try {
  required = parseRequired(o.require);
} catch (e) {
  console.error(`check_adapter: ${(e as Error).message}`);
  Deno.exit(1);
}
const r = await checkAdapter(required);
console.log(o.json ? JSON.stringify(r) : r.line);
Deno.exit(r.code);
