/**
 * A worker process of adapter_binding_test.ts: opens the GPU as every worker does, checks the
 * adapter against its binding (REFLOW_ADAPTER) and prints the log line.
 */
import { Gpu } from "../../core/gpu/device.ts";
import { checkBoundAdapter } from "../../core/gpu/adapter_binding.ts";

const gpu = await Gpu.open();
try {
  console.log(`adapter: ${checkBoundAdapter(gpu.info)}`);
} catch (e) {
  console.error((e as Error).message);
  Deno.exit(1);
} finally {
  gpu.destroy();
}
