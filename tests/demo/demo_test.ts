/**
 * `deno task demo --quick` end to end on the shipped teacher (CI size, a few minutes on lavapipe):
 * every job runs, and the report holds every section.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

Deno.test({
  name: "demo --quick: generate -> data2lmdb -> train -> sample -> report",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "reflow_demo_" });
    try {
      const r = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          join(ROOT, "scripts/demo.ts"),
          "--quick",
          "--out",
          out,
          "--save_student",
          join(out, "saved_student"),
        ],
        cwd: ROOT,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(r.stderr) + new TextDecoder().decode(r.stdout);
      assert(r.success, `demo failed:\n${text.slice(-4000)}`);
      for (const k of [1, 2, 3, 4, 5, 6]) assert(text.includes(`[demo ${k}/6]`), `stage ${k}`);

      const report = JSON.parse(await Deno.readTextFile(join(out, "report.json")));
      const cols = report.columns as Record<string, unknown>[];
      const names = cols.map((c) => `${c.name}@${c.steps}`);
      for (
        const want of ["teacher@25", "teacher@1", "student (this run)@1", "student (this run)@4"]
      ) {
        assert(names.includes(want), `column ${want} in ${names}`);
      }
      for (const c of cols) {
        for (const k of ["name", "steps", "accuracy", "seconds_per_image", "straightness"]) {
          assert(k in c, `column field ${k}`);
        }
        assert(Number(c.accuracy) >= 0 && Number(c.accuracy) <= 1);
        assert(Number(c.seconds_per_image) > 0);
        assert(Number.isFinite(Number(c.straightness)));
      }
      assert(report.loss_curve.length > 0, "loss curve");

      const html = await Deno.readTextFile(join(out, "index.html"));
      for (const section of ["Pictures", "Numbers", "Student training loss", "Run"]) {
        assert(html.includes(`<h2>${section}</h2>`), `section ${section}`);
      }
      assert(html.includes("<svg"), "loss chart");
      const imgs = [...html.matchAll(/<img src="([^"]+)"/g)].map((m) => m[1]);
      assert(imgs.length >= 4 * 4, `${imgs.length} images`);
      for (const src of imgs) assert((await Deno.stat(join(out, src))).size > 0, src);
      // The jobs' own outputs are there too.
      for (
        const f of [
          "data/train/content/lmdb",
          "data/eval/index.json",
          "train/exp.log",
          "sample_euler1/summary.json",
          "sample_euler4/summary.json",
        ]
      ) {
        await Deno.stat(join(out, f));
      }
      // --save_student: a diffusers UNet folder with the run's EMA weights, byte for byte.
      const saved = join(out, "saved_student");
      const cfg = JSON.parse(await Deno.readTextFile(join(saved, "config.json")));
      assert.equal(cfg._class_name, "UNet2DConditionModel");
      const ema = await Deno.readFile(join(out, "train/checkpoints/score_model_s4.safetensors"));
      assert.deepEqual(
        await Deno.readFile(join(saved, "diffusion_pytorch_model.safetensors")),
        ema,
      );
    } finally {
      await Deno.remove(out, { recursive: true }).catch(() => {});
    }
  },
});
