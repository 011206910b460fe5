/**
 * `deno run -A scripts/check_adapter.ts [--require texture,f16] [--json]`: opens the WebGPU adapter
 * Deno finds, runs the capability probes and prints one line naming it, its backend and the kernel
 * paths it can run. scripts/setup.sh uses the exit code to decide whether to install Mesa's Vulkan
 * driver: 0 all asked-for paths work, 2 a path is missing (e.g. wgpu's GL backend), 3 no adapter.
 *
 * @module
 */

import { checkAdapter, parseRequired } from "../core/gpu/adapter_check.ts";

const args = [...Deno.args];
const at = args.indexOf("--require");
const required = parseRequired(at >= 0 ? args[at + 1] : "");
const r = await checkAdapter(required);
console.log(args.includes("--json") ? JSON.stringify(r) : r.line);
Deno.exit(r.code);
