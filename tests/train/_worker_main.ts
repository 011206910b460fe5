/**
 * A worker process of workers_test.ts: the tiny model and data of the test, joined to rank 0 over
 * loopback TCP, on the adapter its environment binds it to (checked and printed).
 * Arguments: <dataRoot> <workdir> <port> <rank> <worldSize> <batchSize> <steps> <variant>.
 */
import { Gpu } from "../../core/gpu/device.ts";
import { checkBoundAdapter } from "../../core/gpu/adapter_binding.ts";
import { connectWorker } from "../../core/distributed/allreduce.ts";
import { runTraining } from "../../core/train/trainer.ts";
import { tinyInit, type TinyVariant, tinyVariant } from "./_tiny.ts";
import { saveModule } from "../../core/models/load.ts";
import { join } from "node:path";

const [dataRoot, workdir, port, rank, world, bs, steps, variant] = Deno.args;
const exchange = await connectWorker(Number(port), Number(rank), Number(world));
const gpu = await Gpu.open();
console.log(`worker ${rank} adapter ${checkBoundAdapter(gpu.info)}`);
const c = tinyVariant(dataRoot, variant as TinyVariant);
c.training.batch_size = Number(bs);
c.training.num_steps = Number(steps);
try {
  const init = await tinyInit(gpu, c, workdir, { exchange, dist: { bucketBytes: 64 * 1024 } });
  await runTraining(init);
  await Deno.mkdir(workdir, { recursive: true });
  await saveModule(init.models.unet, join(workdir, "final.safetensors"));
} finally {
  exchange.close();
}
