/**
 * The generate job end to end on the tiny pipeline fixture (tests/fixtures/tiny_pipeline):
 * 2 worker processes, an interrupted run resumed, byte-identical to a 1-worker run with another
 * batch size; index.json and captions.txt contents; numpy-format pairs; a flow teacher run in a
 * numbered part.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { getConfig } from "../../configs/generate.ts";
import { runGenerate } from "../../core/generate/generate.ts";
import { buildCaptionList, readCaptions } from "../../core/data/captions.ts";
import { readNpy } from "../../core/data/npy.ts";
import { pairNoiseBits } from "../../core/generate/noise.ts";

const TINY = fileURLToPath(new URL("../fixtures/tiny_pipeline", import.meta.url));
const CAPTIONS = ["a red cube on a table", "a photo of a cat", "two dogs running on a beach"];
const quiet = { log: () => {}, progress: false as const };
const N = 4 * 16 * 16;

function baseConfig(dir: string) {
  const c = getConfig();
  c.model_dir = TINY;
  c.captions_file = join(dir, "caps.txt");
  c.total_nums = 4;
  c.infer_steps = 2;
  c.seed = 7;
  return c;
}

async function listNpy(images: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(images)) names.push(e.name);
  return names.sort();
}

Deno.test({
  name: "generate: 2 workers, interrupted and resumed = 1 worker with another batch size",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    assert.ok(
      existsSync(join(TINY, "unet")),
      `missing fixture ${TINY}: run core/generate/tiny_pipeline.ts`,
    );
    const dir = await Deno.makeTempDir({ prefix: "reflow-gen-" });
    try {
      await Deno.writeTextFile(join(dir, "caps.txt"), CAPTIONS.join("\n"));
      // Two workers on this machine's one adapter: refused unless sharing is asked for.
      const a = { ...baseConfig(dir), save_dir: join(dir, "a"), devices: [0, 0], bs: 2 };
      await assert.rejects(runGenerate(a, quiet), /workers 0 and 1 would both run on adapter 0/);
      const logs: string[] = [];
      const r1 = await runGenerate(a, { ...quiet, shareAdapter: true, log: (l) => logs.push(l) });
      assert.equal(r1.workers, 2);
      for (const k of [0, 1]) {
        assert.ok(
          logs.some((l) => l.startsWith(`generate: worker ${k} `) && /adapter .*vendor 0x/.test(l)),
          `worker ${k} logs its adapter: ${logs.join("\n")}`,
        );
      }
      assert.equal(r1.generated, 4);
      const images = join(dir, "a", "content", "images");

      // index.json: settings, model, data set, scheduler config (-Infinity as a string).
      const index = JSON.parse(await Deno.readTextFile(join(dir, "a", "index.json")));
      assert.equal(index.model, TINY);
      assert.equal(index.dataset, a.captions_file);
      assert.equal(index.scheduler, "DPMSolverMultistepScheduler");
      assert.equal(index.infer_steps, 2);
      assert.equal(index.seed, 7);
      assert.equal(index.total_nums, 4);
      assert.equal(index.guidance_scale, 7.5);
      assert.equal(index.negative_prompt, "");
      assert.deepEqual(index.latent_shape, [4, 16, 16]);
      assert.equal(index.teacher.scheduler_config.lambda_min_clipped, "-Infinity");
      assert.equal(index.teacher.scheduler_config.algorithm_type, "dpmsolver++");
      assert.equal(index.teacher.scheduler_config.solver_order, 2);
      assert.ok(!("save_dir" in index));

      // captions.txt line i = caption of pair i = the seeded list.
      const lines = await readCaptions(join(dir, "a", "content", "captions.txt"));
      assert.deepEqual(lines, buildCaptionList(CAPTIONS, 4, 7));

      // Pairs: [2, 4, 16, 16] float16, z0 = Philox noise at offset i*N, z1 finite and not z0.
      for (let i = 0; i < 4; i++) {
        const arr = await readNpy(join(images, `${i}.npy`));
        assert.equal(arr.dtype, "<f2");
        assert.deepEqual(arr.shape, [2, 4, 16, 16]);
        const bits = arr.data as Uint16Array;
        assert.deepEqual(bits.subarray(0, N), pairNoiseBits(7, i, N), `z0 of pair ${i}`);
        assert.ok(
          bits.subarray(N).some((b, k) => b !== bits[k]),
          `z1 of pair ${i} differs from z0`,
        );
        assert.ok(bits.subarray(N).every((b) => (b & 0x7c00) !== 0x7c00), `z1 of pair ${i} finite`);
      }
      const before = await Promise.all(
        [0, 1, 2, 3].map((i) => Deno.readFile(join(images, `${i}.npy`))),
      );

      // "Kill": lose two pairs, truncate one, leave a half-written temp file.
      await Deno.remove(join(images, "1.npy"));
      await Deno.remove(join(images, "3.npy"));
      await Deno.writeFile(join(images, "2.npy"), before[2].subarray(0, 700));
      await Deno.writeFile(join(images, "3.npy.tmp"), before[3].subarray(0, 100));
      const r2 = await runGenerate(a, { ...quiet, shareAdapter: true });
      assert.equal(r2.skipped, 1);
      assert.equal(r2.generated, 3);
      assert.deepEqual(await listNpy(images), ["0.npy", "1.npy", "2.npy", "3.npy"]);
      for (let i = 0; i < 4; i++) {
        assert.deepEqual(await Deno.readFile(join(images, `${i}.npy`)), before[i], `resumed ${i}`);
      }

      // One worker, batch size 3: byte-identical files.
      const b = { ...baseConfig(dir), save_dir: join(dir, "b"), devices: [0], bs: 3 };
      const r3 = await runGenerate(b, quiet);
      assert.equal(r3.workers, 1);
      for (let i = 0; i < 4; i++) {
        const got = await Deno.readFile(join(dir, "b", "content", "images", `${i}.npy`));
        assert.deepEqual(got, before[i], `1 worker bs 3 vs 2 workers bs 2: pair ${i}`);
      }
      // A complete run resumes to nothing.
      const r4 = await runGenerate(b, quiet);
      assert.equal(r4.generated, 0);
      assert.equal(r4.skipped, 4);

      // Other settings are refused.
      await assert.rejects(
        runGenerate({ ...b, infer_steps: 3 }, quiet),
        /other settings.*infer_steps/,
      );

      // numpy reads our files (when numpy is installed).
      const py = await new Deno.Command("python3", {
        args: [
          "-c",
          "import sys, numpy as np; a = np.load(sys.argv[1]); " +
          "print(a.shape, a.dtype, bool(np.isfinite(a).all()))",
          join(images, "3.npy"),
        ],
        stdout: "piped",
        stderr: "piped",
      }).output().catch(() => null);
      if (py?.success) {
        assert.equal(new TextDecoder().decode(py.stdout).trim(), "(2, 4, 16, 16) float16 True");
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "generate: flow teacher (reflow.json) in a numbered part",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "reflow-gen-flow-" });
    try {
      await Deno.writeTextFile(join(dir, "caps.txt"), CAPTIONS.join("\n"));
      // The tiny pipeline with a reflow.json: its UNet is read as a velocity model.
      const model = join(dir, "flow_model");
      await new Deno.Command("cp", { args: ["-r", TINY, model] }).output();
      await Deno.writeTextFile(
        join(model, "reflow.json"),
        JSON.stringify({ timestep_orientation: "original", sampler: "euler", sample_N: 2 }),
      );
      const c = {
        ...baseConfig(dir),
        model_dir: model,
        save_dir: join(dir, "flow"),
        part: 1,
        total_nums: 2,
        bs: 2,
      };
      const r = await runGenerate(c, quiet);
      assert.equal(r.root, join(dir, "flow", "part1"));
      const index = JSON.parse(await Deno.readTextFile(join(r.root, "index.json")));
      assert.equal(index.seed, 8, "part adds its number to the seed");
      assert.equal(index.base_seed, 7);
      assert.equal(index.part, 1);
      assert.equal(index.teacher.teacher, "flow");
      assert.equal(index.teacher.scheduler, "euler");
      assert.equal(index.teacher.sample_N, 2);
      const lines = await readCaptions(join(r.root, "content", "captions.txt"));
      assert.deepEqual(lines, buildCaptionList(CAPTIONS, 2, 8));
      for (let i = 0; i < 2; i++) {
        const arr = await readNpy(join(r.root, "content", "images", `${i}.npy`));
        assert.deepEqual((arr.data as Uint16Array).subarray(0, N), pairNoiseBits(8, i, N));
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
