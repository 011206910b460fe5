/**
 * The generate job's `dpm_solver` settings: recorded in index.json (the resolved scheduler config
 * and the group itself), reaching the worker processes (other latents from the same noise), part of
 * a run's identity (resuming with other settings is refused), and refused by name where they
 * cannot apply.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { getConfig } from "../../configs/generate.ts";
import { captionSource, indexRecord, runGenerate } from "../../core/generate/generate.ts";
import { inspectTeacher } from "../../core/generate/teacher_info.ts";
import { readNpy } from "../../core/data/npy.ts";

const TINY = fileURLToPath(new URL("../fixtures/tiny_pipeline", import.meta.url));
const quiet = { log: () => {}, progress: false as const };

function config(dir: string, name: string) {
  const c = getConfig();
  c.model_dir = TINY;
  c.captions_file = join(dir, "caps.txt");
  c.save_dir = join(dir, name);
  c.total_nums = 1;
  c.infer_steps = 2;
  c.bs = 1;
  c.seed = 3;
  return c;
}

Deno.test("dpm_solver settings in index.json: the group when set, and the resolved config", async () => {
  const info = await inspectTeacher(TINY);
  const plain = getConfig();
  plain.model_dir = TINY;
  const a = indexRecord(plain, info, captionSource(plain));
  assert.ok(!("dpm_solver" in a), "defaults leave index.json as before the setting existed");
  const sa = (a.teacher as { scheduler_config: Record<string, unknown> }).scheduler_config;
  assert.equal(sa.final_sigmas_type, "zero");

  const set = getConfig();
  set.model_dir = TINY;
  set.dpm_solver.preset = "diffusers-0.12";
  set.dpm_solver.timestep_spacing = "trailing";
  const b = indexRecord(set, info, captionSource(set));
  assert.deepEqual(b.dpm_solver, { ...set.dpm_solver });
  const sb = (b.teacher as { scheduler_config: Record<string, unknown> }).scheduler_config;
  assert.equal(sb.final_sigmas_type, "sigma_min");
  assert.equal(sb.timestep_spacing, "trailing");
  assert.equal(sb.euler_at_final, false);
  assert.equal(sb.steps_offset, 1, "the teacher's other fields stay");
});

Deno.test({
  name: "dpm_solver settings reach the workers; a run with other settings is not resumed",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "reflow-gen-dpm-" });
    try {
      await Deno.writeTextFile(join(dir, "caps.txt"), "a red cube on a table\n");
      const a = config(dir, "a");
      await runGenerate(a, quiet);
      const b = config(dir, "b");
      b.dpm_solver.preset = "diffusers-0.12";
      await runGenerate(b, quiet);
      const pa = await readNpy(join(dir, "a", "content", "images", "0.npy"));
      const pb = await readNpy(join(dir, "b", "content", "images", "0.npy"));
      const n = (pa.data as Uint16Array).length / 2;
      const za = pa.data as Uint16Array, zb = pb.data as Uint16Array;
      assert.deepEqual(za.subarray(0, n), zb.subarray(0, n), "the same noise z0");
      let differ = 0;
      for (let i = n; i < 2 * n; i++) if (za[i] !== zb[i]) differ++;
      assert.ok(differ > n / 2, `z1 differs in ${differ} of ${n} values`);
      const index = JSON.parse(await Deno.readTextFile(join(dir, "b", "index.json")));
      assert.equal(index.teacher.scheduler_config.final_sigmas_type, "sigma_min");
      // Resuming run "a" with the preset would mix two samplers in one data set.
      await assert.rejects(
        runGenerate({ ...b, save_dir: join(dir, "a") }, quiet),
        /records other settings \(.*dpm_solver.*\)/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("dpm_solver settings are refused where they cannot apply, naming the setting", async () => {
  const dir = await Deno.makeTempDir({ prefix: "reflow-gen-dpm-" });
  try {
    await Deno.writeTextFile(join(dir, "caps.txt"), "a cat\n");
    // A flow teacher (reflow.json) has no DPM-Solver.
    const flow = join(dir, "flow");
    await Deno.mkdir(join(flow, "unet"), { recursive: true });
    await Deno.copyFile(join(TINY, "model_index.json"), join(flow, "model_index.json"));
    await Deno.copyFile(join(TINY, "unet", "config.json"), join(flow, "unet", "config.json"));
    await Deno.writeTextFile(join(flow, "reflow.json"), "{}");
    const c = config(dir, "out");
    c.model_dir = flow;
    c.dpm_solver.euler_at_final = true;
    await assert.rejects(runGenerate(c, quiet), /config\.dpm_solver: .*flow.* is a flow teacher/);
    // A combination diffusers refuses names the setting and the teacher's file.
    const model = join(dir, "dpm");
    await Deno.mkdir(join(model, "unet"), { recursive: true });
    await Deno.mkdir(join(model, "scheduler"), { recursive: true });
    await Deno.copyFile(join(TINY, "model_index.json"), join(model, "model_index.json"));
    await Deno.copyFile(join(TINY, "unet", "config.json"), join(model, "unet", "config.json"));
    await Deno.writeTextFile(
      join(model, "scheduler", "scheduler_config.json"),
      JSON.stringify({ algorithm_type: "dpmsolver", final_sigmas_type: "sigma_min" }),
    );
    const d = config(dir, "out");
    d.model_dir = model;
    d.dpm_solver.final_sigmas_type = "zero";
    await assert.rejects(
      runGenerate(d, quiet),
      /scheduler_config\.json: config\.dpm_solver over the teacher's scheduler config: .*final_sigmas_type="zero"/,
    );
    await assert.rejects(Deno.stat(join(dir, "out")), Deno.errors.NotFound, "nothing written");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
