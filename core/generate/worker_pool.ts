/**
 * The generate job's worker processes: one `generate_worker.ts` process per group of pairs, each
 * with the environment that binds it to its adapter, given its job as one JSON line on stdin and
 * heard through the `@@reflow` lines of its stdout (worker_protocol.ts). The first failure stops
 * the other workers and fails the run.
 *
 * @module
 */

import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createProgress, type Progress, type ProgressOptions } from "../util/progress.ts";
import { MESSAGE_PREFIX, type WorkerJob, type WorkerMessage } from "./worker_protocol.ts";

/** The worker module. */
export const WORKER_PATH: string = fileURLToPath(
  new URL("./generate_worker.ts", import.meta.url),
);
const DENO_JSON = fileURLToPath(new URL("../../deno.json", import.meta.url));

/** A started worker process and what it was given. */
export interface RunningWorker {
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

/**
 * What the workers reported, summed as their messages come: pairs already there, pairs made (and
 * which), each worker's adapter; the progress bar starts once every worker has scanned its files.
 */
export class WorkerTally {
  present = 0;
  generated = 0;
  readonly written: number[] = [];
  readonly adapters: string[] = [];
  private scanned = 0;
  private bar: Progress | null = null;

  constructor(
    private readonly workers: number,
    private readonly pairs: number,
    private readonly progress: Partial<ProgressOptions> | false | undefined,
    private readonly log: (line: string) => void,
  ) {}

  onMessage(w: RunningWorker, m: WorkerMessage): void {
    if (m.type === "scan") {
      this.present += m.present;
      if (++this.scanned === this.workers && this.progress !== false) {
        this.bar = createProgress({
          total: this.pairs,
          label: "Pairs",
          unit: "pair",
          start: this.present,
          ...(this.progress ?? {}),
        });
        this.bar.update(this.present + this.generated);
      }
    } else if (m.type === "adapter") {
      this.adapters[w.index] = m.text;
      this.log(`generate: worker ${w.index} (pairs ${w.group[0]}..${w.group[1] - 1}): ${m.text}`);
    } else if (m.type === "done") {
      this.written.push(...(m.indices ?? []));
      this.generated += m.count;
      this.bar?.update(this.present + this.generated);
    } else if (m.type === "error") {
      w.error = m.message;
    }
  }

  /** Ends the progress display. */
  stop(): void {
    this.bar?.stop();
  }
}

/** Starts worker `index` for the pairs of `group`, with `env` over the worker defaults. */
export function startWorker(
  index: number,
  group: [number, number],
  env: Record<string, string>,
): RunningWorker {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", ...(existsSync(DENO_JSON) ? ["--config", DENO_JSON] : []), WORKER_PATH],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { REFLOW_WORKER: String(index), NO_COLOR: "1", ...env },
  });
  let child: Deno.ChildProcess;
  try {
    child = cmd.spawn();
  } catch (e) {
    throw new Error(`cannot start generate worker ${index}: ${(e as Error).message}`);
  }
  return {
    index,
    group,
    child,
    stdin: child.stdin.getWriter(),
    stderr: collectText(child.stderr),
    error: null,
  };
}

/**
 * Sends `job` to a started worker, passes its messages on and waits for it to exit; a failed
 * worker's error (its own message, else the end of its stderr) fails the promise.
 */
export async function runWorker(
  w: RunningWorker,
  job: WorkerJob,
  onMessage: (m: WorkerMessage) => void,
): Promise<void> {
  const [s, e] = w.group;
  const messages = readMessages(w.child.stdout, onMessage);
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
}

/**
 * Waits for every worker's job. The first failure fails the run: the other workers are stopped
 * and waited for before it is thrown.
 */
export async function awaitWorkers(
  workers: readonly RunningWorker[],
  jobs: readonly Promise<void>[],
): Promise<void> {
  try {
    await new Promise<void>((resolveAll, reject) => {
      let left = jobs.length;
      // A rank of a split run can be given no pairs, and so no workers.
      if (left === 0) resolveAll();
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
    throw e;
  }
}
