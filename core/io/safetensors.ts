/**
 * The safetensors weight format: an 8-byte little-endian header length, a JSON header naming each
 * tensor's dtype, shape and byte range, then the raw little-endian tensor bytes.
 *
 * Reading is lazy: {@link openSafetensors} parses and validates only the header, and each tensor's
 * bytes are read from disk when asked for. Writing is atomic (`<path>.tmp`, then rename).
 *
 * @module
 */

import { DTYPE_BYTES, isWeightDtype, rawToF32, shapeSize, type WeightDtype } from "./dtypes.ts";
import { clip, describeValue, FormatError } from "./format_error.ts";
import { RandomAccessFile } from "./random_access_file.ts";
import type { TensorInfo, WeightReader } from "./weights.ts";

/** Largest header accepted, as the reference implementation limits it (guards memory). */
export const MAX_HEADER_BYTES = 100_000_000;

const METADATA_KEY = "__metadata__";

/** One tensor's header entry: byte range relative to the start of the data. */
export interface Entry {
  dtype: WeightDtype;
  shape: number[];
  begin: number;
  end: number;
}

/** An open .safetensors file. Tensor bytes stay on disk until read. */
export class SafetensorsFile implements WeightReader {
  readonly #file: RandomAccessFile;
  readonly #entries: Map<string, Entry>;
  readonly #dataStart: number;

  /** @internal use {@link openSafetensors}. */
  constructor(
    file: RandomAccessFile,
    entries: Map<string, Entry>,
    dataStart: number,
    /** The free-form `__metadata__` string map (empty when absent). */
    readonly metadata: Readonly<Record<string, string>>,
  ) {
    this.#file = file;
    this.#entries = entries;
    this.#dataStart = dataStart;
  }

  /** Path the file was opened from. */
  get path(): string {
    return this.#file.path;
  }

  /** Tensor names in header order. */
  keys(): string[] {
    return [...this.#entries.keys()];
  }

  /** True when the file holds tensor `key`. */
  has(key: string): boolean {
    return this.#entries.has(key);
  }

  /** Dtype and shape of tensor `key`. */
  info(key: string): TensorInfo {
    const e = this.#entry(key);
    return { dtype: e.dtype, shape: [...e.shape] };
  }

  /** Reads only tensor `key`'s bytes from disk (little-endian, C order). */
  readRaw(key: string): Promise<Uint8Array> {
    const e = this.#entry(key);
    return this.#file.readAt(this.#dataStart + e.begin, e.end - e.begin);
  }

  /** Reads tensor `key` converted to float32 (f16/bf16 exactly, integers as float32 rounds). */
  async readF32(key: string): Promise<Float32Array> {
    const e = this.#entry(key);
    return rawToF32(e.dtype, await this.readRaw(key), `${this.path}: tensor ${key}`, true);
  }

  /** Closes the file. */
  close(): void {
    this.#file.close();
  }

  #entry(key: string): Entry {
    const e = this.#entries.get(key);
    if (e === undefined) throw new Error(`${this.path}: no tensor named "${key}"`);
    return e;
  }
}

/**
 * Opens a .safetensors file and validates its header: header length within the file and at most
 * {@link MAX_HEADER_BYTES}, known dtypes, shapes matching byte ranges, byte ranges in range and
 * contiguous (no overlap, no gap, ending at the end of the file).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * const st = await openSafetensors("models/tiny_teacher/unet/diffusion_pytorch_model.safetensors");
 * assert.deepEqual(st.info("conv_in.weight"), { dtype: "F32", shape: [16, 3, 3, 3] });
 * const w = await st.readF32("conv_in.weight"); // reads only this tensor's bytes
 * assert.equal(w.length, 16 * 3 * 3 * 3);
 * st.close();
 * ```
 */
export async function openSafetensors(path: string): Promise<SafetensorsFile> {
  const file = await RandomAccessFile.open(path);
  try {
    if (file.size < 8) throw new FormatError(`${path}: too short for a safetensors file`);
    const lenBytes = await file.readAt(0, 8);
    const headerLen = new DataView(lenBytes.buffer).getBigUint64(0, true);
    if (headerLen > BigInt(MAX_HEADER_BYTES)) {
      throw new FormatError(
        `${path}: safetensors header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit`,
      );
    }
    const n = Number(headerLen);
    if (8 + n > file.size) {
      throw new FormatError(
        `${path}: safetensors header length ${n} runs past the end of the file (${file.size} bytes)`,
      );
    }
    const header = parseHeaderJson(path, await file.readAt(8, n));
    const { entries, metadata } = validateHeader(path, header, file.size - 8 - n);
    return new SafetensorsFile(file, entries, 8 + n, metadata);
  } catch (err) {
    file.close();
    throw err;
  }
}

