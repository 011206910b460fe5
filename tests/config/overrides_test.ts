import assert from "node:assert/strict";
import { join } from "node:path";
import {
  applyOverrides,
  closeMatches,
  configToJson,
  formatConfig,
  loadConfigModule,
  loadJobConfig,
} from "../../core/config/overrides.ts";
import { parseJobArgs, splitConfigOverrides } from "../../core/config/cli.ts";
import { getConfig as getTrain, schema as trainSchema } from "../../configs/train.ts";
import { getConfig as getGenerate, schema as generateSchema } from "../../configs/generate.ts";
import type { TrainConfig } from "../../configs/train.ts";

const here = new URL(".", import.meta.url).pathname;
const root = join(here, "..", "..");

Deno.test("overrides: numbers, booleans, strings, tuples", () => {
  const c = applyOverrides(getTrain(), {
    "training.batch_size": "4",
    "optim.lr": "2.5e-5",
    "sampling.use_ode_sampler": "rk45",
    "diffusers.load_score_model": "False",
    "data.random_flip": "true",
    "optim.betas": "(0.8,0.99)",
    "training.num_steps": "1_000",
    "diffusers.ckpt_path": "'my model'",
    "reflow.reflow_t_schedule": "3",
  }, trainSchema);
  assert.equal(c.training.batch_size, 4);
  assert.equal(c.optim.lr, 2.5e-5);
  assert.equal(c.sampling.use_ode_sampler, "rk45");
  assert.equal(c.diffusers.load_score_model, false);
  assert.equal(c.data.random_flip, true);
  assert.deepEqual(c.optim.betas, [0.8, 0.99]);
  assert.equal(c.training.num_steps, 1000);
  assert.equal(c.diffusers.ckpt_path, "my model");
  // String settings keep the text, as ml_collections does.
  assert.equal(c.reflow.reflow_t_schedule, "3");
});

Deno.test("overrides: nullable settings and lists", () => {
  const t = applyOverrides(getTrain(), [
    { key: "training.ckpt_path", value: "logs/x/checkpoints/checkpoint_s10" },
  ], trainSchema);
  assert.equal(t.training.ckpt_path, "logs/x/checkpoints/checkpoint_s10");
  applyOverrides(t, [{ key: "training.ckpt_path", value: "None" }], trainSchema);
  assert.equal(t.training.ckpt_path, null);

  const g = applyOverrides(getGenerate(), { devices: "[0, 1,2]", part: "3" }, generateSchema);
  assert.deepEqual(g.devices, [0, 1, 2]);
  assert.equal(g.part, 3);
  applyOverrides(g, { devices: "[]", part: "null" }, generateSchema);
  assert.deepEqual(g.devices, []);
  assert.equal(g.part, null);
  assert.throws(
    () => applyOverrides(getGenerate(), { part: "x" }, generateSchema),
    /config\.part.*expected an integer.*"x"/,
  );
});

Deno.test("overrides: unknown key names the key and close matches", () => {
  assert.throws(
    () => applyOverrides(getTrain(), { "training.batchsize": "4" }, trainSchema),
    (e: Error) => {
      assert.match(e.message, /config\.training\.batchsize/);
      assert.match(e.message, /training\.batch_size/);
      return true;
    },
  );
  assert.throws(
    () => applyOverrides(getTrain(), { "sampler.sample_N": "4" }),
    /config\.sampler\.sample_N.*sampling\.sample_N/,
  );
  assert.throws(() => applyOverrides(getTrain(), { "training": "4" }), /group of settings/);
  assert.ok(
    closeMatches("optim.lr_schedular", ["optim.lr_scheduler", "seed"]).includes(
      "optim.lr_scheduler",
    ),
  );
});

Deno.test("overrides: wrong type names key, expected type and text", () => {
  assert.throws(
    () => applyOverrides(getTrain(), { "training.batch_size": "four" }, trainSchema),
    /config\.training\.batch_size.*an integer.*"four"/,
  );
  assert.throws(
    () => applyOverrides(getTrain(), { "training.batch_size": "2.5" }, trainSchema),
    /an integer.*"2\.5"/,
  );
  assert.throws(
    () => applyOverrides(getTrain(), { "optim.lr": "fast" }, trainSchema),
    /config\.optim\.lr.*a number.*"fast"/,
  );
  assert.throws(
    () => applyOverrides(getTrain(), { "data.random_flip": "maybe" }, trainSchema),
    /config\.data\.random_flip.*boolean.*"maybe"/,
  );
  assert.throws(
    () => applyOverrides(getTrain(), { "optim.betas": "(0.9,x)" }, trainSchema),
    /config\.optim\.betas.*list of numbers/,
  );
  assert.throws(
    () => applyOverrides(getTrain(), { "sampling.use_ode_sampler": "heun" }, trainSchema),
    /config\.sampling\.use_ode_sampler.*"heun".*"euler", "rk45"/,
  );
});

