/**
 * Resume: a run stopped after step 3 (checkpoint written as Ctrl-C would) and resumed from
 * `checkpoint_s3` gives the same losses and the same weights, EMA and optimizer state as an
 * uninterrupted run — with gradient accumulation, random flips and fresh noise (randz0 "random")
 * so every resumable piece of state is exercised.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { testGpu } from "../helpers/gpu.ts";
import { makeTinyRoots, readAll, tinyConfig, tinyInit } from "./_tiny.ts";
import { runTraining } from "../../core/train/trainer.ts";

function assertSameTensors(
  a: Map<string, Float32Array>,
  b: Map<string, Float32Array>,
  what: string,
) {
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort(), `${what}: keys`);
  let worst = 0;
  for (const [k, x] of a) {
    const y = b.get(k)!;
    for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]));
  }
  assert.ok(worst <= 1e-6, `${what}: max difference ${worst}`);
}

Deno.test("interrupted + resumed training equals uninterrupted training", async () => {
  const gpu = await testGpu();
  const tmp = await Deno.makeTempDir({ prefix: "reflow_resume_" });
  try {
    await makeTinyRoots(join(tmp, "data"), 6);
    const config = () => {
      const c = tinyConfig(join(tmp, "data"));
      c.training.gradient_accumulation_steps = 2;
      c.training.randz0 = "random";
      c.data.random_flip = true;
      c.training.snapshot_freq = 1000;
      c.training.num_steps = 5;
      c.diffusers.gradient_checkpointing = true;
      return c;
    };
    const full = await runTraining(await tinyInit(gpu, config(), join(tmp, "full")));
    assert.equal(full.step, 5);
    assert.equal(full.interrupted, false);

    const first = await runTraining(
      await tinyInit(gpu, config(), join(tmp, "part"), { stopAtStep: 3 }),
    );
    assert.equal(first.step, 3);
    assert.equal(first.interrupted, true);
    const ckpt = join(tmp, "part", "checkpoints", "checkpoint_s3");
    assert.equal(first.lastCheckpoint, ckpt);
    const c2 = config();
    c2.training.ckpt_path = ckpt;
    const second = await runTraining(await tinyInit(gpu, c2, join(tmp, "part")));
    assert.equal(second.step, 5);
    assert.equal(second.stepsRun, 2);

    // Every read-back loss agrees (log_freq 2: steps 1, 2, 4 and the last).
    for (const [s, v] of full.losses) {
      const w = s <= 3 ? first.losses.get(s) : second.losses.get(s);
      if (w === undefined) continue;
      assert.ok(Math.abs(v - w) <= 1e-6 * Math.max(1, Math.abs(v)), `step ${s}: ${v} vs ${w}`);
    }
    assert.ok(second.losses.has(5) && full.losses.has(5));
    for (const f of ["model", "ema", "optimizer"]) {
      assertSameTensors(
        await readAll(join(tmp, "full", "checkpoints", "checkpoint_s5", `${f}.safetensors`)),
        await readAll(join(tmp, "part", "checkpoints", "checkpoint_s5", `${f}.safetensors`)),
        f,
      );
    }
    const sa = JSON.parse(
      await Deno.readTextFile(join(tmp, "full", "checkpoints", "checkpoint_s5", "state.json")),
    );
    const sb = JSON.parse(
      await Deno.readTextFile(join(tmp, "part", "checkpoints", "checkpoint_s5", "state.json")),
    );
    assert.deepEqual(sa.rng, sb.rng);
    assert.deepEqual(sa.trainData, sb.trainData);
    assert.equal(sa.optimizerStep, 5);
    assert.equal(sa.emaNumUpdates, 5);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
