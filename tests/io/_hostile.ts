/** Builders of hostile inputs shared by the regression tests and the fuzz test. */

import { constants, deflateRawSync } from "node:zlib";

/**
 * A raw deflate stream that inflates to `mib` MiB of zeros, about 1 KiB per MiB: one sync-flushed
 * MiB repeated (each copy is self-contained), then an empty final block.
 */
export function zeroDeflate(mib: number): Uint8Array {
  const chunk = deflateRawSync(new Uint8Array(1 << 20), {
    level: 9,
    finishFlush: constants.Z_SYNC_FLUSH,
  });
  const out = new Uint8Array(chunk.length * mib + 2);
  for (let i = 0; i < mib; i++) out.set(chunk, i * chunk.length);
  out.set([0x03, 0x00], chunk.length * mib); // final fixed-Huffman block holding only end-of-block
  return out;
}

/** Bytes from numbers and latin-1 strings. */
export function bytes(...parts: (number[] | Uint8Array | string)[]): Uint8Array {
  const arrays = parts.map((p) =>
    typeof p === "string" ? Uint8Array.from(p, (c) => c.charCodeAt(0)) : Uint8Array.from(p)
  );
  const out = new Uint8Array(arrays.reduce((s, a) => s + a.length, 0));
  let at = 0;
  for (const a of arrays) {
    out.set(a, at);
    at += a.length;
  }
  return out;
}

/** `pattern` repeated `n` times. */
export function repeat(pattern: number[], n: number): Uint8Array {
  const out = new Uint8Array(pattern.length * n);
  for (let i = 0; i < n; i++) out.set(pattern, i * pattern.length);
  return out;
}

/** Little-endian u32 / i32 bytes. */
export function le32(n: number): number[] {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n >>> 0, true);
  return [...b];
}

/** Result of {@link runIsolated}: what the code printed plus the child's peak resident memory. */
export interface IsolatedRun {
  /** The JSON the child printed last. */
  // deno-lint-ignore no-explicit-any
  result: any;
  /** Peak resident set of the child process (VmHWM), in MiB. */
  peakMiB: number;
  /** Wall time of the whole child, in ms. */
  ms: number;
}

/**
 * Runs `body` (the inside of an async function that returns a JSON-able value) in a fresh Deno
 * process and reads its peak memory from /proc, so one test's allocations are measured alone.
 */
export async function runIsolated(imports: string, body: string): Promise<IsolatedRun> {
  const code = `${imports}
const result = await (async () => { ${body} })();
const status = Deno.readTextFileSync("/proc/self/status");
const hwm = Number(/VmHWM:\\s+(\\d+)/.exec(status)?.[1] ?? "0") / 1024;
console.log(JSON.stringify({ result, peakMiB: hwm }));`;
  const t0 = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-check", code],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const ms = performance.now() - t0;
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) {
    throw new Error(`isolated run failed: ${new TextDecoder().decode(out.stderr)}\n${text}`);
  }
  const last = JSON.parse(text.split("\n").pop()!);
  return { result: last.result, peakMiB: last.peakMiB, ms };
}

/** file:// URL of a module of this repository, for {@link runIsolated}'s imports. */
export function moduleUrl(relative: string): string {
  return new URL(`../../${relative}`, import.meta.url).href;
}
