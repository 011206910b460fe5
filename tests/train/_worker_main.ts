/**
 * A worker process of workers_test.ts: the tiny model and data of the test, joined to rank 0 over
 * loopback TCP. Arguments: <dataRoot> <workdir> <port> <rank> <worldSize> <batchSize> <steps>.
 */
import { Gpu } from "../../core/gpu/device.ts";
import { connectWorker } from "../../core/dist/allreduce.ts";
import { runTraining } from "../../core/train/trainer.ts";
import { tinyConfig, tinyInit } from "./_tiny.ts";
import { saveModule } from "../../core/models/load.ts";
import { join } from "node:path";

const [dataRoot, workdir, port, rank, world, bs, steps] = Deno.args;
const exchange = await connectWorker(Number(port), Number(rank), Number(world));
const gpu = await Gpu.open();
const c = tinyConfig(dataRoot);
c.training.batch_size = Number(bs);
c.training.num_steps = Number(steps);
try {
  const init = await tinyInit(gpu, c, workdir, { exchange });
  await runTraining(init);
  await Deno.mkdir(workdir, { recursive: true });
  await saveModule(init.models.unet, join(workdir, "final.safetensors"));
} finally {
  exchange.close();
}
