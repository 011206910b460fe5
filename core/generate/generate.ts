/**
 * The `generate` job (the original's `reflow_generate_data.py` main): build the seeded caption
 * list, record the run's settings in `<root>/index.json`, write `<root>/content/captions.txt`,
 * cut the list into one contiguous group per worker and let worker processes (each with its own
 * WebGPU device) write `<root>/content/images/{i}.npy` = stack([z0, z1]) as float16.
 *
 * `<root>` is `save_dir`, or `save_dir/part{n}` for a run made in parts (training reads every
 * `part*` folder under the data root); a save_dir that already ends in `part{n}` is used as is.
 *
 * Resuming: rerun with the same settings and only the missing pairs are made (complete files are
 * kept, half-written `.tmp` files dropped). z0 of pair i depends only on (seed, part, i), so the
 * files are byte-identical whatever the worker count, batch size or interruptions. A root whose
 * index.json records other settings is refused unless `overwrite` is set (then it is redone).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { getConfig } from "../../configs/generate.ts";
 * import { readNpy } from "../data/npy.ts";
 *
 * // two pairs from the demo's tiny teacher, in 4 steps (the original: 1M pairs, 25 steps)
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/captions.txt`, "a red circle\na blue square on the left\n");
 * const config = {
 *   ...getConfig(),
 *   model_dir: "models/tiny_teacher",
 *   captions_file: `${dir}/captions.txt`,
 *   save_dir: `${dir}/pairs`,
 *   total_nums: 2,
 *   bs: 2,
 *   infer_steps: 4,
 * };
 * const result = await runGenerate(config, { progress: false, log: () => {} });
 * console.log(`${result.generated} pairs in ${result.root}`);
 * assert.equal(result.generated, 2);
 * const pair = await readNpy(`${result.root}/content/images/1.npy`);
 * assert.deepEqual([pair.dtype, pair.shape], ["<f2", [2, 3, 12, 12]]); // [z0, z1] as float16
 * const again = await runGenerate(config, { progress: false, log: () => {} }); // resumes: done
 * assert.deepEqual([again.skipped, again.generated], [2, 0]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @module
 */

import { basename, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { existsSync } from "node:fs";
import type { GenerateConfig } from "../../configs/generate.ts";
import {
  buildCaptionList,
  loadCaptions,
  loadCocoCaptions,
  readCaptions,
  writeCaptions,
} from "../data/captions.ts";
import { writeFileAtomic } from "../data/atomic_write.ts";
import { pairNpyPath, pairPaths } from "../data/pair_store.ts";
import { createProgress, type Progress, type ProgressOptions } from "../util/progress.ts";
import {
  describeTeacher,
  inspectTeacher,
  type TeacherInfo,
  teacherSchedulerConfig,
} from "./teacher_info.ts";
import { hasDPMSolverOverrides } from "../schedulers/dpm_solver_config.ts";
import { runSeed } from "./noise.ts";
import { isCompletePair, pairFileLayout } from "./pair_files.ts";
import { MESSAGE_PREFIX, type WorkerJob, type WorkerMessage } from "./worker_protocol.ts";
import { planWorkerBindings } from "../gpu/adapter_binding.ts"; // issue 12: one worker per adapter
import { indexRuns, type Shard, shardRange, writeRankManifest } from "../distributed/shard.ts"; // issue 14

/** Settings that do not change the data: a resumed run may change them freely. */
const FREE_SETTINGS = ["devices", "bs", "overwrite"] as const;

/** Options of {@link runGenerate} beyond the config. */
export interface GenerateOptions {
  /** Log lines (default: console.log). */
  log?: (line: string) => void;
  /** Progress display settings (stream, tty, log...); `false` turns it off. */
  progress?: Partial<ProgressOptions> | false;
  /** Extra environment for the worker processes. */
  workerEnv?: Record<string, string>;
  /** The workers' adapters (`--devices`: indices, PCI bus ids, vendor:device); default config.devices. */
  devices?: (string | number)[];
  /** Let several workers share one adapter (`--share_adapter`). */
  shareAdapter?: boolean;
  /** This rank's share of the pairs when several machines split the job (default: all). */
  shard?: Shard;
}

/** What a run did. */
export interface GenerateResult {
  /** The run's folder (index.json, content/). */
  root: string;
  total: number;
  /** Pairs already complete when the run started. */
  skipped: number;
  /** Pairs made by this run. */
  generated: number;
  workers: number;
  seconds: number;
  /** Pairs made per second of this run (0 when nothing was made). */
  pairsPerSecond: number;
}

/** The folder a run writes: save_dir, or save_dir/part{n} for a numbered part. */
export function outputRoot(saveDir: string, part: number | null): string {
  if (part === null || part === undefined) return saveDir;
  if (!Number.isInteger(part) || part < 0) {
    throw new Error(`part must be null or an integer >= 0, got ${part}`);
  }
  return basename(resolve(saveDir)) === `part${part}` ? saveDir : join(saveDir, `part${part}`);
}

/**
 * Contiguous groups [start, end) as the original's `devide_to_groups`: ceil(total / workers)
 * items per group, the last one shorter; fewer groups than workers when total is small.
 */
export function divideToGroups(total: number, workers: number): [number, number][] {
  if (!Number.isInteger(workers) || workers <= 0) {
    throw new Error(`the worker count must be a positive integer, got ${workers}`);
  }
  const size = Math.ceil(total / workers);
  const groups: [number, number][] = [];
  for (let s = 0; s < total; s += size) groups.push([s, Math.min(s + size, total)]);
  return groups;
}

/** JSON-safe copy: non-finite numbers (lambda_min_clipped = -Infinity) become strings. */
export function jsonSafe(v: unknown): unknown {
  if (typeof v === "number") return Number.isFinite(v) ? v : String(v);
  if (Array.isArray(v)) return v.map(jsonSafe);
  if (v !== null && typeof v === "object") {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jsonSafe(x)]));
  }
  return v;
}