/** Parses safetensors header bytes as a JSON object (exported for streamed reads). */
export function parseHeaderJson(path: string, bytes: Uint8Array): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (err) {
    throw new FormatError(`${path}: safetensors header is not valid UTF-8 JSON (${err})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new FormatError(`${path}: safetensors header is not a JSON object`);
  }
  return value as Record<string, unknown>;
}

function isIndex(x: unknown): x is number {
  return typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
}

/** Validates a parsed header against `dataBytes` bytes of data (exported for streamed reads). */
export function validateHeader(
  path: string,
  header: Record<string, unknown>,
  dataBytes: number,
): { entries: Map<string, Entry>; metadata: Record<string, string> } {
  const entries = new Map<string, Entry>();
  const metadata: Record<string, string> = {};
  for (const [key, raw] of Object.entries(header)) {
    if (key === METADATA_KEY) {
      if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
        throw new FormatError(`${path}: ${METADATA_KEY} must be an object of strings`);
      }
      for (const [k, v] of Object.entries(raw)) {
        if (typeof v !== "string") {
          throw new FormatError(`${path}: ${METADATA_KEY}.${clip(k)} is not a string`);
        }
        metadata[k] = v;
      }
      continue;
    }
    const where = `${path}: tensor ${JSON.stringify(clip(key))}`;
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      throw new FormatError(`${where}: header entry is not an object`);
    }
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    if (!isWeightDtype(dtype)) {
      throw new FormatError(`${where}: unknown dtype ${describeValue(dtype)}`);
    }
    if (!Array.isArray(shape) || !shape.every(isIndex)) {
      throw new FormatError(`${where}: shape ${describeValue(shape)} is not a list of sizes`);
    }
    if (
      !Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isIndex) ||
      offsets[0] > offsets[1]
    ) {
      throw new FormatError(
        `${where}: data_offsets ${describeValue(offsets)} is not [begin, end]`,
      );
    }
    const [begin, end] = offsets as number[];
    if (end > dataBytes) {
      throw new FormatError(
        `${where}: data_offsets [${begin}, ${end}] run past the end of the data (${dataBytes} bytes)`,
      );
    }
    const expected = shapeSize(shape) * DTYPE_BYTES[dtype];
    if (expected !== end - begin) {
      throw new FormatError(
        `${where}: shape [${shape}] of ${dtype} needs ${expected} bytes but data_offsets ` +
          `span ${end - begin}`,
      );
    }
    entries.set(key, { dtype, shape: shape as number[], begin, end });
  }
  // The data must be exactly covered: sorted ranges, each starting where the previous ended.
  const sorted = [...entries].sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
  let at = 0;
  for (const [key, e] of sorted) {
    if (e.begin < at) {
      throw new FormatError(`${path}: tensor "${key}" data_offsets overlap another tensor's bytes`);
    }
    if (e.begin > at) {
      throw new FormatError(
        `${path}: tensor "${key}" data starts at ${e.begin}, leaving a gap after byte ${at}`,
      );
    }
    at = e.end;
  }
  if (at !== dataBytes) {
    throw new FormatError(
      `${path}: tensors cover ${at} bytes but the file holds ${dataBytes} bytes of data`,
    );
  }
  return { entries, metadata };
}

/** One tensor to write with {@link writeSafetensors}. */
export interface SafetensorsTensor {
  name: string;
  /** Element type; F16 and BF16 data are raw bit patterns. */
  dtype: "F32" | "F16" | "BF16" | "I32" | "I64";
  shape: readonly number[];
  data: Float32Array | Uint16Array | Int32Array | BigInt64Array;
}

// deno-lint-ignore no-explicit-any
const WRITE_ARRAY: Record<SafetensorsTensor["dtype"], new (...args: any[]) => ArrayBufferView> = {
  F32: Float32Array,
  F16: Uint16Array,
  BF16: Uint16Array,
  I32: Int32Array,
  I64: BigInt64Array,
};

/**
 * Writes tensors as a .safetensors file, atomically (`<path>.tmp` then rename). Tensors are stored in
 * name order; the JSON header is padded with spaces to a multiple of 8 bytes so the data is aligned.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * const bias = Float32Array.from([0.5, -1, 2, 0]);
 * await writeSafetensors(`${dir}/ema.safetensors`, [
 *   { name: "conv_in.bias", dtype: "F32", shape: [4], data: bias },
 * ], { format: "pt" });
 * const st = await openSafetensors(`${dir}/ema.safetensors`);
 * assert.deepEqual(st.metadata, { format: "pt" });
 * assert.deepEqual(await st.readF32("conv_in.bias"), bias);
 * st.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
/**
 * The bytes before a safetensors file's data: the header's length (u64, little-endian) and its JSON,
 * space-padded to a multiple of 8 so the data that follows stays aligned.
 */
export function encodeHeader(header: Record<string, unknown>): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const head = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(head.buffer).setBigUint64(0, BigInt(padded), true);
  head.set(json, 8);
  return head;
}

export async function writeSafetensors(
  path: string,
  tensors: readonly SafetensorsTensor[],
  metadata?: Readonly<Record<string, string>>,
): Promise<void> {
  const sorted = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata !== undefined && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") throw new Error(`${path}: metadata "${k}" is not a string`);
    }
    header[METADATA_KEY] = metadata;
  }
  let offset = 0;
  for (const t of sorted) {
    const where = `${path}: tensor "${t.name}"`;
    if (t.name === METADATA_KEY || Object.hasOwn(header, t.name)) {
      throw new Error(`${where}: duplicate or reserved name`);
    }
    if (!Object.hasOwn(WRITE_ARRAY, t.dtype)) throw new Error(`${where}: cannot write ${t.dtype}`);
    if (!(t.data instanceof WRITE_ARRAY[t.dtype])) {
      throw new Error(`${where}: ${t.dtype} data must be a ${WRITE_ARRAY[t.dtype].name}`);
    }
    if (!t.shape.every(isIndex) || shapeSize(t.shape) !== t.data.length) {
      throw new Error(`${where}: shape [${t.shape}] does not match ${t.data.length} elements`);
    }
    const bytes = t.data.byteLength;
    header[t.name] = {
      dtype: t.dtype,
      shape: [...t.shape],
      data_offsets: [offset, offset + bytes],
    };
    offset += bytes;
  }
  const head = encodeHeader(header);

  const tmp = `${path}.tmp`;
  const out = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    await writeAll(out, head);
    for (const t of sorted) {
      await writeAll(out, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    }
    await out.sync();
    out.close();
  } catch (err) {
    out.close();
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
  await Deno.rename(tmp, path);
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await file.write(bytes.subarray(done));
}
