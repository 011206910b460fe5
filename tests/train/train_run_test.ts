/**
 * A short run of the tiny model: the training loss falls; exp.log, TensorBoard events (parsed back),
 * the sample grid, the checkpoint folder and the EMA score model are written; mismatched data or
 * settings are refused before training.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { testGpu } from "../helpers/gpu.ts";
import { makeTinyData, makeTinyRoots, tinyConfig, tinyInit, tinyModels } from "./_tiny.ts";
import { runTraining } from "../../core/train/trainer.ts";
import { readEvents } from "../../core/io/tensorboard.ts";
import { openWeights } from "../../core/io/weights.ts";
import { CLIPTextModel } from "../../core/models/text_encoders.ts";
import { TINY_CLIP } from "./_tiny.ts";

Deno.test("a short run on a tiny model: loss falls, logs, events, samples, checkpoints", async () => {
  const gpu = await testGpu();
  const tmp = await Deno.makeTempDir({ prefix: "reflow_train_" });
  try {
    await makeTinyRoots(join(tmp, "data"), 8);
    const c = tinyConfig(join(tmp, "data"));
    c.training.num_steps = 40;
    c.training.log_freq = 1;
    c.training.eval_freq = 10;
    c.training.snapshot_freq = 20;
    c.training.sampling_freq = 20;
    c.optim.lr = 3e-3;
    c.optim.warmup = 5;
    c.reflow.reflow_t_schedule = "uniform";
    const workdir = join(tmp, "run");
    const init = await tinyInit(gpu, c, workdir, { comment: "tiny smoke run" });
    const r = await runTraining(init);
    assert.equal(r.step, 40);
    const losses = [...r.losses.entries()].sort((a, b) => a[0] - b[0]).map(([, v]) => v);
    assert.equal(losses.length, 40);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const early = mean(losses.slice(0, 5)), late = mean(losses.slice(-5));
    console.log(`tiny run: loss ${early.toFixed(4)} (steps 1-5) -> ${late.toFixed(4)} (36-40)`);
    assert.ok(late < 0.7 * early, `loss did not fall: ${early} -> ${late}`);

    const log = await Deno.readTextFile(join(workdir, "exp.log"));
    assert.match(log, /comment : tiny smoke run/);
    assert.match(log, /step 40 \| training_loss/);
    assert.match(log, /eval_loss/);
    assert.match(log, /batch_size: 2/);

    const tbDir = join(workdir, "tensorboard");
    const files = [...Deno.readDirSync(tbDir)].map((e) => e.name);
    assert.equal(files.length, 1);
    const events = readEvents(join(tbDir, files[0]));
    const byTag = new Map<string, { step: number; value: number }[]>();
    for (const e of events) {
      for (const v of e.values ?? []) {
        if (!byTag.has(v.tag)) byTag.set(v.tag, []);
        byTag.get(v.tag)!.push({ step: e.step, value: v.simpleValue });
      }
    }
    for (const tag of ["training_loss", "eval_loss", "lr", "grad_norm", "steps_per_sec"]) {
      assert.ok(byTag.has(tag), `TensorBoard tag ${tag}`);
    }
    assert.equal(byTag.get("training_loss")!.length, 40);
    const tl = byTag.get("training_loss")!.find((x) => x.step === 40)!;
    assert.ok(Math.abs(tl.value - r.losses.get(40)!) < 1e-6 * Math.max(1, tl.value));
    assert.deepEqual(byTag.get("eval_loss")!.map((x) => x.step), [1, 10, 20, 30, 40]);
    // lr warm-up: lr at step s (s - 1 updates before it) = lr * (s - 1) / 5 until step 6.
    const lr = byTag.get("lr")!;
    assert.ok(Math.abs(lr[0].value - 0) < 1e-12);
    assert.ok(Math.abs(lr[2].value - 3e-3 * 2 / 5) < 1e-9);
    assert.ok(byTag.get("grad_norm")!.every((x) => x.value > 0 && Number.isFinite(x.value)));

    for (const s of [20, 40]) {
      assert.ok(Deno.statSync(join(workdir, "samples", `sample_s${s}.png`)).size > 0);
      const dir = join(workdir, "checkpoints", `checkpoint_s${s}`);
      for (const f of ["model.safetensors", "optimizer.safetensors", "ema.safetensors"]) {
        assert.ok(Deno.statSync(join(dir, f)).isFile, f);
      }
      const st = JSON.parse(Deno.readTextFileSync(join(dir, "state.json")));
      assert.equal(st.step, s);
    }
    // score_model_s40 = the EMA weights under diffusers' keys.
    const sm = await openWeights(join(workdir, "checkpoints", "score_model_s40.safetensors"));
    const ema = await openWeights(
      join(workdir, "checkpoints", "checkpoint_s40", "ema.safetensors"),
    );
    const live = await openWeights(
      join(workdir, "checkpoints", "checkpoint_s40", "model.safetensors"),
    );
    assert.ok(sm.has("conv_in.weight") && sm.has("down_blocks.0.attentions.0.proj_in.weight"));
    assert.deepEqual(sm.keys().sort(), init.models.unet.namedParameters().map(([k]) => k).sort());
    let diffLive = 0;
    for (const k of sm.keys()) {
      assert.deepEqual(await sm.readF32(k), await ema.readF32(k), k);
      const a = await sm.readF32(k), b = await live.readF32(k);
      for (let i = 0; i < a.length; i++) diffLive = Math.max(diffLive, Math.abs(a[i] - b[i]));
    }
    assert.ok(diffLive > 0, "EMA differs from the live weights");
    for (const f of [sm, ema, live]) f.close();
    // No temporary checkpoint folders left behind.
    const names = [...Deno.readDirSync(join(workdir, "checkpoints"))].map((e) => e.name);
    assert.ok(names.every((n) => !n.includes(".tmp")), names.join(", "));
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("mismatched data, models or settings are refused before training", async () => {
  const gpu = await testGpu();
  const tmp = await Deno.makeTempDir({ prefix: "reflow_refuse_" });
  try {
    await makeTinyRoots(join(tmp, "data"), 4);
    const base = () => tinyConfig(join(tmp, "data"));
    const run = async (c = base(), extra = {}) =>
      await runTraining(await tinyInit(gpu, c, join(tmp, "run"), extra));

    let c = base();
    c.data.image_size = 16;
    await assert.rejects(run(c), /image_size is 16/);
    c = base();
    c.reflow.reflow_loss = "lpips";
    await assert.rejects(run(c), /needs config.reflow.reflow_t_schedule = "t0"/);
    c = base();
    c.training.mixed_precision = "bf16";
    await assert.rejects(run(c), /mixed_precision = "bf16": supported are "no" and "fp16"/);
    c = base();
    c.reflow.reflow_t_schedule = "sometimes";
    await assert.rejects(run(c), /reflow_t_schedule/);
    // Text encoder 48 wide vs cross_attention_dim 32.
    const models = tinyModels(gpu);
    models.textEncoder = CLIPTextModel.create(gpu, { ...TINY_CLIP, hidden_size: 48 }, 1);
    await assert.rejects(run(base(), { models }), /cross_attention_dim 32.*hidden size 48/);
    // 3-channel latents.
    const odd = join(tmp, "odd");
    await makeTinyData(odd, 4);
    c = base();
    c.data.train_root = join(tmp, "data", "train");
    const { pairPaths, writePairNpy } = await import("../../core/data/pair_store.ts");
    await writePairNpy(
      pairPaths(odd).images,
      0,
      [3, 8, 8],
      new Uint16Array(192),
      new Uint16Array(192),
    );
    c.data.train_root = odd;
    await assert.rejects(run(c), /3-channel latents/);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