function checkConfig(c: GenerateConfig): void {
  const posInt = (key: keyof GenerateConfig) => {
    const v = c[key];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) {
      throw new Error(`config.${key} must be a positive integer, got ${JSON.stringify(v)}`);
    }
  };
  posInt("total_nums");
  posInt("bs");
  posInt("infer_steps");
  if (!Number.isSafeInteger(c.seed)) {
    throw new Error(`config.seed must be an integer, got ${c.seed}`);
  }
  if (!Array.isArray(c.devices) || c.devices.length === 0) {
    throw new Error(
      `config.devices must list at least one worker, got ${JSON.stringify(c.devices)}`,
    );
  }
  if (typeof c.guidance_scale !== "number" || !Number.isFinite(c.guidance_scale)) {
    throw new Error(`config.guidance_scale must be a finite number, got ${c.guidance_scale}`);
  }
  if (!c.save_dir) throw new Error("config.save_dir is empty");
  if (!c.model_dir) throw new Error("config.model_dir is empty");
  if (!c.captions_file && c.split !== "train" && c.split !== "val") {
    throw new Error(`config.split must be "train" or "val", got ${JSON.stringify(c.split)}`);
  }
}

/** The caption source of a config: the plain captions file, or COCO's annotation file. */
export function captionSource(c: GenerateConfig): { path: string; dataset: string } {
  if (c.captions_file) return { path: c.captions_file, dataset: c.captions_file };
  return {
    path: join(c.coco_root, "annotations", `captions_${c.split}2014.json`),
    dataset: "coco2014",
  };
}

/** The index.json record of a run (settings, model, data set, teacher and scheduler). */
export function indexRecord(
  c: GenerateConfig,
  info: TeacherInfo,
  source: { path: string; dataset: string },
): Record<string, unknown> {
  const teacher = describeTeacher(info, {
    inferSteps: c.infer_steps,
    guidanceScale: c.guidance_scale,
    negativePrompt: c.negative_prompt,
    dpmSolver: c.dpm_solver,
  }, c.model_dir);
  // The DPM-Solver settings act through teacher.scheduler_config; the group itself is recorded
  // only when it changes something, so that runs made before it existed still resume.
  const { save_dir: _saveDir, dpm_solver: dpmSolver, ...rest } = c;
  const settings = hasDPMSolverOverrides(dpmSolver) ? { ...rest, dpm_solver: dpmSolver } : rest;
  return jsonSafe({
    model: c.model_dir,
    dataset: source.dataset,
    scheduler: teacher.scheduler,
    ...settings,
    seed: runSeed(c.seed, c.part),
    base_seed: c.seed,
    caption_source: source.path,
    latent_shape: info.latentShape,
    teacher,
  }) as Record<string, unknown>;
}

