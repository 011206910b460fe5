/**
 * Starting worker processes: rank 0 (the launching process) listens on a loopback port and starts
 * ranks 1..N-1 as `deno run -A <script> <args> --worker --rank r --world-size N --port P`, each
 * with its own WebGPU device. Deno cannot pick an adapter, so each worker is confined to its GPU
 * through its environment (`env`: the binding of core/gpu/adapter_binding.ts).
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import type { GradientExchange } from "./allreduce.ts";
import { listenHub } from "./allreduce.ts";

/** Running workers and rank 0's exchange with them. */
export interface Workers {
  exchange: GradientExchange;
  /** Waits for every worker to exit; throws naming the ranks that failed. */
  wait(): Promise<void>;
  /** Ends the worker processes (by their ids). */
  kill(): void;
}

/** Options of {@link startWorkers}. */
export interface StartWorkersOptions {
  /** The script the workers run (a path or file URL). */
  script: string | URL;
  /** Arguments given to every worker before the worker flags. */
  args: string[];
  worldSize: number;
  /** Extra environment per rank (its adapter binding, see core/gpu/adapter_binding.ts). */
  env?: (rank: number) => Record<string, string>;
  /** Seconds to wait for all workers to connect (default 300). */
  connectTimeoutSecs?: number;
}

/** Starts ranks 1..N-1 and waits until they are connected to this process (rank 0). */
export async function startWorkers(opts: StartWorkersOptions): Promise<Workers> {
  const hub = listenHub(opts.worldSize);
  const script = opts.script instanceof URL ? fileURLToPath(opts.script) : opts.script;
  const children: Deno.ChildProcess[] = [];
  for (let r = 1; r < opts.worldSize; r++) {
    const cmd = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        script,
        ...opts.args,
        "--worker",
        "--rank",
        String(r),
        "--world-size",
        String(opts.worldSize),
        "--port",
        String(hub.port),
      ],
      env: opts.env?.(r),
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
    });
    children.push(cmd.spawn());
  }
  let exchange: GradientExchange;
  try {
    exchange = await Promise.race([
      hub.accept((opts.connectTimeoutSecs ?? 300) * 1000),
      ...children.map((c, i) =>
        c.status.then((s) => {
          throw new Error(`worker ${i + 1} exited with code ${s.code} before connecting`);
        })
      ),
    ]);
  } catch (e) {
    hub.close();
    for (const c of children) {
      try {
        c.kill("SIGTERM");
      } catch { /* already gone */ }
    }
    throw e;
  }
  return {
    exchange,
    async wait() {
      const st = await Promise.all(children.map((c) => c.status));
      const bad = st.map((s, i) => [i + 1, s.code] as const).filter(([, c]) => c !== 0);
      if (bad.length) {
        throw new Error(
          `workers failed: ${bad.map(([r, c]) => `rank ${r} (code ${c})`).join(", ")}`,
        );
      }
    },
    kill() {
      for (const c of children) {
        try {
          c.kill("SIGTERM");
        } catch { /* already gone */ }
      }
    },
  };
}
