/**
 * fp16 mixed precision: the dynamic loss scale behaves as GradScaler's, and a tiny run trains with
 * f16 working weights while the master weights, optimizer and EMA stay f32; its losses track an f32
 * run's, and the loss scale is checkpointed.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { NEEDS_F16, testGpu } from "../helpers/gpu.ts";
import { makeTinyRoots, tinyConfig, tinyInit } from "./_tiny.ts";
import { runTraining } from "../../core/train/trainer.ts";
import { LossScaler } from "../../core/train/mixed_precision.ts";

Deno.test("loss scaler: halves and skips on overflow, doubles after the growth interval", () => {
  const s = new LossScaler(1024, 3);
  assert.equal(s.update(true), true);
  assert.equal(s.update(false), false);
  assert.equal(s.scale, 512);
  for (let i = 0; i < 3; i++) assert.equal(s.update(true), true);
  assert.equal(s.scale, 1024);
  const t = new LossScaler();
  t.load(s.state());
  assert.deepEqual(t.state(), s.state());
  assert.throws(() => t.load({ scale: -1, goodSteps: 0 }), /loss scale state/);
});

Deno.test("fp16 mixed precision trains the tiny model like f32", NEEDS_F16, async () => {
  const gpu = await testGpu();
  const tmp = await Deno.makeTempDir({ prefix: "reflow_fp16_" });
  try {
    await makeTinyRoots(join(tmp, "data"), 8);
    const run = async (mp: "no" | "fp16") => {
      const c = tinyConfig(join(tmp, "data"));
      c.training.num_steps = 6;
      c.training.log_freq = 1;
      c.training.snapshot_freq = 6;
      c.training.mixed_precision = mp;
      const workdir = join(tmp, mp);
      const init = await tinyInit(gpu, c, workdir);
      const r = await runTraining(init);
      const params = init.models.unet.parameters();
      assert.ok(params.every((p) => p.dtype === "f32"), "master weights stay f32");
      const w = await params[0].toF32();
      assert.ok(w.every(Number.isFinite));
      const state = JSON.parse(
        await Deno.readTextFile(join(workdir, "checkpoints", "checkpoint_s6", "state.json")),
      );
      return { losses: [...r.losses.values()], w, state };
    };
    const f32 = await run("no");
    const f16 = await run("fp16");
    assert.equal(f16.losses.length, 6);
    f16.losses.forEach((l, i) => {
      const rel = Math.abs(l - f32.losses[i]) / f32.losses[i];
      assert.ok(rel < 0.05, `step ${i + 1}: fp16 loss ${l} vs f32 ${f32.losses[i]}`);
    });
    assert.ok(f16.losses.some((l, i) => l !== f32.losses[i]), "fp16 must actually differ");
    assert.equal(f16.state.lossScale.scale, 65536, "no overflow at the initial scale here");
    assert.equal(f16.state.lossScale.goodSteps, 6);
    assert.equal(f32.state.lossScale, undefined);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
