/**
 * A small logger for the jobs: every line timestamped and written both to stderr and to the
 * run's log file (`exp.log`, `sample.log`), as the original does with loguru. File writes are
 * synchronous appends, so a crash leaves everything logged so far on disk.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * const workdir = await Deno.makeTempDir(); // a run's folder, e.g. logs/run1
 * const log = createLogger({ file: `${workdir}/exp.log` });
 * log.info(`step 20 | training_loss 0.12345`);
 * log.close();
 * assert.match(await Deno.readTextFile(`${workdir}/exp.log`), /INFO.*training_loss 0\.12345/);
 * await Deno.remove(workdir, { recursive: true });
 * ```
 *
 * @module
 */

import { closeSync, mkdirSync, openSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import process from "node:process";

/** Severity, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  /** Log file to append to (its folder is created); more can be added with `addFile`. */
  file?: string;
  /** Lowest level written (default "info"). */
  level?: LogLevel;
  /** Echo to the console: true (stderr, the default), false, or a sink of text. */
  console?: boolean | { write(s: string): unknown };
  /** Clock (tests pin it). */
  now?: () => Date;
}

/** A logger bound to its files. */
export interface Logger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
  /** Also write to this file from now on (loguru's `logger.add`). */
  addFile(path: string): void;
  /** Close the files; later lines go to the console only. */
  close(): void;
}

/** "2024-05-01 12:34:56.789" in local time. */
export function formatTimestamp(d: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${
    p(d.getMinutes())
  }:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** Create a logger. */
export function createLogger(opts: LoggerOptions = {}): Logger {
  const now = opts.now ?? (() => new Date());
  const min = RANK[opts.level ?? "info"];
  if (min === undefined) throw new Error(`logger: unknown level "${opts.level}"`);
  const sink = opts.console === false
    ? null
    : opts.console === true || opts.console === undefined
    ? process.stderr
    : opts.console;
  const fds: number[] = [];

  const addFile = (path: string) => {
    try {
      mkdirSync(dirname(path), { recursive: true });
      fds.push(openSync(path, "a"));
    } catch (e) {
      throw new Error(`log file ${path}: ${(e as Error).message}`);
    }
  };
  if (opts.file) addFile(opts.file);

  const write = (level: LogLevel, msg: string) => {
    if (RANK[level] < min) return;
    const line = `${formatTimestamp(now())} | ${level.toUpperCase().padEnd(5)} | ${msg}\n`;
    sink?.write(line);
    const bytes = new TextEncoder().encode(line);
    for (const fd of fds) {
      for (let done = 0; done < bytes.length;) done += writeSync(fd, bytes, done);
    }
  };

  return {
    debug: (m) => write("debug", m),
    info: (m) => write("info", m),
    warn: (m) => write("warn", m),
    error: (m) => write("error", m),
    addFile,
    close() {
      for (const fd of fds.splice(0)) closeSync(fd);
    },
  };
}
