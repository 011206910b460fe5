/**
 * Training over MPI on this machine (mpirun, loopback only):
 * - 2 ranks x batch b give the weights of 1 rank x batch 2b after k steps (relative L2 <= 1e-6),
 *   with small buckets exchanged from inside backward, and both ranks hold identical weights;
 * - a rank killed mid-run makes the job end within seconds, saying so;
 * - a rank that stops (SIGSTOP) is caught by the collective's watchdog, which aborts the job.
 * Ignored, saying why, where MPI is not installed.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { testGpu } from "../helpers/gpu.ts";
import { makeTinyRoots, readAll, tinyConfig, tinyInit } from "../train/_tiny.ts";
import { runTraining } from "../../core/train/trainer.ts";
import { saveModule } from "../../core/models/load.ts";
import { mpirun, mpiTest } from "./_mpi.ts";

const MAIN = fileURLToPath(new URL("./_mpi_train_main.ts", import.meta.url));

function relL2(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  let num = 0, den = 0;
  for (const [k, x] of a) {
    const y = b.get(k)!;
    for (let i = 0; i < x.length; i++) {
      num += (x[i] - y[i]) ** 2;
      den += x[i] ** 2;
    }
  }
  return Math.sqrt(num / den);
}

Deno.test({
  ...mpiTest("MPI: 2 ranks x batch b == 1 rank x batch 2b after 3 steps (rel L2 <= 1e-6)"),
  sanitizeResources: false,
  async fn() {
    const gpu = await testGpu();
    const tmp = await Deno.makeTempDir({ prefix: "reflow_mpi_" });
    try {
      const data = join(tmp, "data");
      await makeTinyRoots(data, 8);
      const steps = 3;
      const one = tinyConfig(data);
      one.training.batch_size = 4;
      one.training.num_steps = steps;
      const init = await tinyInit(gpu, one, join(tmp, "one"));
      await runTraining(init);
      await saveModule(init.models.unet, join(tmp, "one.safetensors"));

      // Buckets of 64 KiB: several buckets, launched from inside backward.
      const arg = { data, workdir: tmp, batch: 2, steps, bucketBytes: 64 * 1024, overlap: true };
      const o = await mpirun(2, MAIN, [JSON.stringify(arg)]).output();
      const out = new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr);
      assert.equal(o.code, 0, out);
      for (const r of [0, 1]) {
        assert.match(out, new RegExp(`rank ${r} adapter .*vendor 0x.*bound to adapter 0`));
      }
      const ref = await readAll(join(tmp, "one.safetensors"));
      const r0 = await readAll(join(tmp, "rank0.safetensors"));
      const r1 = await readAll(join(tmp, "rank1.safetensors"));
      for (const [k, x] of r0) {
        assert.deepEqual(r1.get(k), x, `rank 1's ${k} differs from rank 0's`);
      }
      const rel = relL2(ref, r0);
      console.log(`relative L2, 2 ranks vs 1 rank after ${steps} steps: ${rel.toExponential(2)}`);
      assert.ok(rel <= 1e-6, `2 ranks vs 1 rank: relative L2 ${rel}`);
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

/**
 * Starts 2 ranks for many steps; once rank 0 has finished step 2, does `act` to rank 1 (by its
 * pid) and returns how long the job took to end after that, its exit code and its output.
 */
async function disturbRank1(
  act: (pid: number) => void,
  timeoutSecs: number,
): Promise<{ seconds: number; code: number; out: string; pid: number }> {
  const tmp = await Deno.makeTempDir({ prefix: "reflow_mpi_fail_" });
  try {
    const data = join(tmp, "data");
    await makeTinyRoots(data, 8);
    const arg = { data, workdir: tmp, batch: 2, steps: 400, timeoutSecs };
    const child = mpirun(2, MAIN, [JSON.stringify(arg)]).spawn();
    let out = "";
    let pid = 0;
    let t0 = 0;
    const dec = new TextDecoder();
    const errText = (async () => {
      for await (const c of child.stderr) out += dec.decode(c, { stream: true });
    })();
    for await (const c of child.stdout) {
      out += dec.decode(c, { stream: true });
      const m = /rank 1 pid (\d+)/.exec(out);
      if (m) pid = Number(m[1]);
      if (!t0 && pid && /rank 0 step 2\b/.test(out)) {
        act(pid);
        t0 = performance.now();
      }
    }
    const st = await child.status;
    await errText;
    const seconds = (performance.now() - t0) / 1000;
    assert.ok(t0 > 0, `rank 1 was never disturbed:\n${out}`);
    return { seconds, code: st.code, out, pid };
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

/** Whether process `pid` still exists (and is not a zombie). */
function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

/** Waits up to `secs` for `pid` to be gone. */
async function gone(pid: number, secs: number): Promise<boolean> {
  for (let t = 0; t < secs * 10; t++) {
    if (!alive(pid)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return !alive(pid);
}

Deno.test({
  ...mpiTest("MPI: a rank killed mid-run ends the job within seconds, with a clear error"),
  sanitizeResources: false,
  async fn() {
    const r = await disturbRank1((pid) => Deno.kill(pid, "SIGKILL"), 120);
    assert.notEqual(r.code, 0, r.out);
    console.log(`the job ended ${r.seconds.toFixed(1)} s after rank 1 was killed`);
    assert.ok(r.seconds < 20, `the job took ${r.seconds.toFixed(1)} s to end:\n${r.out}`);
    // mpirun names the dead rank (unless its own help-text lookup fails, as Open MPI 4.1's
    // show_help does under load: "ORTE_ERROR_LOG ... show_help.c"); rank 0 says why it stops.
    assert.match(r.out, /process rank 1 .*exited on signal 9|ORTE_ERROR_LOG: .*show_help/s);
    assert.match(r.out, /rank 0: stopped by the MPI launcher \(SIGTERM\): another rank failed/);
  },
});

Deno.test({
  ...mpiTest("MPI: a stuck rank trips the collective watchdog, which aborts the job"),
  sanitizeResources: false,
  async fn() {
    const timeout = 8;
    const r = await disturbRank1((pid) => Deno.kill(pid, "SIGSTOP"), timeout);
    try {
      assert.notEqual(r.code, 0, r.out);
      assert.match(
        r.out,
        new RegExp(
          `rank 0: all-reduce .* did not complete within ${timeout} s: another rank is ` +
            `dead or stuck. Aborting the job`,
        ),
      );
      // mpirun's own MPI_ABORT notice is help text that Open MPI 4.1 sometimes fails to print
      // under load (ORTE_ERROR_LOG in show_help.c); the exit code and rank 0's line are the proof.
      assert.match(r.out, /MPI_ABORT was invoked on rank 0|ORTE_ERROR_LOG: .*show_help/s);
      assert.ok(r.seconds < timeout + 20, `the job took ${r.seconds.toFixed(1)} s to end`);
      assert.ok(await gone(r.pid, 10), "the stopped rank was ended too");
    } finally {
      if (alive(r.pid)) Deno.kill(r.pid, "SIGKILL"); // not left behind if the test fails
    }
  },
});
