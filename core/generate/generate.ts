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
import type { ProgressOptions } from "../util/progress.ts";
import {
  describeTeacher,
  inspectTeacher,
  type TeacherInfo,
  teacherSchedulerConfig,
} from "./teacher_info.ts";
import { hasDPMSolverOverrides } from "../schedulers/dpm_solver_config.ts";
import { runSeed } from "./noise.ts";
import { isCompletePair, pairFileLayout } from "./pair_files.ts";
import type { WorkerJob } from "./worker_protocol.ts";
import { awaitWorkers, runWorker, startWorker, WORKER_PATH, WorkerTally } from "./worker_pool.ts";
import { planWorkerBindings } from "../gpu/adapter_binding.ts";
import { indexRuns, type Shard, shardRange, writeRankManifest } from "../distributed/shard.ts";

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

/** What a run works on, settled before anything is written. */
interface RunPlan {
  root: string;
  paths: ReturnType<typeof pairPaths>;
  /** The run seed (config seed + part). */
  seed: number;
  info: TeacherInfo;
  source: { path: string; dataset: string };
  captions: string[];
  index: Record<string, unknown>;
  shard: Shard;
  /** This rank's pairs [start, end). */
  range: [number, number];
}

/**
 * Step 1: the run's folder, model, caption list and index record. The model comes first (cheap:
 * configs only), then the captions: both fail before anything is written.
 */
async function planRun(config: GenerateConfig, shard: Shard): Promise<RunPlan> {
  const root = outputRoot(config.save_dir, config.part);
  const seed = runSeed(config.seed, config.part);
  const info = await inspectTeacher(config.model_dir);
  teacherSchedulerConfig(config.model_dir, info, config.dpm_solver); // config.dpm_solver errors
  const source = captionSource(config);
  const all = config.captions_file
    ? await loadCaptions(source.path)
    : await loadCocoCaptions(source.path);
  if (all.length === 0) throw new Error(`${source.path}: no captions found`);
  const captions = buildCaptionList(all, config.total_nums, seed);
  return {
    root,
    paths: pairPaths(root),
    seed,
    info,
    source,
    captions,
    index: indexRecord(config, info, source),
    shard,
    range: shardRange(captions.length, shard),
  };
}

/**
 * Step 2: whether the folder's data is redone (overwrite, or another record with overwrite set);
 * refuses a folder whose index.json or caption list belongs to other settings. Creates the images
 * folder.
 */
