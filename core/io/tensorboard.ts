/**
 * TensorBoard event files without TensorFlow: TFRecord framing around hand-encoded `Event`
 * protobufs (tensorflow/core/util/event.proto), scalars only — what the train job logs.
 *
 * Record: u64 length (LE) | u32 masked crc32c(length bytes) | data | u32 masked crc32c(data).
 * Event: wall_time (1, double), step (2, int64), file_version (3, string), summary (5, Summary);
 * Summary.value (1, repeated Value); Value.tag (1, string), Value.simple_value (2, float).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * const workdir = await Deno.makeTempDir(); // a run's folder, e.g. logs/run1
 * const tb = new EventWriter(`${workdir}/tensorboard`);
 * tb.addScalar("training_loss", 0.25, 20);
 * tb.close();
 * const [version, scalar] = readEvents(tb.path); // CRCs checked
 * assert.equal(version.fileVersion, "brain.Event:2");
 * assert.deepEqual(scalar.values, [{ tag: "training_loss", simpleValue: 0.25 }]);
 * assert.equal(scalar.step, 20);
 * await Deno.remove(workdir, { recursive: true });
 * ```
 *
 * @module
 */

import { closeSync, mkdirSync, openSync, readFileSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import crc32cLib from "fast-crc32c";

const crcImpl = crc32cLib as unknown as { calculate(buf: Uint8Array, initial?: number): number };

/** CRC-32C (Castagnoli) of `data`. */
export function crc32c(data: Uint8Array): number {
  return crcImpl.calculate(data) >>> 0;
}

/** TFRecord's masked CRC: rotate right by 15 and add 0xa282ead8 (mod 2^32). */
export function maskedCrc32c(data: Uint8Array): number {
  const c = crc32c(data);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** Frame one record as TFRecord does. */
export function frameRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(16 + data.length);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(data.length), true);
  view.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  view.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
}

/** Minimal protobuf writer for the few field kinds an Event needs. */
class ProtoWriter {
  private parts: number[] = [];

