/**
 * The generate job's planning and its errors on bad input; none of these start a worker or need
 * model weights (the model folder holds configs only).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { existsSync } from "node:fs";
import { getConfig } from "../../configs/generate.ts";
import { divideToGroups, jsonSafe, outputRoot, runGenerate } from "../../core/generate/generate.ts";
import { SD_SCHEDULER_CONFIG, TINY_UNET_CONFIG } from "../../core/generate/tiny_pipeline_config.ts";

async function configOnlyModel(dir: string): Promise<string> {
  const m = join(dir, "model");
  await Deno.mkdir(join(m, "unet"), { recursive: true });
  await Deno.mkdir(join(m, "scheduler"), { recursive: true });
  await Deno.writeTextFile(join(m, "model_index.json"), "{}");
  await Deno.writeTextFile(join(m, "unet", "config.json"), JSON.stringify(TINY_UNET_CONFIG));
  await Deno.writeTextFile(
    join(m, "scheduler", "scheduler_config.json"),
    JSON.stringify(SD_SCHEDULER_CONFIG),
  );
  return m;
}

async function setup() {
  const dir = await Deno.makeTempDir({ prefix: "reflow-gen-err-" });
  const config = getConfig();
  config.model_dir = await configOnlyModel(dir);
  config.save_dir = join(dir, "out");
  config.coco_root = join(dir, "coco");
  config.total_nums = 4;
  config.infer_steps = 2;
  config.bs = 2;
  return { dir, config };
}

const quiet = { log: () => {}, progress: false as const };

Deno.test("divideToGroups cuts contiguous groups as the original", () => {
  assert.deepEqual(divideToGroups(10, 3), [[0, 4], [4, 8], [8, 10]]);
  assert.deepEqual(divideToGroups(4, 3), [[0, 2], [2, 4]]);
  assert.deepEqual(divideToGroups(5, 1), [[0, 5]]);
  assert.deepEqual(divideToGroups(3, 8), [[0, 1], [1, 2], [2, 3]]);
});

Deno.test("outputRoot puts a part under save_dir/part{n}", () => {
  assert.equal(outputRoot("data/x", null), "data/x");
  assert.equal(outputRoot("data/x", 4), join("data/x", "part4"));
  assert.equal(outputRoot("data/x/part4", 4), "data/x/part4");
  assert.throws(() => outputRoot("data/x", -1), /part/);
});

Deno.test("jsonSafe stores non-finite numbers as strings", () => {
  assert.deepEqual(jsonSafe({ a: -Infinity, b: [NaN, 1], c: { d: Infinity } }), {
    a: "-Infinity",
    b: ["NaN", 1],
    c: { d: "Infinity" },
  });
});

Deno.test("generate: bad input gives clear errors naming the file or setting", async () => {
  const { dir, config } = await setup();
  try {
    // Missing COCO annotation file.
    await assert.rejects(
      runGenerate({ ...config }, quiet),
      /captions_train2014\.json/,
    );
    // Malformed annotation file.
    await Deno.mkdir(join(config.coco_root, "annotations"), { recursive: true });
    const ann = join(config.coco_root, "annotations", "captions_val2014.json");
    await Deno.writeTextFile(ann, "{ not json");
    await assert.rejects(runGenerate({ ...config, split: "val" }, quiet), /not valid JSON/);
    await Deno.writeTextFile(ann, JSON.stringify({ images: [] }));
    await assert.rejects(runGenerate({ ...config, split: "val" }, quiet), /annotations/);
    await Deno.writeTextFile(ann, JSON.stringify({ annotations: [] }));
    await assert.rejects(runGenerate({ ...config, split: "val" }, quiet), /no captions/);
    // Empty plain captions file.
    const caps = join(dir, "caps.txt");
    await Deno.writeTextFile(caps, "");
    await assert.rejects(runGenerate({ ...config, captions_file: caps }, quiet), /no captions/);
    await Deno.writeTextFile(caps, "a cat\na dog\n");
    // total_nums <= 0, bs, infer_steps.
    await assert.rejects(
      runGenerate({ ...config, captions_file: caps, total_nums: 0 }, quiet),
      /config\.total_nums must be a positive integer/,
    );
    await assert.rejects(
      runGenerate({ ...config, captions_file: caps, bs: -1 }, quiet),
      /config\.bs/,
    );
    await assert.rejects(
      runGenerate({ ...config, captions_file: caps, devices: [] }, quiet),
      /config\.devices/,
    );
    // Unreadable / incomplete model folder.
    await assert.rejects(
      runGenerate({ ...config, captions_file: caps, model_dir: join(dir, "nope") }, quiet),
      /model_dir .*nope.*cannot read the model folder/,
    );
    const broken = join(dir, "broken");
    await Deno.mkdir(broken);
    await Deno.writeTextFile(join(broken, "model_index.json"), "{}");
    await assert.rejects(
      runGenerate({ ...config, captions_file: caps, model_dir: broken }, quiet),
      /unet[/\\]config\.json/,
    );
    // Nothing was written by any failed run.
    assert.ok(!existsSync(config.save_dir));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("generate: a save_dir made with other settings is refused", async () => {
  const { dir, config } = await setup();
  try {
    const caps = join(dir, "caps.txt");
    await Deno.writeTextFile(caps, "a cat\na dog\n");
    await Deno.mkdir(config.save_dir, { recursive: true });
    const other = { model: config.model_dir, seed: 1, infer_steps: 99, total_nums: 4 };
    await Deno.writeTextFile(join(config.save_dir, "index.json"), JSON.stringify(other));
    await assert.rejects(
      runGenerate({ ...config, captions_file: caps }, quiet),
      (e: Error) => {
        assert.match(e.message, /index\.json records other settings/);
        assert.match(e.message, /infer_steps/);
        assert.match(e.message, /overwrite/);
        return true;
      },
    );
    assert.ok(!existsSync(join(config.save_dir, "content")), "nothing written");
    // A broken index.json is refused too.
    await Deno.writeTextFile(join(config.save_dir, "index.json"), "[1,");
    await assert.rejects(
      runGenerate({ ...config, captions_file: caps }, quiet),
      /not a valid index\.json/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("generate: a write error names the file", async () => {
  const { dir, config } = await setup();
  try {
    const caps = join(dir, "caps.txt");
    await Deno.writeTextFile(caps, "a cat\na dog\n");
    // captions.txt cannot be written: a folder holds its name.
    await Deno.mkdir(join(config.save_dir, "content", "captions.txt", "x"), { recursive: true });
    await assert.rejects(
      runGenerate({ ...config, captions_file: caps, overwrite: true }, quiet),
      /cannot write .*captions\.txt/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "generate: a worker failure fails the job with the worker's message",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const { dir, config } = await setup();
    try {
      const caps = join(dir, "caps.txt");
      await Deno.writeTextFile(caps, "a cat\na dog\n");
      // The folder has configs but no tokenizer and no weights: the workers fail to load it.
      await assert.rejects(
        runGenerate(
          { ...config, captions_file: caps, devices: [0, 0] },
          { ...quiet, shareAdapter: true },
        ),
        /generate: worker \d \(pairs \d\.\.\d\) failed: .*(tokenizer|weight)/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
