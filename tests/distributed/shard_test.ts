/**
 * Splitting generate and sample among ranks: rank detection from each launcher's variables,
 * contiguous shares, manifests; two ranks of generate (started by mpirun, each with its own
 * worker) write byte-identical pairs to one process's run, and two shares of sample the same
 * images as one run, each rank saying in its manifest which indices it wrote.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { detectLaunch } from "../../core/distributed/launch_env.ts";
import { indexRuns, shardRange } from "../../core/distributed/shard.ts";
import { getConfig as generateConfig } from "../../configs/generate.ts";
import { getConfig as sampleConfig } from "../../configs/sample.ts";
import { runGenerate } from "../../core/generate/generate.ts";
import { runSample } from "../../core/sample/run_sample.ts";
import { testGpu } from "../helpers/gpu.ts";
import { mpiTest } from "./_mpi.ts";

Deno.test("launch detection: Open MPI, Hydra (PMI), srun; a batch script is no launch", () => {
  assert.deepEqual(
    detectLaunch({
      OMPI_COMM_WORLD_RANK: "3",
      OMPI_COMM_WORLD_SIZE: "4",
      OMPI_COMM_WORLD_LOCAL_RANK: "1",
      OMPI_COMM_WORLD_LOCAL_SIZE: "2",
      SLURM_PROCID: "0", // mpirun inside a Slurm allocation: Open MPI's variables win
      SLURM_STEP_NUM_TASKS: "1",
    }),
    { launcher: "open-mpi", rank: 3, worldSize: 4, localRank: 1, localSize: 2 },
  );
  assert.deepEqual(
    detectLaunch({ PMI_RANK: "1", PMI_SIZE: "2", MPI_LOCALRANKID: "0", MPI_LOCALNRANKS: "1" }),
    { launcher: "pmi", rank: 1, worldSize: 2, localRank: 0, localSize: 1 },
  );
  assert.deepEqual(
    detectLaunch({
      SLURM_PROCID: "5",
      SLURM_STEP_NUM_TASKS: "6",
      SLURM_LOCALID: "1",
      SLURM_NODEID: "2",
      SLURM_STEP_TASKS_PER_NODE: "2(x2),2",
    }),
    { launcher: "slurm", rank: 5, worldSize: 6, localRank: 1, localSize: 2 },
  );
  // sbatch's own script: SLURM_PROCID but no job step.
  assert.equal(detectLaunch({ SLURM_PROCID: "0", SLURM_NTASKS: "8" }), null);
  assert.equal(detectLaunch({ OMPI_COMM_WORLD_RANK: "0", OMPI_COMM_WORLD_SIZE: "1" }), null);
  assert.throws(() => detectLaunch({ PMI_RANK: "x", PMI_SIZE: "2" }), /PMI_RANK="x"/);
  assert.throws(() => detectLaunch({ PMI_RANK: "2", PMI_SIZE: "2" }), /rank 2 of 2/);
});

Deno.test("shares: contiguous, covering, empty past the end; index runs", () => {
  for (const [total, n] of [[10, 3], [4, 4], [2, 3], [0, 2], [1000, 7]]) {
    const seen: number[] = [];
    for (let r = 0; r < n; r++) {
      const [lo, hi] = shardRange(total, { rank: r, worldSize: n });
      assert.ok(lo <= hi);
      for (let i = lo; i < hi; i++) seen.push(i);
    }
    assert.deepEqual(seen, Array.from({ length: total }, (_, i) => i), `${total} over ${n}`);
  }
  assert.deepEqual(shardRange(10, { rank: 1, worldSize: 3 }), [4, 8]);
  assert.throws(() => shardRange(10, { rank: 3, worldSize: 3 }), /rank 3 of 3/);
  assert.deepEqual(indexRuns([5, 0, 2, 1, 1]), [[0, 2], [5, 5]]);
});

const TINY = fileURLToPath(new URL("../fixtures/tiny_pipeline", import.meta.url));
const GENERATE = fileURLToPath(new URL("../../scripts/generate.ts", import.meta.url));

async function files(dir: string): Promise<Map<string, Uint8Array>> {
  const m = new Map<string, Uint8Array>();
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile) m.set(e.name, await Deno.readFile(join(dir, e.name)));
  }
  return m;
}

Deno.test({
  ...mpiTest("generate under mpirun -np 2: each rank its share, same bytes, manifests"),
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "reflow-shard-gen-" });
    try {
      const caps = join(dir, "caps.txt");
      await Deno.writeTextFile(caps, "a red cube\na cat\ntwo dogs\n");
      const c = {
        ...generateConfig(),
        model_dir: TINY,
        captions_file: caps,
        total_nums: 5,
        infer_steps: 2,
        seed: 9,
        bs: 2,
        dtype: "fp32" as const,
        save_dir: join(dir, "one"),
      };
      await runGenerate(c, { log: () => {}, progress: false });
      const o = await new Deno.Command("mpirun", {
        args: [
          "--allow-run-as-root",
          "--oversubscribe",
          "-np",
          "2",
          Deno.execPath(),
          "run",
          "-A",
          "--no-check",
          GENERATE,
          `--config.model_dir=${TINY}`,
          `--config.captions_file=${caps}`,
          "--config.total_nums=5",
          "--config.infer_steps=2",
          "--config.seed=9",
          "--config.bs=3",
          "--config.dtype=fp32",
          `--config.save_dir=${join(dir, "two")}`,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const dec = new TextDecoder();
      const out = dec.decode(o.stdout) + dec.decode(o.stderr);
      assert.equal(o.code, 0, out);
      assert.match(out, /rank 0 of 2: pairs 0\.\.2/);
      assert.match(out, /rank 1 of 2: pairs 3\.\.4/);
      const a = await files(join(dir, "one", "content", "images"));
      const b = await files(join(dir, "two", "content", "images"));
      assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
      for (const [k, v] of a) assert.deepEqual(b.get(k), v, `pair file ${k}`);
      for (const [r, range, written] of [[0, [0, 3], [[0, 2]]], [1, [3, 5], [[3, 4]]]] as const) {
        const m = JSON.parse(
          await Deno.readTextFile(join(dir, "two", "manifest", `rank${r}.json`)),
        );
        assert.equal(m.job, "generate");
        assert.equal(m.world_size, 2);
        assert.deepEqual(m.range, range);
        assert.deepEqual(m.written, written);
        assert.deepEqual(m.kept, []);
        assert.match(m.details.workers[0].adapter, /adapter .*vendor 0x/);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "sample in two shares = one run: same images per index, manifests, per-rank files",
  sanitizeResources: false,
  async fn() {
    const gpu = await testGpu();
    const dir = await Deno.makeTempDir({ prefix: "reflow-shard-sample-" });
    try {
      const config = sampleConfig();
      config.diffusers.ckpt_path = "models/tiny_teacher";
      config.sampling.ckpt_path = "models/tiny_student/unet/diffusion_pytorch_model.safetensors";
      config.data.image_size = 12;
      config.data.num_channels = 3;
      config.sampling.batch_size = 2;
      config.sampling.sample_N = 2;
      const prompts = ["a red circle", "a blue square", "a green triangle", "a red square", "x"];
      const quiet = { console: false, progress: false };
      const one = await runSample({ gpu, config, evalFolder: join(dir, "one"), prompts, ...quiet });
      const parts = [];
      for (const rank of [1, 0]) {
        const shard = { rank, worldSize: 2 };
        parts[rank] = await runSample({
          gpu,
          config,
          evalFolder: join(dir, "two"),
          prompts,
          shard,
          ...quiet,
        });
      }
      assert.deepEqual(parts[0].samples.map((s) => s.index), [0, 1, 2]);
      assert.deepEqual(parts[1].samples.map((s) => s.index), [3, 4]);
      assert.deepEqual(
        [...parts[0].samples, ...parts[1].samples].map((s) => s.straightness),
        one.samples.map((s) => s.straightness),
      );
      const a = await files(join(dir, "one", "samples"));
      const b = await files(join(dir, "two", "samples"));
      assert.equal(b.size, 5);
      for (const [k, v] of a) assert.deepEqual(b.get(k), v, `image ${k}`);
      const names = [...(await files(join(dir, "two"))).keys()].sort();
      assert.deepEqual(names, [
        "caption.rank0.txt",
        "caption.rank1.txt",
        "sample.rank0.log",
        "sample.rank1.log",
        "summary.rank0.json",
        "summary.rank1.json",
      ]);
      assert.equal(
        await Deno.readTextFile(join(dir, "two", "caption.rank1.txt")),
        "a red square\nx\n",
      );
      const m1 = JSON.parse(await Deno.readTextFile(join(dir, "two", "manifest", "rank1.json")));
      assert.deepEqual([m1.job, m1.rank, m1.range, m1.written], ["sample", 1, [3, 5], [[3, 4]]]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
