/**
 * A run killed while saving: between `checkpoint_s{N}/` and `score_model_s{N}.safetensors`, inside
 * the swap of an older copy of the same step, or while writing temporaries. The next start removes
 * the temporaries, restores the set-aside checkpoint and writes the missing score model from the
 * checkpoint's EMA weights, byte-identical to the one the loop writes; resuming then goes on.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { testGpu } from "../helpers/gpu.ts";
import { makeTinyRoots, tinyConfig, tinyInit } from "./_tiny.ts";
import { runTraining } from "../../core/train/trainer.ts";
import { repairCheckpoints } from "../../core/train/train_state.ts";

const names = (dir: string) => [...Deno.readDirSync(dir)].map((e) => e.name).sort();

Deno.test("resume completes a missing score model export and cleans interrupted saves", async () => {
  const gpu = await testGpu();
  const tmp = await Deno.makeTempDir({ prefix: "reflow_repair_" });
  try {
    await makeTinyRoots(join(tmp, "data"), 6);
    const config = () => {
      const c = tinyConfig(join(tmp, "data"));
      c.training.snapshot_freq = 1;
      c.training.num_steps = 2;
      c.training.timestep_orientation = "pretrained"; // carried into the score model's metadata
      return c;
    };
    const workdir = join(tmp, "run");
    const ckpts = join(workdir, "checkpoints");
    await runTraining(await tinyInit(gpu, config(), workdir));
    const s1 = await Deno.readFile(join(ckpts, "score_model_s1.safetensors"));
    const s2 = await Deno.readFile(join(ckpts, "score_model_s2.safetensors"));

    // Killed after checkpoint_s2/ but before its score model; and killed mid-swap of a second
    // checkpoint_s1 (the old copy set aside, the new one never renamed in), with temporaries.
    await Deno.remove(join(ckpts, "score_model_s2.safetensors"));
    await Deno.writeFile(join(ckpts, "score_model_s2.safetensors.tmp"), s2.subarray(0, 100));
    await Deno.remove(join(ckpts, "score_model_s1.safetensors"));
    await Deno.rename(join(ckpts, "checkpoint_s1"), join(ckpts, "checkpoint_s1.old-4242"));
    await Deno.mkdir(join(ckpts, "checkpoint_s1.tmp-4242"));
    await Deno.writeTextFile(join(ckpts, "checkpoint_s1.tmp-4242", "state.json"), "{");
    await Deno.mkdir(join(ckpts, "checkpoint_s2.tmp-777"));

    const c = config();
    c.training.num_steps = 3;
    c.training.ckpt_path = join(ckpts, "checkpoint_s2");
    const r = await runTraining(await tinyInit(gpu, c, workdir));
    assert.equal(r.step, 3);
    assert.deepEqual(names(ckpts), [
      "checkpoint_s1",
      "checkpoint_s2",
      "checkpoint_s3",
      "score_model_s1.safetensors",
      "score_model_s2.safetensors",
      "score_model_s3.safetensors",
    ]);
    assert.deepEqual(await Deno.readFile(join(ckpts, "score_model_s2.safetensors")), s2);
    assert.deepEqual(await Deno.readFile(join(ckpts, "score_model_s1.safetensors")), s1);
    const log = await Deno.readTextFile(join(workdir, "exp.log"));
    assert.match(log, /wrote the missing .*score_model_s2\.safetensors from its checkpoint/);
    assert.match(log, /restored .*checkpoint_s1 \(from checkpoint_s1\.old-4242\)/);
    assert.match(log, /removed .*checkpoint_s2\.tmp-777 \(left by an interrupted save\)/);

    // Nothing to do on a tidy folder; a checkpoint whose state cannot be read is reported, not
    // exported.
    assert.deepEqual(await repairCheckpoints(ckpts), {
      removed: [],
      restored: [],
      exported: [],
      skipped: [],
    });
    await Deno.remove(join(ckpts, "score_model_s3.safetensors"));
    await Deno.writeTextFile(join(ckpts, "checkpoint_s3", "state.json"), "{ broken");
    const rep = await repairCheckpoints(ckpts);
    assert.equal(rep.exported.length, 0);
    assert.match(rep.skipped.join("\n"), /score_model_s3\.safetensors: cannot read .*state\.json/);
    assert.deepEqual(await repairCheckpoints(join(tmp, "nowhere")), {
      removed: [],
      restored: [],
      exported: [],
      skipped: [],
    });
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