Deno.test("splitConfigOverrides: = form, space form, bare boolean", () => {
  const { rest, overrides } = splitConfigOverrides([
    "--config",
    "configs/train.ts",
    "--config.training.batch_size=4",
    "--workdir",
    "logs/a",
    "--config.sampling.use_ode_sampler",
    "rk45",
    "--config.data.random_flip",
    "--config.optim.lr=-1e-3",
  ]);
  assert.deepEqual(rest, ["--config", "configs/train.ts", "--workdir", "logs/a"]);
  assert.deepEqual(overrides, [
    { key: "training.batch_size", value: "4" },
    { key: "sampling.use_ode_sampler", value: "rk45" },
    { key: "data.random_flip", value: "", bare: true },
    { key: "optim.lr", value: "-1e-3" },
  ]);
});

Deno.test("overrides: a bare --config.key sets a boolean, and is an error naming any other key", () => {
  const args = (argv: string[]) => splitConfigOverrides(argv).overrides;
  const c = applyOverrides(getTrain(), args(["--config.data.random_flip"]), trainSchema);
  assert.equal(c.data.random_flip, true);
  assert.throws(
    () => applyOverrides(getTrain(), args(["--config.optim.lr", "--workdir", "x"]), trainSchema),
    /"config\.optim\.lr" has no value; write --config\.optim\.lr=<value> \(a number\)/,
  );
  assert.throws(
    () => applyOverrides(getTrain(), args(["--config.diffusers.ckpt_path"]), trainSchema),
    /"config\.diffusers\.ckpt_path" has no value.*\(a string\)/,
  );
  assert.throws(
    () => applyOverrides(getTrain(), args(["--config.optim.betas"]), trainSchema),
    /"config\.optim\.betas" has no value.*\(a list like \(1, 2\)\)/,
  );
  assert.throws(
    () => applyOverrides(getTrain(), args(["--config.training.ckpt_path"]), trainSchema),
    /"config\.training\.ckpt_path" has no value/,
  );
});