function fingerprint(index: Record<string, unknown>): string {
  const copy: Record<string, unknown> = { ...index };
  for (const k of FREE_SETTINGS) delete copy[k];
  return JSON.stringify(sortKeys(copy));
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v !== null && typeof v === "object") {
    return Object.fromEntries(
      Object.keys(v).sort().map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]),
    );
  }
  return v;
}

function differingKeys(a: Record<string, unknown>, b: Record<string, unknown>): string[] {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].filter((k) =>
    !(FREE_SETTINGS as readonly string[]).includes(k) &&
    JSON.stringify(sortKeys(a[k])) !== JSON.stringify(sortKeys(b[k]))
  );
}

async function readIndex(path: string): Promise<Record<string, unknown> | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new Error(`cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    const v = JSON.parse(text);
    if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error("not an object");
    return v;
  } catch (e) {
    throw new Error(
      `${path} is not a valid index.json (${(e as Error).message}); ` +
        `set overwrite to replace this folder's data`,
    );
  }
}

async function mkdirp(path: string): Promise<void> {
  try {
    await Deno.mkdir(path, { recursive: true });
  } catch (e) {
    throw new Error(`cannot create folder ${path}: ${(e as Error).message}`);
  }
}

/**
 * Removes pair files (with overwrite) and stale `.tmp` files of interrupted writes, of the pairs
 * in `range` only (other ranks may be writing theirs).
 */
async function cleanImages(
  imagesDir: string,
  all: boolean,
  range: [number, number],
): Promise<void> {
  for await (const e of Deno.readDir(imagesDir)) {
    if (!e.isFile) continue;
    const m = /^(\d+)\.npy/.exec(e.name);
    if (m && (Number(m[1]) < range[0] || Number(m[1]) >= range[1])) continue;
    if (e.name.endsWith(".tmp") || (all && /^\d+\.npy$/.test(e.name))) {
      const p = join(imagesDir, e.name);
      try {
        await Deno.remove(p);
      } catch (err) {
        throw new Error(`cannot remove ${p}: ${(err as Error).message}`);
      }
    }
  }
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

const WORKER_PATH = fileURLToPath(new URL("./generate_worker.ts", import.meta.url));
const DENO_JSON = fileURLToPath(new URL("../../deno.json", import.meta.url));

interface RunningWorker {
  index: number;
  group: [number, number];
  child: Deno.ChildProcess;
  stdin: WritableStreamDefaultWriter<Uint8Array>;
  stderr: Promise<string>;
  error: string | null;
}

async function collectText(stream: ReadableStream<Uint8Array>, max = 64 * 1024): Promise<string> {
  const decoder = new TextDecoder();
  let text = "";
  for await (const chunk of stream) {
    text += decoder.decode(chunk, { stream: true });
    if (text.length > 2 * max) text = text.slice(-max);
  }
  return text.slice(-max);
}

async function readMessages(
  stream: ReadableStream<Uint8Array>,
  onMessage: (m: WorkerMessage) => void,
): Promise<void> {
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of stream) {
    buf += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.startsWith(MESSAGE_PREFIX)) {
        onMessage(JSON.parse(line.slice(MESSAGE_PREFIX.length)) as WorkerMessage);
      }
    }
  }
}