async function checkResume(config: GenerateConfig, plan: RunPlan): Promise<boolean> {
  const { paths } = plan;
  const old = await readIndex(paths.index);
  let overwrite = config.overwrite;
  if (old && fingerprint(old) !== fingerprint(plan.index)) {
    if (!config.overwrite) {
      throw new Error(
        `${paths.index} records other settings (${differingKeys(old, plan.index).join(", ")}); ` +
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
    if (!sameList(existing, plan.captions)) {
      throw new Error(
        `${paths.captions} differs from the caption list built from ${plan.source.path} ` +
          `(did the caption source change?); set overwrite to replace this folder's data`,
      );
    }
  }
  return overwrite;
}

/** Step 3: drops the files to redo, then writes index.json and captions.txt. */
async function writeRunFiles(plan: RunPlan, overwrite: boolean): Promise<void> {
  const { paths, shard } = plan;
  await cleanImages(paths.images, overwrite, plan.range);
  // Ranks of a split run write the same files: each through a name of its own, then renamed.
  const mine = (path: string) => (shard.worldSize > 1 ? `${path}.rank${shard.rank}` : path);
  await writeFileAtomic(
    mine(paths.index),
    new TextEncoder().encode(JSON.stringify(plan.index, null, 2)),
  );
  await writeCaptions(mine(paths.captions), plan.captions);
  if (shard.worldSize > 1) {
    await Deno.rename(mine(paths.index), paths.index);
    await Deno.rename(mine(paths.captions), paths.captions);
  }
}

/** Step 4: this rank's pairs cut into one contiguous group per worker. */
function workerGroups(range: [number, number], workers: number): [number, number][] {
  return divideToGroups(range[1] - range[0], workers)
    .map(([a, b]): [number, number] => [a + range[0], b + range[0]]);
}

/** The job of the worker that makes the pairs of `group`. */
function workerJob(
  config: GenerateConfig,
  plan: RunPlan,
  index: number,
  device: string | number,
  group: [number, number],
): WorkerJob {
  const [s, e] = group;
  return {
    worker: index,
    device,
    modelDir: config.model_dir,
    imagesDir: plan.paths.images,
    start: s,
    captions: plan.captions.slice(s, e),
    seed: plan.seed,
    bs: config.bs,
    inferSteps: config.infer_steps,
    guidanceScale: config.guidance_scale,
    negativePrompt: config.negative_prompt,
    dtype: config.dtype,
    latentShape: plan.info.latentShape,
    dpmSolver: config.dpm_solver,
  };
}

/** Step 5: binds one worker per group to its adapter, runs them all and sums their reports. */
async function runWorkers(
  config: GenerateConfig,
  options: GenerateOptions,
  plan: RunPlan,
  devices: (string | number)[],
  groups: [number, number][],
  log: (line: string) => void,
): Promise<WorkerTally> {
  const bindings = groups.length
    ? await planWorkerBindings(devices.slice(0, groups.length), {
      shareAdapter: options.shareAdapter ?? false,
      what: options.devices ? "--devices" : "config.devices",
    })
    : [];
  const pairs = plan.range[1] - plan.range[0];
  const tally = new WorkerTally(groups.length, pairs, options.progress, log);
  const workers = groups.map((group, k) =>
    startWorker(k, group, { ...bindings[k].env, ...(options.workerEnv ?? {}) })
  );
  const jobs = workers.map((w) =>
    runWorker(
      w,
      workerJob(config, plan, w.index, devices[w.index], w.group),
      (m) => tally.onMessage(w, m),
    )
  );
  try {
    await awaitWorkers(workers, jobs);
  } finally {
    tally.stop();
  }
  return tally;
}

/** Step 6: every pair must be there now (a worker that skipped a file it should make is a bug). */
async function checkPairsComplete(plan: RunPlan): Promise<void> {
  const layout = pairFileLayout(plan.info.latentShape);
  for (let i = plan.range[0]; i < plan.range[1]; i++) {
    if (!(await isCompletePair(pairNpyPath(plan.paths.images, i), layout))) {
      throw new Error(`generate: ${pairNpyPath(plan.paths.images, i)} is missing after the run`);
    }
  }
}

/** Step 7 (split runs): which pairs this rank was given and wrote (manifest/rank{r}.json). */
async function writeManifest(
  plan: RunPlan,
  tally: WorkerTally,
  devices: (string | number)[],
  groups: [number, number][],
  seconds: number,
): Promise<void> {
  const { range, shard } = plan;
  const made = new Set(tally.written);
  const kept: number[] = [];
  for (let i = range[0]; i < range[1]; i++) if (!made.has(i)) kept.push(i);
  await writeRankManifest(plan.root, {
    job: "generate",
    rank: shard.rank,
    world_size: shard.worldSize,
    range,
    written: indexRuns(tally.written),
    kept: indexRuns(kept),
    details: {
      workers: groups.map((g, k) => ({
        pairs: g,
        device: devices[k],
        adapter: tally.adapters[k] ?? null,
      })),
      seconds,
    },
  });
}

/** Runs the generate job: see the module documentation. */
export async function runGenerate(
  config: GenerateConfig,
  options: GenerateOptions = {},
): Promise<GenerateResult> {
  const log = options.log ?? ((line: string) => console.log(line));
  checkConfig(config);
  const t0 = performance.now();
  const plan = await planRun(config, options.shard ?? { rank: 0, worldSize: 1 });
  const { range, shard } = plan;
  const overwrite = await checkResume(config, plan);
  await writeRunFiles(plan, overwrite);

  const devices = options.devices ?? config.devices;
  const groups = workerGroups(range, devices.length);
  log(
    `generate: ${plan.captions.length} pairs of [2, ${plan.info.latentShape.join(", ")}] into ` +
      `${plan.root} with ${groups.length} worker(s), ${plan.info.kind} teacher ${config.model_dir}` +
      (shard.worldSize > 1
        ? ` (rank ${shard.rank} of ${shard.worldSize}: pairs ${range[0]}..${range[1] - 1})`
        : ""),
  );
  const tally = await runWorkers(config, options, plan, devices, groups, log);
  await checkPairsComplete(plan);
  const seconds = (performance.now() - t0) / 1000;
  if (shard.worldSize > 1) await writeManifest(plan, tally, devices, groups, seconds);

  const { generated, present } = tally;
  const result: GenerateResult = {
    root: plan.root,
    total: plan.captions.length,
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
