/**
 * Progress display for long loops (training steps, generated pairs, samples): a cli-progress bar
 * with rate, ETA and custom fields (e.g. the loss) on a terminal, and plain periodic log lines
 * where the output is not a terminal (CI, `nohup`, redirected logs), so logs stay readable.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * // Without `tty` and `log` it draws on stderr; here it writes log lines into an array.
 * const lines: string[] = [];
 * const log = (line: string) => lines.push(line);
 * const bar = createProgress({ total: 1000, label: "Steps", start: 0, tty: false, log });
 * for (let step = 0; step < 1000; step++) bar.increment(1, { loss: 0.01 });
 * bar.stop();
 * assert.match(lines.at(-1)!, /^Steps 1000\/1000 \(100\.0%\) .* loss=0\.0100$/);
 * ```
 *
 * @module
 */

import process from "node:process";
import cliProgress from "cli-progress";

/** A stream the bar can draw on (process.stderr, or a test double). */
export interface ProgressStream {
  write(s: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

/** Options of {@link createProgress}. */
export interface ProgressOptions {
  /** Number of items when done. */
  total: number;
  /** Name shown first ("Steps", "Samples"). */
  label?: string;
  /** Unit of the rate (default "it", shown as "it/s"). */
  unit?: string;
  /** Starting value, e.g. the resumed step; the rate counts only items done here. */
  start?: number;
  /** Where the bar draws (default process.stderr, as tqdm). */
  stream?: ProgressStream;
  /** Draw a bar (true) or write log lines (false); default: whether the stream is a terminal. */
  tty?: boolean;
  /** Without a terminal: seconds between log lines (default 30); the first and last always log. */
  logIntervalSecs?: number;
  /** Without a terminal: where the lines go (default: written to the stream). */
  log?: (line: string) => void;
  /** Clock in milliseconds (tests pin it). */
  now?: () => number;
}

/** Custom fields shown after the rate, e.g. `{ loss: 0.0123 }`. */
export type ProgressFields = Record<string, number | string>;

/** A running progress display. */
export interface Progress {
  /** Set the current value (and fields). */
  update(value: number, fields?: ProgressFields): void;
  /** Add `delta` items (default 1). */
  increment(delta?: number, fields?: ProgressFields): void;
  /** Finish: redraw once more and release the terminal. */
  stop(): void;
  /** The current value. */
  readonly value: number;
}

/** Seconds as h:mm:ss (or m:ss below an hour); "?" when unknown. */
export function formatDuration(secs: number): string {
  if (!Number.isFinite(secs) || secs < 0) return "?";
  const s = Math.round(secs);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const two = (n: number) => String(n).padStart(2, "0");
  return h > 0 ? `${h}:${two(m)}:${two(r)}` : `${m}:${two(r)}`;
}

function formatField(v: number | string): string {
  if (typeof v === "string") return v;
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 1e-3 && Math.abs(v) < 1e5 ? v.toFixed(4) : v.toExponential(3);
}

/** "loss=0.0123 lr=1.000e-4" */
export function formatFields(fields: ProgressFields): string {
  return Object.entries(fields).map(([k, v]) => `${k}=${formatField(v)}`).join(" ");
}

function formatRate(rate: number, unit: string): string {
  if (!Number.isFinite(rate) || rate <= 0) return `? ${unit}/s`;
  // Slow loops (big UNets) read better as seconds per item, as tqdm does.
  return rate >= 1 ? `${rate.toFixed(2)} ${unit}/s` : `${(1 / rate).toFixed(2)} s/${unit}`;
}

/** Start a progress display. */
export function createProgress(opts: ProgressOptions): Progress {
  if (!(opts.total >= 0)) throw new Error(`progress: bad total ${opts.total}`);
  const now = opts.now ?? (() => performance.now());
  const stream: ProgressStream = opts.stream ?? process.stderr;
  const tty = opts.tty ?? stream.isTTY === true;
  const label = opts.label ?? "Progress", unit = opts.unit ?? "it";
  const start = opts.start ?? 0;
  const t0 = now();
  let value = start;
  let fields: ProgressFields = {};

  const stats = () => {
    const secs = (now() - t0) / 1000;
    const rate = secs > 0 ? (value - start) / secs : NaN;
    const eta = rate > 0 ? (opts.total - value) / rate : NaN;
    return { secs, rate, eta };
  };

  if (tty) {
    const bar = new cliProgress.SingleBar({
      stream,
      format:
        `${label} |{bar}| {value}/{total} {percentage}% | {rate} | {elapsed} < {etaText} {fieldText}`,
      hideCursor: true,
      barsize: 30,
    }, cliProgress.Presets.shades_classic);
    const payload = () => {
      const s = stats();
      return {
        rate: formatRate(s.rate, unit),
        elapsed: formatDuration(s.secs),
        etaText: formatDuration(s.eta),
        fieldText: formatFields(fields),
      };
    };
    bar.start(opts.total, start, payload());
    return {
      update(v, f) {
        value = v;
        if (f) fields = { ...fields, ...f };
        bar.update(v, payload());
      },
      increment(d = 1, f) {
        this.update(value + d, f);
      },
      stop() {
        bar.update(value, payload());
        bar.stop();
      },
      get value() {
        return value;
      },
    };
  }

  const log = opts.log ?? ((line: string) => stream.write(line + "\n"));
  const interval = (opts.logIntervalSecs ?? 30) * 1000;
  let lastLog = -Infinity;
  let loggedValue = NaN;
  let stopped = false;
  const line = () => {
    const s = stats();
    const pct = opts.total > 0 ? ((100 * value) / opts.total).toFixed(1) : "100.0";
    const extra = formatFields(fields);
    return `${label} ${value}/${opts.total} (${pct}%) ${formatRate(s.rate, unit)} elapsed ${
      formatDuration(s.secs)
    } ETA ${formatDuration(s.eta)}${extra ? " " + extra : ""}`;
  };
  const maybeLog = (force: boolean) => {
    const t = now();
    if (force || t - lastLog >= interval) {
      log(line());
      lastLog = t;
      loggedValue = value;
    }
  };
  return {
    update(v, f) {
      value = v;
      if (f) fields = { ...fields, ...f };
      maybeLog(lastLog === -Infinity || value >= opts.total);
    },
    increment(d = 1, f) {
      this.update(value + d, f);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      // the final line, unless the last update already wrote it
      if (loggedValue !== value) log(line());
    },
    get value() {
      return value;
    },
  };
}
