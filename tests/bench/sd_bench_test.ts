/**
 * The Stable Diffusion benchmark's smoke test: `deno task bench --sd --scale small` runs every row
 * of every pipeline on shrunk models, and the JSON it writes holds each planned row with finite,
 * positive figures and no error. Also: the SD configs resolve with the published head sizes, and
 * the command line refuses bad settings by name.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { plannedRows, type SdRow } from "../../core/bench/sd_bench.ts";
import { SD_MODELS } from "../../core/bench/sd_configs.ts";
import { resolveUNetConfig } from "../../core/models/unet2d_condition.ts";
import { parseArgs } from "../../scripts/bench.ts";

const BENCH = fileURLToPath(new URL("../../scripts/bench.ts", import.meta.url));

/** The figure each row kind must report (a positive, finite number). */
const FIGURES: Record<string, string[]> = {
  unet_forward: ["ms", "record_ms", "dispatches", "submits", "peak_mb", "params"],
  text_encoder: ["ms", "record_ms", "dispatches", "peak_mb"],
  vae_decode: ["ms", "record_ms", "dispatches", "peak_mb"],
  image_1step: ["ms_per_image"],
  image_25step: ["ms_per_image"],
  generate: ["pairs_per_s", "s_per_batch"],
  train_step: ["ms", "record_ms", "dispatches", "submits", "peak_mb"],
};

Deno.test("bench --sd --scale small writes every row", async () => {
  const dir = await Deno.makeTempDir({ prefix: "reflow-sd-bench-" });
  try {
    const json = join(dir, "sd.json");
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", BENCH, "--sd", "--scale", "small", "--reps", "1", "--json", json],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
    assert.equal(r.code, 0, `bench exited with ${r.code}:\n${text.slice(-3000)}`);
    const rec = JSON.parse(await Deno.readTextFile(json));
    assert.equal(rec.preset, "sd");
    assert.equal(rec.scale, "small");
    assert.ok(typeof rec.adapter?.description === "string" && rec.date, "adapter and date");
    const rows = rec.rows as SdRow[];
    const want = plannedRows(SD_MODELS.map((m) => m.name));
    assert.equal(rows.length, want.length, `rows: ${rows.map((x) => x.name).join(", ")}`);
    want.forEach((w, i) => {
      const row = rows[i];
      const where = `row ${i} (${w.name} ${w.model} batch ${w.batch})`;
      assert.equal(row.name, w.name, where);
      assert.equal(row.model, w.model, where);
      if (w.batch > 0) assert.equal(row.batch, w.batch, where);
      assert.equal(row.error, undefined, `${where} failed: ${row.error}`);
      for (const f of FIGURES[w.name]) {
        const v = row[f];
        assert.ok(typeof v === "number" && Number.isFinite(v) && v > 0, `${where}: ${f} = ${v}`);
      }
    });
    // Training takes the checkpointed fp16 path; the forward is one submit of many dispatches.
    const train = rows.find((x) => x.name === "train_step")!;
    assert.equal(train.checkpointing, true);
    assert.equal(train.mixed_precision, "fp16");
    const fwd = rows.find((x) => x.name === "unet_forward")!;
    assert.equal(fwd.submits, 1);
    assert.ok((fwd.dispatches as number) > 100);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SD configs: the UNets resolve, with 40-dim (SD 1.x) and 64-dim (SD 2.1) heads", () => {
  const headDim = (name: string) => {
    const m = SD_MODELS.find((x) => x.name === name)!;
    const c = resolveUNetConfig(m.unet, `${m.name} unet`);
    assert.deepEqual(c.block_out_channels, [320, 640, 1280, 1280], name);
    const heads = c.attention_head_dim;
    return 320 / (Array.isArray(heads) ? heads[0] : heads);
  };
  assert.equal(headDim("sd15"), 40);
  assert.equal(headDim("alt"), 40);
  assert.equal(headDim("sd21"), 64);
});

Deno.test("bench: bad --sd settings are refused by name", () => {
  assert.throws(() => parseArgs(["--sd", "--scale", "tiny"]), /--scale must be full or small/);
  assert.throws(() => parseArgs(["--preset", "xl"]), /unknown --preset 'xl'/);
  assert.throws(() => parseArgs(["--scale", "small"]), /belong to --sd/);
  assert.throws(() => parseArgs(["--sd", "--reps", "0"]), /--reps must be a positive integer/);
  assert.throws(() => parseArgs(["--sd", "--json"]), /--json needs a value/);
  const a = parseArgs(["--preset", "sd", "--scale", "small", "--models", "sd15,alt"]);
  assert.deepEqual([a.sd, a.scale, a.models], [true, "small", ["sd15", "alt"]]);
});
