/**
 * Fuzz test of the file readers: mutated safetensors, .pth (the zip and its pickle), .npy, LMDB and
 * pickled-numpy inputs must each load or fail with a named error, fast and in bounded memory.
 *
 * The cases run in a child process (_fuzz_worker.ts) so its peak memory is measured alone and a
 * crash or hang is caught. Seeded: FUZZ_SEED=<n> (default 15) and FUZZ_CASES=<per target> change
 * the run; a failing case replays alone with
 * `deno run -A tests/io/_fuzz_worker.ts --seed <n> --only <target>:<i> --keep /tmp/fuzz`.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const SEED = Number(Deno.env.get("FUZZ_SEED") ?? "15");
const CASES = Number(Deno.env.get("FUZZ_CASES") ?? "600");
/** The worker starts no case after this; with start-up the test stays well under 40 s. */
const BUDGET_MS = 25_000;
/** Hard stop for a hung worker. */
const KILL_MS = 60_000;
/**
 * Per case: a load that takes longer (quadratic work, a bomb) fails the test. Linear work costs
 * about 1 ms per KiB here, so the bound is generous for a loaded machine; the quadratic big-int
 * decoding this caught took 3 s for a 100 KiB pickle.
 */
const caseMs = (kib: number) => 1_500 + 2 * kib;
/** Per case: growth of the worker's peak resident memory. */
const CASE_MIB = 256;
/** The worker's peak resident memory over the whole run. */
const PEAK_MIB = 512;

interface CaseLine {
  t: "start" | "end";
  id: string;
  base?: string;
  muts?: string[];
  outcome?: "ok" | "named" | "bad";
  ms?: number;
  kib?: number;
  grewKiB?: number;
  detail?: string;
}

Deno.test("fuzz: mutated weight, npy and LMDB files load or fail by name, in bounded time and memory", async () => {
  const worker = fileURLToPath(new URL("./_fuzz_worker.ts", import.meta.url));
  const replay = (id: string) =>
    `deno run -A tests/io/_fuzz_worker.ts --seed ${SEED} --only ${id} --keep /tmp/fuzz`;
  console.log(`fuzz seed ${SEED} (set FUZZ_SEED to change), ${CASES} cases per target`);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      worker,
      "--seed",
      String(SEED),
      "--cases",
      String(CASES),
      "--budget-ms",
      String(BUDGET_MS),
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), KILL_MS);
  const out = await child.output();
  clearTimeout(timer);
  const lines = new TextDecoder().decode(out.stdout).split("\n").filter((l) => l.startsWith("{"));
  const parsed = lines.map((l) => JSON.parse(l));
  const done = parsed.find((l) => l.t === "done");
  if (!out.success || done === undefined) {
    const last = parsed.filter((l) => l.t === "start").pop() as CaseLine | undefined;
    const stderr = new TextDecoder().decode(out.stderr).slice(-3000);
    assert.fail(
      `fuzz worker ${out.signal ? `killed by ${out.signal}` : `exited with ${out.code}`} ` +
        `(seed ${SEED}); last case started: ${last?.id} on ${last?.base} ` +
        `[${last?.muts?.join("; ")}]; replay: ${last ? replay(last.id) : "-"}\n${stderr}`,
    );
  }
  const ends = parsed.filter((l) => l.t === "end") as CaseLine[];
  const starts = new Map(
    (parsed.filter((l) => l.t === "start") as CaseLine[]).map((l) => [l.id, l]),
  );
  const describe = (c: CaseLine) =>
    `${c.id} on ${starts.get(c.id)?.base} [${starts.get(c.id)?.muts?.join("; ")}] ` +
    `(${c.kib} KiB in ${c.ms} ms, +${c.grewKiB} KiB peak): ${c.detail}\n  replay: ${replay(c.id)}`;
  const bad = ends.filter((c) => c.outcome === "bad");
  assert.equal(
    bad.length,
    0,
    `seed ${SEED}: unnamed errors\n${bad.slice(0, 10).map(describe).join("\n")}`,
  );
  const slow = ends.filter((c) => c.ms! > caseMs(c.kib!));
  assert.equal(
    slow.length,
    0,
    `seed ${SEED}: cases over 1500 ms + 2 ms per KiB\n${slow.map(describe).join("\n")}`,
  );
  const big = ends.filter((c) => c.grewKiB! > CASE_MIB * 1024);
  assert.equal(
    big.length,
    0,
    `seed ${SEED}: cases over ${CASE_MIB} MiB\n${big.map(describe).join("\n")}`,
  );
  assert.ok(done.peakMiB < PEAK_MIB, `seed ${SEED}: worker peaked at ${done.peakMiB} MiB`);

  // The run exercised what it claims: every target ran and was refused at times, some loads passed.
  const counts = done.counts as Record<string, Record<string, number>>;
  assert.deepEqual(Object.keys(counts).sort(), [
    "lmdb",
    "npy",
    "pickle",
    "pth",
    "pth_pickle",
    "safetensors",
  ]);
  for (const [target, c] of Object.entries(counts)) {
    const n = (c.ok ?? 0) + (c.named ?? 0);
    assert.ok(n >= Math.min(CASES, 20), `${target}: only ${n} cases ran`);
    assert.ok((c.named ?? 0) > 0, `${target}: no mutation was refused`);
  }
  assert.ok(Object.values(counts).reduce((s, c) => s + (c.ok ?? 0), 0) > 0, "nothing loaded");
  console.log(
    `fuzz seed ${SEED}: ${done.ran} cases in ${done.seconds} s${
      done.stoppedEarly ? " (time budget reached)" : ""
    }; ${JSON.stringify(counts)}; slowest ${done.worstMs.id} ${
      done.worstMs.ms.toFixed(0)
    } ms; largest memory step ${done.worstKiB.id} +${
      (done.worstKiB.kib / 1024).toFixed(1)
    } MiB; peak ${done.peakMiB} MiB`,
  );
});
