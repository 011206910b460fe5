/**
 * The config modules hold every setting of the original's reflow/configs/{default,train,sample}.py
 * with its default. The expected tables below are transcribed by hand from those files.
 */
import assert from "node:assert/strict";
import { getConfig as getDefault, schema as defaultSchema } from "../../configs/default.ts";
import { getConfig as getTrain, schema as trainSchema } from "../../configs/train.ts";
import { getConfig as getSample, schema as sampleSchema } from "../../configs/sample.ts";
import { getConfig as getGenerate, schema as generateSchema } from "../../configs/generate.ts";
import { flattenConfig, validateConfig } from "../../core/config/overrides.ts";

const ORIGINAL_DEFAULT: Record<string, unknown> = {
  "training.snapshot_freq": 20000,
  "training.sampling_freq": 2000,
  "training.log_freq": 20,
  "training.eval_freq": 20,
  "data.image_size": 64,
  "data.random_flip": false,
  "data.num_channels": 4,
  "optim.lr": 1e-4,
  "optim.betas": [0.9, 0.999],
  "optim.weight_decay": 0,
  "optim.eps": 1e-8,
  "optim.warmup": 2000,
  "optim.grad_clip": 1,
  "seed": 2333,
};

const ORIGINAL_TRAIN: Record<string, unknown> = {
  ...ORIGINAL_DEFAULT,
  "diffusers.ckpt_path": "checkpoints/AltDiffusion",
  "diffusers.tokenizer": "xlm_roberta_tokenizer",
  "diffusers.text_encoder": "xlm_roberta_text_model",
  "diffusers.vae": "autoencoder_kl",
  "diffusers.score_model": "unet_2d_condition_model",
  "diffusers.load_score_model": true,
  "diffusers.gradient_checkpointing": true,
  "diffusers.use_xformers": false,
  "ema.decay": 0.999,
  "training.ckpt_path": null,
  "training.reduce_mean": true,
  "training.randz0": "fix",
  "training.num_steps": 220000,
  "training.batch_size": 3,
  "training.gradient_accumulation_steps": 1,
  "training.mixed_precision": "no",
  "sampling.method": "rectified_flow",
  "sampling.init_type": "gaussian",
  "sampling.init_noise_scale": 1.0,
  "sampling.randz0": "fix",
  "sampling.use_ode_sampler": "euler",
  "sampling.sample_N": 100,
  "reflow.reflow_t_schedule": "uniform",
  "reflow.reflow_loss": "l2",
  "data.train_root": "data/coco2014_reflow/train5M",
  "data.eval_root": "data/coco2014_reflow/val10k",
  "data.dl_workers": 4,
  "optim.use_8bit_adam": false,
  "optim.lr_scheduler": "linear",
};

const ORIGINAL_SAMPLE: Record<string, unknown> = {
  ...ORIGINAL_DEFAULT,
  "sampling.randz0": "fix",
  "sampling.ckpt_path": "logs/2_reflow_AltInit/checkpoints/score_model_s200009.pth",
  "sampling.decode_noise": false,
  "sampling.decode_latent": false,
  "sampling.return_traj": false,
  "sampling.method": "rectified_flow",
  "sampling.init_type": "gaussian",
  "sampling.init_noise_scale": 1.0,
  "sampling.batch_size": 2,
  "sampling.num_samples": 2,
  "sampling.use_ode_sampler": "euler",
  "sampling.sample_N": 1,
  "diffusers.ckpt_path": "checkpoints/AltDiffusion",
  "diffusers.tokenizer": "xlm_roberta_tokenizer",
  "diffusers.text_encoder": "xlm_roberta_text_model",
  "diffusers.vae": "autoencoder_kl",
  "diffusers.score_model": "unet_2d_condition_model",
  "diffusers.load_score_model": false,
  "diffusers.gradient_checkpointing": false,
  "diffusers.use_xformers": false,
  "ema.decay": 0.999,
  "data.eval_root": "data/coco2014_reflow/val10k",
  "data.dl_workers": 1,
};

/** Settings this project adds, with their defaults. */
const ADDED_SHARED = {
  "training.timestep_orientation": "original",
  "training.objective": "reflow",
  "training.caption_dropout": 0.1,
  "device": "auto",
};

function checkHolds(flat: Map<string, unknown>, expected: Record<string, unknown>) {
  for (const [k, v] of Object.entries(expected)) {
    assert.ok(flat.has(k), `missing setting ${k}`);
    assert.deepEqual(flat.get(k), v, `default of ${k}`);
  }
}

Deno.test("default config holds every setting of default.py", () => {
  const flat = new Map(flattenConfig(getDefault()));
  checkHolds(flat, { ...ORIGINAL_DEFAULT, ...ADDED_SHARED });
  assert.equal(flat.size, Object.keys(ORIGINAL_DEFAULT).length + 4 + 1); // + empty sampling group
  validateConfig(getDefault(), defaultSchema);
});

Deno.test("train config holds every setting of train.py, nothing unexplained", () => {
  const flat = new Map(flattenConfig(getTrain()));
  // Issue 8 makes the LPIPS weight files settings (the original hard-codes them).
  const addedTrain = { "reflow.lpips_vgg_path": "", "reflow.lpips_heads_path": "" };
  checkHolds(flat, { ...ORIGINAL_TRAIN, ...ADDED_SHARED, ...addedTrain });
  const extra = [...flat.keys()].filter((k) =>
    !(k in ORIGINAL_TRAIN) && !(k in ADDED_SHARED) && !(k in addedTrain)
  );
  assert.deepEqual(extra, []);
  validateConfig(getTrain(), trainSchema);
});

Deno.test("sample config holds every setting of sample.py plus allow_missing_keys", () => {
  const flat = new Map(flattenConfig(getSample()));
  checkHolds(flat, { ...ORIGINAL_SAMPLE, ...ADDED_SHARED, "sampling.allow_missing_keys": false });
  const extra = [...flat.keys()].filter((k) =>
    !(k in ORIGINAL_SAMPLE) && !(k in ADDED_SHARED) && k !== "sampling.allow_missing_keys"
  );
  assert.deepEqual(extra, []);
  validateConfig(getSample(), sampleSchema);
});

Deno.test("generate config defaults", () => {
  const c = getGenerate();
  assert.equal(c.infer_steps, 25);
  assert.equal(c.seed, 2333);
  assert.equal(c.guidance_scale, 7.5);
  assert.equal(c.negative_prompt, "");
  assert.equal(c.captions_file, "");
  assert.equal(c.overwrite, false);
  assert.equal(c.part, null);
  assert.equal(c.split, "train");
  for (const k of ["model_dir", "save_dir", "devices", "total_nums", "bs"]) assert.ok(k in c, k);
  validateConfig(c, generateSchema);
});

Deno.test("getConfig returns a fresh object each time", () => {
  for (const get of [getDefault, getTrain, getSample, getGenerate]) {
    const a = get() as unknown as Record<string, unknown>;
    const b = get() as unknown as Record<string, unknown>;
    assert.notEqual(a, b);
    assert.deepEqual(a, b);
  }
  const a = getTrain();
  a.optim.betas[0] = 0.5;
  a.training.batch_size = 99;
  const b = getTrain();
  assert.equal(b.optim.betas[0], 0.9);
  assert.equal(b.training.batch_size, 3);
  assert.equal(getDefault().optim.betas[0], 0.9);
});