  private varint(v: bigint): void {
    // int64 negatives are written as their 64-bit two's complement (ten bytes).
    let x = BigInt.asUintN(64, v);
    while (x >= 0x80n) {
      this.parts.push(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    this.parts.push(Number(x));
  }

  private key(field: number, wire: number): void {
    this.varint(BigInt((field << 3) | wire));
  }

  double(field: number, v: number): this {
    this.key(field, 1);
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, v, true);
    this.parts.push(...b);
    return this;
  }

  float(field: number, v: number): this {
    this.key(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.parts.push(...b);
    return this;
  }

  int64(field: number, v: number | bigint): this {
    this.key(field, 0);
    this.varint(BigInt(v));
    return this;
  }

  bytes(field: number, b: Uint8Array): this {
    this.key(field, 2);
    this.varint(BigInt(b.length));
    for (const x of b) this.parts.push(x);
    return this;
  }

  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

/** One scalar of a summary. */
export interface ScalarValue {
  tag: string;
  simpleValue: number;
}

/** A decoded Event (fields this module writes; others are skipped). */
export interface TbEvent {
  wallTime: number;
  step: number;
  fileVersion?: string;
  values?: ScalarValue[];
}

/** Encode an Event message. */
export function encodeEvent(ev: TbEvent): Uint8Array {
  const w = new ProtoWriter().double(1, ev.wallTime);
  if (ev.step !== 0) w.int64(2, ev.step); // proto3 leaves default values out
  if (ev.fileVersion !== undefined) w.string(3, ev.fileVersion);
  if (ev.values) {
    const summary = new ProtoWriter();
    for (const v of ev.values) {
      summary.bytes(1, new ProtoWriter().string(1, v.tag).float(2, v.simpleValue).finish());
    }
    w.bytes(5, summary.finish());
  }
  return w.finish();
}

/** Options of {@link EventWriter}. */
export interface EventWriterOptions {
  /** Extra text appended to the file name (e.g. a worker rank) to keep names unique. */
  filenameSuffix?: string;
  /** Flush on the next add once this many seconds passed since the last flush (default 10). */
  flushSecs?: number;
  /** Flush once this many records wait (default 50). */
  maxQueue?: number;
  /** Clock in seconds since the epoch (tests pin it). */
  now?: () => number;
}

/**
 * Writes `events.out.tfevents.<unix time>.<hostname>` in `logdir`, beginning with the
 * `brain.Event:2` version record, then scalars as they are added.
 */
export class EventWriter {
  /** The event file's path. */
  readonly path: string;
  private fd: number | null;
  private queue: Uint8Array[] = [];
  private lastFlush: number;
  private readonly now: () => number;
  private readonly flushSecs: number;
  private readonly maxQueue: number;

  constructor(logdir: string, opts: EventWriterOptions = {}) {
    this.now = opts.now ?? (() => Date.now() / 1000);
    this.flushSecs = opts.flushSecs ?? 10;
    this.maxQueue = opts.maxQueue ?? 50;
    const t = this.now();
    mkdirSync(logdir, { recursive: true });
    this.path = join(
      logdir,
      `events.out.tfevents.${Math.floor(t)}.${hostname()}${opts.filenameSuffix ?? ""}`,
    );
    try {
      this.fd = openSync(this.path, "a");
    } catch (e) {
      throw new Error(`TensorBoard event file ${this.path}: ${(e as Error).message}`);
    }
    this.lastFlush = t;
    this.queue.push(
      frameRecord(encodeEvent({ wallTime: t, step: 0, fileVersion: "brain.Event:2" })),
    );
    this.flush();
  }

  /** Queue one scalar (written as a float32 `simple_value`). */
  addScalar(tag: string, value: number, step: number, wallTime?: number): void {
    if (this.fd === null) throw new Error(`TensorBoard event file ${this.path} is closed`);
    if (!Number.isInteger(step)) {
      throw new Error(`addScalar ${tag}: step ${step} is not an integer`);
    }
    const t = wallTime ?? this.now();
    this.queue.push(
      frameRecord(encodeEvent({ wallTime: t, step, values: [{ tag, simpleValue: value }] })),
    );
    if (this.queue.length >= this.maxQueue || t - this.lastFlush >= this.flushSecs) this.flush();
  }

  /** Write all queued records to the file. */
  flush(): void {
    if (this.fd === null || this.queue.length === 0) return;
    const total = this.queue.reduce((n, r) => n + r.length, 0);
    const buf = new Uint8Array(total);
    let off = 0;
    for (const r of this.queue) buf.set(r, off), off += r.length;
    this.queue = [];
    for (let done = 0; done < buf.length;) done += writeSync(this.fd, buf, done);
    this.lastFlush = this.now();
  }

  /** Flush and close the file; later adds are errors. */
  close(): void {
    if (this.fd === null) return;
    this.flush();
    closeSync(this.fd);
    this.fd = null;
  }
}

/** Protobuf reader over one message's bytes. */
class ProtoReader {
  pos = 0;
  constructor(private buf: Uint8Array, private what: string) {}

  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  varint(): bigint {
    let x = 0n, shift = 0n;
    for (;;) {
      if (this.pos >= this.buf.length) throw new Error(`${this.what}: truncated varint`);
      const b = this.buf[this.pos++];
      x |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return x;
      shift += 7n;
    }
  }

  take(n: number): Uint8Array {
    if (this.pos + n > this.buf.length) throw new Error(`${this.what}: truncated field`);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** Next (field, wire type). */
  key(): [number, number] {
    const k = Number(this.varint());
    return [k >>> 3, k & 7];
  }

  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.take(8);
    else if (wire === 2) this.take(Number(this.varint()));
    else if (wire === 5) this.take(4);
    else throw new Error(`${this.what}: unsupported wire type ${wire}`);
  }
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** Decode an Event message (unknown fields are skipped). */
export function decodeEvent(data: Uint8Array, what = "event"): TbEvent {
  const r = new ProtoReader(data, what);
  const ev: TbEvent = { wallTime: 0, step: 0 };
  while (!r.done) {
    const [field, wire] = r.key();
    if (field === 1 && wire === 1) ev.wallTime = view(r.take(8)).getFloat64(0, true);
    else if (field === 2 && wire === 0) ev.step = Number(BigInt.asIntN(64, r.varint()));
    else if (field === 3 && wire === 2) {
      ev.fileVersion = new TextDecoder().decode(r.take(Number(r.varint())));
    } else if (field === 5 && wire === 2) {
      const s = new ProtoReader(r.take(Number(r.varint())), what + " summary");
      ev.values ??= [];
      while (!s.done) {
        const [sf, sw] = s.key();
        if (sf !== 1 || sw !== 2) {
          s.skip(sw);
          continue;
        }
        const v = new ProtoReader(s.take(Number(s.varint())), what + " value");
        const val: ScalarValue = { tag: "", simpleValue: NaN };
        while (!v.done) {
          const [vf, vw] = v.key();
          if (vf === 1 && vw === 2) val.tag = new TextDecoder().decode(v.take(Number(v.varint())));
          else if (vf === 2 && vw === 5) val.simpleValue = view(v.take(4)).getFloat32(0, true);
          else v.skip(vw);
        }
        ev.values.push(val);
      }
    } else r.skip(wire);
  }
  return ev;
}

/** Split a TFRecord file into its records, checking both CRCs of each. */
export function readRecords(bytes: Uint8Array, what = "records"): Uint8Array[] {
  const out: Uint8Array[] = [];
  let off = 0;
  while (off < bytes.length) {
    if (off + 12 > bytes.length) throw new Error(`${what}: truncated record header at ${off}`);
    const len = Number(view(bytes.subarray(off, off + 8)).getBigUint64(0, true));
    const lenCrc = view(bytes.subarray(off + 8, off + 12)).getUint32(0, true);
    if (lenCrc !== maskedCrc32c(bytes.subarray(off, off + 8))) {
      throw new Error(`${what}: length CRC mismatch at byte ${off}`);
    }
    if (off + 16 + len > bytes.length) throw new Error(`${what}: truncated record at ${off}`);
    const data = bytes.subarray(off + 12, off + 12 + len);
    const dataCrc = view(bytes.subarray(off + 12 + len, off + 16 + len)).getUint32(0, true);
    if (dataCrc !== maskedCrc32c(data)) {
      throw new Error(`${what}: data CRC mismatch at byte ${off}`);
    }
    out.push(data);
    off += 16 + len;
  }
  return out;
}

/** Read an event file back: every record's CRCs checked, every Event decoded. */
export function readEvents(path: string): TbEvent[] {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new Error(`TensorBoard event file ${path}: ${(e as Error).message}`);
  }
  return readRecords(bytes, path).map((d, i) => decodeEvent(d, `${path} record ${i}`));
}
