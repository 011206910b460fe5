/**
 * One rank of mpi_train_test.ts, started by mpirun: joins the MPI job (bound to its adapter by
 * local rank), trains the tiny model of tests/train/_tiny.ts on its shard of every batch, and
 * saves its final weights as `<workdir>/rank{r}.safetensors`. Prints `rank r pid P` and
 * `rank r step s` lines for the tests that kill or stop a rank. Argument: a JSON object with
 * data, workdir, batch, steps and optional bucketBytes, transport, overlap, timeoutSecs.
 */
import { join } from "node:path";
import { Gpu } from "../../core/gpu/device.ts";
import { checkBoundAdapter } from "../../core/gpu/adapter_binding.ts";
import { joinMpiJob } from "../../core/distributed/mpi_job.ts";
import { runTraining } from "../../core/train/trainer.ts";
import { saveModule } from "../../core/models/load.ts";
import type { Transport } from "../../core/distributed/allreduce.ts";
import { tinyConfig, tinyInit } from "../train/_tiny.ts";

const o = JSON.parse(Deno.args[0]) as {
  data: string;
  workdir: string;
  batch: number;
  steps: number;
  bucketBytes?: number;
  transport?: Transport;
  overlap?: boolean;
  timeoutSecs?: number;
};
const { exchange } = await joinMpiJob({ shareAdapter: true, timeoutSecs: o.timeoutSecs ?? 120 });
const r = exchange.rank;
console.log(`rank ${r} pid ${Deno.pid}`);
const gpu = await Gpu.open();
console.log(`rank ${r} adapter ${checkBoundAdapter(gpu.info)}`);
const c = tinyConfig(o.data);
c.training.batch_size = o.batch;
c.training.num_steps = o.steps;
const init = await tinyInit(gpu, c, join(o.workdir, `run${r}`), {
  exchange,
  dist: { bucketBytes: o.bucketBytes, transport: o.transport, overlap: o.overlap },
  onStep: (s) => console.log(`rank ${r} step ${s}`),
});
await runTraining(init);
await saveModule(init.models.unet, join(o.workdir, `rank${r}.safetensors`));
exchange.close();
gpu.destroy();
