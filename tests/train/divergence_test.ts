/**
 * Honest stops: a diverged state is never saved and the checkpoint named as the last good one
 * really is finite; a non-finite checkpoint is not resumed from; non-finite training or eval pairs
 * are named by data set and pair; a non-finite eval loss stops the run.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { existsSync } from "node:fs";
import { testGpu } from "../helpers/gpu.ts";
import { makeTinyRoots, tinyConfig, tinyInit } from "./_tiny.ts";
import { runTraining } from "../../core/train/trainer.ts";
import { openWeights } from "../../core/io/weights.ts";
import { writeSafetensors } from "../../core/io/safetensors.ts";
import { pairNpyPath, pairPaths } from "../../core/data/pair_store.ts";
import { readNpy, writeNpy } from "../../core/data/npy.ts";

async function allFinite(path: string): Promise<boolean> {
  const r = await openWeights(path);
  try {
    for (const k of r.keys()) if (!(await r.readF32(k)).every(Number.isFinite)) return false;
    return true;
  } finally {
    r.close();
  }
}

Deno.test("lr=1e40: the diverged step is not saved; the named last good checkpoint is finite", async () => {
  const gpu = await testGpu();
  const tmp = await Deno.makeTempDir({ prefix: "reflow_nan_" });
  try {
    await makeTinyRoots(join(tmp, "data"), 8);
    const c = tinyConfig(join(tmp, "data"));
    c.optim.lr = 1e40; // warm-up 2: step 1 updates with lr 0, step 2 with 5e39
    c.training.snapshot_freq = 1;
    c.training.num_steps = 4;
    const ckpts = join(tmp, "run", "checkpoints");
    await assert.rejects(
      runTraining(await tinyInit(gpu, c, join(tmp, "run"))),
      (e: Error) => {
        assert.match(e.message, /training diverged by step 2 \(not saving .*checkpoint_s2: /);
        assert.match(
          e.message,
          /weight ".+" holds \d+ non-finite value\(s\) \((-?Infinity|NaN) at/,
        );
        assert.ok(
          e.message.endsWith(`The last good checkpoint is ${join(ckpts, "checkpoint_s1")}`),
          e.message,
        );
        return true;
      },
    );
    assert.ok(!existsSync(join(ckpts, "checkpoint_s2")), "no checkpoint_s2");
    assert.ok(!existsSync(join(ckpts, "score_model_s2.safetensors")), "no score_model_s2");
    for (const f of ["model", "ema", "optimizer"]) {
      assert.ok(await allFinite(join(ckpts, "checkpoint_s1", `${f}.safetensors`)), f);
    }
    assert.ok(await allFinite(join(ckpts, "score_model_s1.safetensors")));
    assert.ok(
      [...Deno.readDirSync(ckpts)].every((e) => !e.name.includes(".tmp")),
      "no temporaries left",
    );

    // A checkpoint holding a NaN (as older versions could save) is not resumed from.
    const model = join(ckpts, "checkpoint_s1", "model.safetensors");
    const r = await openWeights(model);
    const tensors = [];
    for (const k of r.keys()) {
      tensors.push({
        name: k,
        dtype: "F32" as const,
        shape: [...r.info(k).shape],
        data: await r.readF32(k),
      });
    }
    r.close();
    tensors[3].data[5] = NaN;
    await writeSafetensors(model, tensors, { format: "pt" });
    const c2 = tinyConfig(join(tmp, "data"));
    c2.training.ckpt_path = join(ckpts, "checkpoint_s1");
    await assert.rejects(
      runTraining(await tinyInit(gpu, c2, join(tmp, "run2"))),
      new RegExp(
        `checkpoint_s1 cannot be resumed from: weight "${
          tensors[3].name.replaceAll(".", "\\.")
        }" ` +
          `holds 1 non-finite value\\(s\\) \\(NaN at element 5\\) after step 1; resume from an earlier`,
      ),
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("a non-finite eval loss on finite pairs stops the run (EMA diverged)", async () => {
  const gpu = await testGpu();
  const tmp = await Deno.makeTempDir({ prefix: "reflow_nan_" });
  try {
    await makeTinyRoots(join(tmp, "data"), 8);
    const c = tinyConfig(join(tmp, "data"));
    c.optim.lr = 1e40;
    c.optim.warmup = 0; // step 1 already diverges; its EMA is evaluated after it
    await assert.rejects(
      runTraining(await tinyInit(gpu, c, join(tmp, "run"))),
      /eval loss is NaN at step 1 \(EMA weights on finite eval pairs\); stopping\. The last good checkpoint is \(none/,
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

async function poison(root: string, i: number, at: number): Promise<void> {
  const path = pairNpyPath(pairPaths(root).images, i);
  const arr = await readNpy(path);
  (arr.data as Uint16Array)[at] = 0x7e00; // float16 NaN
  await writeNpy(path, arr);
}

Deno.test("non-finite values in training or eval pairs are named by data set and pair", async () => {
  const gpu = await testGpu();
  const tmp = await Deno.makeTempDir({ prefix: "reflow_nan_" });
  try {
    await makeTinyRoots(join(tmp, "data"), 8);
    const n = 4 * 8 * 8;
    await poison(join(tmp, "data", "eval"), 1, n + 17); // z1 of eval pair 1 (first eval batch)
    const c = tinyConfig(join(tmp, "data"));
    await assert.rejects(
      runTraining(await tinyInit(gpu, c, join(tmp, "run"))),
      /config\.data\.eval_root \(.*eval\): pair 1 holds a non-finite value \(NaN\) in z1 \(latent\)/,
    );
    await makeTinyRoots(join(tmp, "data"), 8);
    await poison(join(tmp, "data", "train"), 3, 5); // z0 of training pair 3 (drawn in epoch 0)
    await assert.rejects(
      runTraining(await tinyInit(gpu, tinyConfig(join(tmp, "data")), join(tmp, "run2"))),
      /config\.data\.train_root \(.*train\): pair 3 holds a non-finite value \(NaN\) in z0 \(noise\)/,
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