Deno.test("overrides: tuple lengths and value ranges name the key and what is wrong", () => {
  const bad: [Record<string, string>, RegExp][] = [
    [
      { "optim.betas": "(0.9, 0.999, 0.5)" },
      /config\.optim\.betas": must hold exactly 2 items, got 3/,
    ],
    [{ "optim.betas": "(0.9,)" }, /config\.optim\.betas": must hold exactly 2 items, got 1/],
    [
      { "optim.betas": "(0.9, 1.0)" },
      /config\.optim\.betas": item 1 \(1\) is out of range: it must be in \[0, 1\)/,
    ],
    [{ "optim.lr": "-1" }, /config\.optim\.lr": -1 is out of range: it must be >= 0/],
    [{ "optim.lr": "inf" }, /config\.optim\.lr": Infinity is out of range/],
    [{ "optim.warmup": "-1" }, /config\.optim\.warmup": -1 is out of range: it must be >= 0/],
    [{ "optim.eps": "-1e-8" }, /config\.optim\.eps": .* >= 0/],
    [{ "optim.weight_decay": "-0.1" }, /config\.optim\.weight_decay": .* >= 0/],
    [
      { "training.batch_size": "0" },
      /config\.training\.batch_size": 0 is out of range: it must be >= 1/,
    ],
    [{ "training.num_steps": "-5" }, /config\.training\.num_steps"/],
    [{ "training.log_freq": "0" }, /config\.training\.log_freq"/],
    [
      { "training.caption_dropout": "1.5" },
      /config\.training\.caption_dropout": 1\.5 .* in \[0, 1\]/,
    ],
    [{ "ema.decay": "1.01" }, /config\.ema\.decay"/],
    [{ "sampling.init_noise_scale": "0" }, /config\.sampling\.init_noise_scale": 0 .* > 0/],
    [{ "data.image_size": "0" }, /config\.data\.image_size"/],
  ];
  for (const [o, re] of bad) assert.throws(() => applyOverrides(getTrain(), o, trainSchema), re);
  // Boundaries that are valid.
  const c = applyOverrides(getTrain(), {
    "optim.lr": "0",
    "optim.warmup": "0",
    "optim.betas": "(0, 0.5)",
    "optim.grad_clip": "inf",
    "ema.decay": "1",
  }, trainSchema);
  assert.equal(c.optim.grad_clip, Infinity);
  const g = getGenerate();
  assert.throws(() => applyOverrides(g, { bs: "0" }, generateSchema), /config\.bs": 0/);
  assert.throws(
    () => applyOverrides(g, { devices: "[0, -1]" }, generateSchema),
    /config\.devices": item 1 \(-1\) is out of range: it must be >= 0/,
  );
  assert.throws(() => applyOverrides(g, { part: "-2" }, generateSchema), /config\.part": -2/);
  assert.throws(
    () => applyOverrides(g, { infer_steps: "0" }, generateSchema),
    /config\.infer_steps/,
  );
  assert.throws(
    () => applyOverrides(g, { guidance_scale: "nan" }, generateSchema),
    /config\.guidance_scale/,
  );
});

Deno.test("parseJobArgs + loadJobConfig", async () => {
  const args = parseJobArgs([
    "--config",
    join(root, "configs/train.ts"),
    "--workdir=logs/run1",
    "--comment",
    "first try",
    "--config.training.batch_size",
    "8",
    "--config.optim.betas=[0.5,0.6]",
  ], {
    name: "train",
    options: [
      { flags: "--workdir <dir>", description: "log folder", required: true },
      { flags: "--eval_folder <dir>", description: "eval folder", default: "eval" },
    ],
    exitOnError: false,
  });
  assert.equal(args.options.workdir, "logs/run1");
  assert.equal(args.options.eval_folder, "eval");
  assert.equal(args.comment, "first try");
  const c = await loadJobConfig<TrainConfig>(args);
  assert.equal(c.training.batch_size, 8);
  assert.deepEqual(c.optim.betas, [0.5, 0.6]);

  assert.throws(
    () =>
      parseJobArgs(["--config", "x.ts"], {
        name: "train",
        options: [{ flags: "--workdir <dir>", description: "", required: true }],
        exitOnError: false,
      }),
    /workdir/,
  );
  assert.throws(() => parseJobArgs([], { name: "sample", exitOnError: false }), /--config/);
  const d = parseJobArgs([], {
    name: "gen",
    defaultConfig: "configs/generate.ts",
    exitOnError: false,
  });
  assert.equal(d.config, "configs/generate.ts");
});

Deno.test("loadConfigModule: fresh config, errors name the file", async () => {
  const a = await loadConfigModule<TrainConfig>(join(root, "configs/train.ts"));
  assert.equal(a.training.batch_size, 3);
  await assert.rejects(
    () => loadConfigModule("/nonexistent/cfg.ts"),
    /config file not found.*cfg\.ts/,
  );
  const dir = Deno.makeTempDirSync();
  try {
    const bad = join(dir, "bad.ts");
    Deno.writeTextFileSync(bad, "export const x = 1;\n");
    await assert.rejects(() => loadConfigModule(bad), /bad\.ts does not export a getConfig/);
    const badInt = join(dir, "badint.ts");
    Deno.writeTextFileSync(
      badInt,
      `export const schema = { integers: ["bs"] };\nexport function getConfig() { return { bs: 2.5 }; }\n`,
    );
    await assert.rejects(() => loadConfigModule(badInt), /config\.bs.*integer/);
    // A config file's values are held to the same ranges and lengths.
    const badRange = join(dir, "badrange.ts");
    Deno.writeTextFileSync(
      badRange,
      `import { getConfig as base, schema as s } from "${join(root, "configs/train.ts")}";\n` +
        `export const schema = s;\n` +
        `export function getConfig() { const c = base(); c.optim.betas = [0.9, 0.99, 0.9]; return c; }\n`,
    );
    await assert.rejects(
      () => loadConfigModule(badRange),
      /badrange\.ts: "config\.optim\.betas" must hold exactly 2 items, got 3/,
    );
    const badLr = join(dir, "badlr.ts");
    Deno.writeTextFileSync(
      badLr,
      `import { getConfig as base, schema as s } from "${join(root, "configs/train.ts")}";\n` +
        `export const schema = s;\n` +
        `export function getConfig() { const c = base(); c.optim.lr = -1; return c; }\n`,
    );
    await assert.rejects(
      () => loadConfigModule(badLr),
      /"config\.optim\.lr" -1 is out of range: it must be >= 0/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("configToJson and formatConfig", () => {
  const c = getTrain();
  assert.deepEqual(JSON.parse(configToJson(c)), c);
  const text = formatConfig(c);
  assert.match(text, /^diffusers:\n {2}ckpt_path: checkpoints\/AltDiffusion$/m);
  assert.match(text, /^ {2}betas: \[0\.9, 0\.999\]$/m);
  assert.match(text, /^ {2}ckpt_path: null$/m);
  assert.match(text, /^seed: 2333$/m);
});
