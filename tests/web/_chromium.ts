/**
 * Headless Chromium driven over its DevTools protocol (a WebSocket; no puppeteer needed): launch
 * with a fresh profile, evaluate script in the page, take screenshots. For the web page's tests
 * and its README screenshot.
 *
 * @module
 */

import { join } from "node:path";

/** Flags that give headless Chromium a WebGPU adapter without a GPU (SwiftShader). */
export const WEBGPU_FLAGS = ["--enable-unsafe-webgpu"];

/** The Chromium binary: $CHROMIUM, else chromium / chromium-browser / google-chrome on PATH. */
export async function findChromium(): Promise<string | null> {
  const env = Deno.env.get("CHROMIUM");
  const names = env ? [env] : ["chromium", "chromium-browser", "google-chrome"];
  for (const n of names) {
    if (n.includes("/")) {
      if (await Deno.stat(n).then((s) => s.isFile, () => false)) return n;
      continue;
    }
    for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
      if (!dir) continue;
      const p = join(dir, n);
      if (await Deno.stat(p).then((s) => s.isFile, () => false)) return p;
    }
  }
  return null;
}

// deno-lint-ignore no-explicit-any
type Json = any;

/** One DevTools protocol connection (to a page target). */
export class Cdp {
  #id = 0;
  #waits = new Map<number, { ok: (v: Json) => void; fail: (e: Error) => void }>();
  #closed: Error | null = null;

  private constructor(readonly ws: WebSocket) {
    ws.onmessage = (e) => {
      const m = JSON.parse(String(e.data));
      const w = m.id !== undefined ? this.#waits.get(m.id) : undefined;
      if (!w) return;
      this.#waits.delete(m.id);
      if (m.error) w.fail(new Error(`DevTools: ${m.error.message} (${m.error.code})`));
      else w.ok(m.result);
    };
    ws.onclose = () => {
      this.#closed = new Error("DevTools: the connection closed");
      for (const w of this.#waits.values()) w.fail(this.#closed);
      this.#waits.clear();
    };
  }

  static async connect(url: string): Promise<Cdp> {
    const ws = new WebSocket(url);
    await new Promise<void>((ok, fail) => {
      ws.onopen = () => ok();
      ws.onerror = (e) => fail(new Error(`DevTools: cannot connect to ${url}: ${e}`));
    });
    return new Cdp(ws);
  }

  /** Sends a protocol command and waits for its result. */
  send(method: string, params: Record<string, unknown> = {}): Promise<Json> {
    if (this.#closed) return Promise.reject(this.#closed);
    const id = ++this.#id;
    return new Promise((ok, fail) => {
      this.#waits.set(id, { ok, fail });
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Evaluates `expression` in the page (awaiting a promise) and returns its value as JSON. */
  async evaluate<T = Json>(expression: string): Promise<T> {
    const r = await this.send("Runtime.evaluate", {
      expression,
      awaitPromise: true,
      returnByValue: true,
    });
    if (r.exceptionDetails) {
      const d = r.exceptionDetails;
      throw new Error(`page: ${d.exception?.description ?? d.text}`);
    }
    return r.result.value as T;
  }

  close(): void {
    this.ws.close();
  }
}

/** A running headless Chromium showing one page. */
export class Browser {
  private constructor(
    private readonly proc: Deno.ChildProcess,
    private readonly profile: string,
    readonly page: Cdp,
    /** Chromium's stderr so far (its last 8 kB), for error messages. */
    readonly log: { text: string },
  ) {}

  /** Starts Chromium on `url` with `flags` (plus headless, a fresh profile and DevTools). */
  static async launch(exe: string, url: string, flags: readonly string[] = []): Promise<Browser> {
    const profile = await Deno.makeTempDir({ prefix: "reflow-chromium-" });
    const proc = new Deno.Command(exe, {
      args: [
        "--headless=new",
        // Root in a container has no user namespace for the sandbox.
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--remote-debugging-port=0",
        `--user-data-dir=${profile}`,
        "--window-size=900,1000",
        ...flags,
        url,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const log = { text: "" };
    let found!: (ws: string) => void;
    const ws = new Promise<string>((r) => found = r);
    // Read stderr to the end (a full pipe would stall Chromium), keeping its tail.
    const drained = (async () => {
      for await (const chunk of proc.stderr.pipeThrough(new TextDecoderStream())) {
        log.text = (log.text + chunk).slice(-8192);
        const m = /DevTools listening on (ws:\/\/\S+)/.exec(log.text);
        if (m) found(m[1]);
      }
    })();
    const timeout = new Promise<null>((r) => setTimeout(() => r(null), 60_000));
    const exited = proc.status.then(() => null);
    const browserWs = await Promise.race([ws, timeout, exited]);
    try {
      if (!browserWs) {
        throw new Error(`${exe} did not start its DevTools server:\n${log.text.slice(-2000)}`);
      }
      const port = new URL(browserWs).port;
      let target: Json = null;
      for (let i = 0; i < 100 && !target; i++) {
        const list = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
        target = list.find((t: Json) => t.type === "page");
        if (!target) await new Promise((r) => setTimeout(r, 100));
      }
      if (!target) throw new Error(`${exe}: no page target`);
      const page = await Cdp.connect(target.webSocketDebuggerUrl);
      drained.catch(() => {});
      return new Browser(proc, profile, page, log);
    } catch (e) {
      try {
        proc.kill("SIGKILL");
      } catch { /* already gone */ }
      await proc.status;
      await drained.catch(() => {});
      await Deno.remove(profile, { recursive: true }).catch(() => {});
      throw e;
    }
  }

  /**
   * Waits until `expression` evaluates to a value `done` accepts (polled), tolerating the page's
   * reloads; throws with the last value after `ms` milliseconds.
   */
  async waitFor<T>(expression: string, done: (v: T) => boolean, ms: number): Promise<T> {
    const end = Date.now() + ms;
    let last: T | undefined;
    let lastError = "";
    while (Date.now() < end) {
      try {
        last = await this.page.evaluate<T>(expression);
        if (done(last)) return last;
      } catch (e) {
        lastError = (e as Error).message; // e.g. the context was replaced by a navigation
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(
      `timed out after ${ms} ms waiting for ${expression}: last value ${JSON.stringify(last)}` +
        (lastError ? ` (last error: ${lastError})` : ""),
    );
  }

  /** A PNG screenshot of the viewport. */
  async screenshot(): Promise<Uint8Array> {
    const r = await this.page.send("Page.captureScreenshot", { format: "png" });
    return Uint8Array.from(atob(r.data), (c) => c.charCodeAt(0));
  }

  /** Ends Chromium and removes its profile. */
  async close(): Promise<void> {
    this.page.close();
    try {
      this.proc.kill("SIGTERM");
    } catch { /* already gone */ }
    const t = setTimeout(() => {
      try {
        this.proc.kill("SIGKILL");
      } catch { /* gone */ }
    }, 5000);
    await this.proc.status;
    clearTimeout(t);
    await Deno.remove(this.profile, { recursive: true }).catch(() => {});
  }
}