/** Runs the generate job: see the module documentation. */
export async function runGenerate(
  config: GenerateConfig,
  options: GenerateOptions = {},
): Promise<GenerateResult> {
  const log = options.log ?? ((line: string) => console.log(line));
  checkConfig(config);
  const t0 = performance.now();
  const root = outputRoot(config.save_dir, config.part);
  const paths = pairPaths(root);
  const seed = runSeed(config.seed, config.part);

  // Model first (cheap: configs only), then captions: both fail before anything is written.
  const info = await inspectTeacher(config.model_dir);
  teacherSchedulerConfig(config.model_dir, info, config.dpm_solver); // config.dpm_solver errors
  const source = captionSource(config);
  const all = config.captions_file
    ? await loadCaptions(source.path)
    : await loadCocoCaptions(source.path);
  if (all.length === 0) throw new Error(`${source.path}: no captions found`);
  const captions = buildCaptionList(all, config.total_nums, seed);
  const index = indexRecord(config, info, source);
  const shard = options.shard ?? { rank: 0, worldSize: 1 };
  const range = shardRange(captions.length, shard);

  const old = await readIndex(paths.index);
  let overwrite = config.overwrite;
  if (old && fingerprint(old) !== fingerprint(index)) {
    if (!config.overwrite) {
      throw new Error(
        `${paths.index} records other settings (${differingKeys(old, index).join(", ")}); ` +
          `use another save_dir, or set overwrite to replace its data`,
      );
    }
    overwrite = true;
  }
  await mkdirp(paths.images);
  // (Another rank of a split run may have written both since this one read index.json.)
  if (!overwrite && !old && existsSync(paths.captions) && !(await readIndex(paths.index))) {
    // Data without an index.json: not ours to resume.
    throw new Error(
      `${paths.captions} exists but ${paths.index} does not; set overwrite to replace this folder's data`,
    );
  }
  if (!overwrite && existsSync(paths.captions)) {
    const existing = await readCaptions(paths.captions);
    if (!sameList(existing, captions)) {
      throw new Error(
        `${paths.captions} differs from the caption list built from ${source.path} ` +
          `(did the caption source change?); set overwrite to replace this folder's data`,
      );
    }
  }
  await cleanImages(paths.images, overwrite, range);
  // Ranks of a split run write the same files: each through a name of its own, then renamed.
  const mine = (path: string) => (shard.worldSize > 1 ? `${path}.rank${shard.rank}` : path);
  await writeFileAtomic(
    mine(paths.index),
    new TextEncoder().encode(JSON.stringify(index, null, 2)),
  );
  await writeCaptions(mine(paths.captions), captions);
  if (shard.worldSize > 1) {
    await Deno.rename(mine(paths.index), paths.index);
    await Deno.rename(mine(paths.captions), paths.captions);
  }

  const devices = options.devices ?? config.devices;
  const groups = divideToGroups(range[1] - range[0], devices.length)
    .map(([a, b]): [number, number] => [a + range[0], b + range[0]]);
  log(
    `generate: ${captions.length} pairs of [2, ${info.latentShape.join(", ")}] into ${root} ` +
      `with ${groups.length} worker(s), ${info.kind} teacher ${config.model_dir}` +
      (shard.worldSize > 1
        ? ` (rank ${shard.rank} of ${shard.worldSize}: pairs ${range[0]}..${range[1] - 1})`
        : ""),
  );
  const bindings = groups.length
    ? await planWorkerBindings(devices.slice(0, groups.length), {
      shareAdapter: options.shareAdapter ?? false,
      what: options.devices ? "--devices" : "config.devices",
    })
    : [];
  const written: number[] = [];
  const adapters: string[] = [];

  let present = 0;
  let scanned = 0;
  let generated = 0;
  let bar: Progress | null = null;
  const onMessage = (w: RunningWorker, m: WorkerMessage) => {
    if (m.type === "scan") {
      present += m.present;
      if (++scanned === groups.length && options.progress !== false) {
        bar = createProgress({
          total: range[1] - range[0],
          label: "Pairs",
          unit: "pair",
          start: present,
          ...(options.progress ?? {}),
        });
        bar.update(present + generated);
      }
    } else if (m.type === "adapter") {
      adapters[w.index] = m.text;
      log(`generate: worker ${w.index} (pairs ${w.group[0]}..${w.group[1] - 1}): ${m.text}`);
    } else if (m.type === "done") {
      written.push(...(m.indices ?? []));
      generated += m.count;
      bar?.update(present + generated);
    } else if (m.type === "error") {
      w.error = m.message;
    }
  };

  const workers: RunningWorker[] = groups.map((group, k) => {
    const cmd = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", ...(existsSync(DENO_JSON) ? ["--config", DENO_JSON] : []), WORKER_PATH],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: {
        REFLOW_WORKER: String(k),
        NO_COLOR: "1",
        ...bindings[k].env,
        ...(options.workerEnv ?? {}),
      },
    });
    let child: Deno.ChildProcess;
    try {
      child = cmd.spawn();
    } catch (e) {
      throw new Error(`cannot start generate worker ${k}: ${(e as Error).message}`);
    }
    return {
      index: k,
      group,
      child,
      stdin: child.stdin.getWriter(),
      stderr: collectText(child.stderr),
      error: null,
    };
  });

  const jobs = workers.map(async (w) => {
    const [s, e] = w.group;
    const job: WorkerJob = {
      worker: w.index,
      device: devices[w.index],
      modelDir: config.model_dir,
      imagesDir: paths.images,
      start: s,
      captions: captions.slice(s, e),
      seed,
      bs: config.bs,
      inferSteps: config.infer_steps,
      guidanceScale: config.guidance_scale,
      negativePrompt: config.negative_prompt,
      dtype: config.dtype,
      latentShape: info.latentShape,
      dpmSolver: config.dpm_solver,
    };
    const messages = readMessages(w.child.stdout, (m) => onMessage(w, m));
    await w.stdin.write(new TextEncoder().encode(JSON.stringify(job) + "\n")).catch(() => {});
    const status = await w.child.status;
    await messages.catch(() => {});
    await w.stdin.close().catch(() => {});
    if (!status.success) {
      const tail = (await w.stderr).trim().split("\n")
        .filter((l) => !/XDG_RUNTIME_DIR|^Stack backtrace|^\s+\d+: <unknown>/.test(l))
        .slice(-15).join("\n").trim();
      const why = w.error ?? (tail || `exit code ${status.code}`);
      throw new Error(`generate: worker ${w.index} (pairs ${s}..${e - 1}) failed: ${why}`);
    }
  });

  try {
    // The first failure fails the job; the other workers are stopped.
    await new Promise<void>((resolveAll, reject) => {
      let left = jobs.length;
      for (const j of jobs) {
        j.then(() => {
          if (--left === 0) resolveAll();
        }, reject);
      }
    });
  } catch (e) {
    for (const w of workers) {
      try {
        w.child.kill("SIGTERM");
      } catch { /* already gone */ }
    }
    await Promise.allSettled(jobs);
    (bar as Progress | null)?.stop();
    throw e;
  }
  (bar as Progress | null)?.stop();

  // Every pair must be there now (a worker that skipped a file it should have made is a bug).
  const layout = pairFileLayout(info.latentShape);
  for (let i = range[0]; i < range[1]; i++) {
    if (!(await isCompletePair(pairNpyPath(paths.images, i), layout))) {
      throw new Error(`generate: ${pairNpyPath(paths.images, i)} is missing after the run`);
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  // issue 14: which pairs this rank was given and wrote (manifest/rank{r}.json).
  const made = new Set(written);
  const kept: number[] = [];
  for (let i = range[0]; i < range[1]; i++) if (!made.has(i)) kept.push(i);
  if (shard.worldSize > 1) {
    await writeRankManifest(root, {
      job: "generate",
      rank: shard.rank,
      world_size: shard.worldSize,
      range,
      written: indexRuns(written),
      kept: indexRuns(kept),
      details: {
        workers: groups.map((g, k) => ({
          pairs: g,
          device: devices[k],
          adapter: adapters[k] ?? null,
        })),
        seconds,
      },
    });
  }
  const result: GenerateResult = {
    root,
    total: captions.length,
    skipped: present,
    generated,
    workers: groups.length,
    seconds,
    pairsPerSecond: generated > 0 ? generated / seconds : 0,
  };
  log(
    `generate: done, ${generated} made, ${present} already there, ${seconds.toFixed(1)} s` +
      (generated > 0 ? ` (${result.pairsPerSecond.toFixed(3)} pairs/s)` : ""),
  );
  return result;
}

/** Where the worker module lives (for tools that start workers themselves). */
export const generateWorkerPath: string = WORKER_PATH;
