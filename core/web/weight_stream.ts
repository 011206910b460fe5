/**
 * A safetensors file read front to back as it downloads (a `fetch` body), tensor by tensor, each
 * tensor in pieces no larger than the GPU's buffer limits allow (and a host-memory cap), so that a
 * Stable Diffusion UNet of 1.7 GB (f16) never sits whole in the page's memory and no single upload
 * exceeds `maxBufferSize` / `maxStorageBufferBindingSize`.
 *
 * The header is validated by the same code as a file on disk (core/io/safetensors.ts). Tensors come
 * in data order (safetensors data is contiguous), whatever order the model wants them in.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { openSafetensors } from "../io/safetensors.ts";
 *
 * // The page fetches "/weights/student?dtype=f16"; here the same student file from disk.
 * const path = "models/tiny_student/unet/diffusion_pytorch_model.safetensors";
 * const res = await fetch(new URL(`../../${path}`, import.meta.url));
 * const st = new SafetensorsStream(res.body!, path);
 * const { entries } = await st.header();
 * const limits = { maxBufferSize: 4096, maxStorageBufferBindingSize: 4096 }; // page: gpu.limits
 * const received = new Map<string, Uint8Array>(); // the page uploads each piece to the GPU
 * const upload = (key: string, offset: number, bytes: Uint8Array, size: number) => {
 *   if (!received.has(key)) received.set(key, new Uint8Array(size));
 *   received.get(key)!.set(bytes, offset);
 * };
 * for await (const p of st.pieces(pieceBytes(limits))) {
 *   assert.ok(p.bytes.length <= 2048); // half the limit: room for f16 -> f32
 *   upload(p.key, p.offset, p.bytes, p.entry.end - p.entry.begin);
 * }
 * assert.equal(received.size, entries.size);
 * const file = await openSafetensors(path);
 * assert.deepEqual(received.get("conv_in.weight"), await file.readRaw("conv_in.weight"));
 * file.close();
 * ```
 *
 * @module
 */

import {
  type Entry,
  MAX_HEADER_BYTES,
  parseHeaderJson,
  validateHeader,
} from "../io/safetensors.ts";

/** The GPU limits a piece must respect. */
export interface PieceLimits {
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
}

/** Largest piece held in host memory at once (before the GPU limits), bytes. */
export const PIECE_CAP = 8 << 20;

/**
 * Piece boundaries fall on multiples of this many bytes of a tensor: a whole number of elements of
 * every dtype (up to 8 bytes) and, after conversion to f16 or f32, a multiple of 4 bytes, which
 * `writeBuffer` offsets need.
 */
export const PIECE_ALIGN = 16;

/**
 * Bytes per piece: the smallest of `maxBufferSize`, `maxStorageBufferBindingSize` and `cap`, rounded
 * down to {@link PIECE_ALIGN}. A piece converted from f16 to f32 doubles, so the limits are halved
 * for that headroom.
 */
export function pieceBytes(limits: PieceLimits, cap = PIECE_CAP): number {
  const room = Math.min(limits.maxBufferSize, limits.maxStorageBufferBindingSize) / 2;
  const b = Math.floor(Math.min(room, cap) / PIECE_ALIGN) * PIECE_ALIGN;
  if (!(b >= PIECE_ALIGN)) {
    throw new Error(
      `weights: the adapter's buffer limits (maxBufferSize ${limits.maxBufferSize}, ` +
        `maxStorageBufferBindingSize ${limits.maxStorageBufferBindingSize}) leave no room for a ` +
        `${PIECE_ALIGN}-byte piece`,
    );
  }
  return b;
}

/** One piece of one tensor's bytes. */
export interface TensorPiece {
  key: string;
  entry: Entry;
  /** Byte offset of the piece within the tensor's data. */
  offset: number;
  /** The piece's bytes (a fresh, 8-byte-aligned buffer). */
  bytes: Uint8Array;
  /** The tensor's last piece. */
  last: boolean;
}

/** The parsed header of a streamed file. */
export interface StreamedHeader {
  entries: Map<string, Entry>;
  metadata: Record<string, string>;
  /** Bytes before the data (8 + header length). */
  dataStart: number;
  /** The whole file's length: dataStart + the tensors' bytes. */
  fileBytes: number;
}

/** Reads a safetensors byte stream once, front to back. */
export class SafetensorsStream {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #consumed = 0;
  #header: Promise<StreamedHeader> | null = null;

  /**
   * @param stream the file's bytes (e.g. `response.body`)
   * @param where the file's name in messages (a URL or a path)
   * @param onBytes called with the count of bytes consumed so far (progress)
   */
  constructor(
    stream: ReadableStream<Uint8Array>,
    readonly where: string,
    readonly onBytes?: (consumed: number) => void,
  ) {
    this.#reader = stream.getReader();
  }

  /** Bytes consumed so far. */
  get consumed(): number {
    return this.#consumed;
  }

  /** Reads and validates the header (once). */
  header(): Promise<StreamedHeader> {
    this.#header ??= this.#readHeader();
    return this.#header;
  }

  async #readHeader(): Promise<StreamedHeader> {
    const len = new DataView((await this.#take(8, "the header length")).buffer).getBigUint64(
      0,
      true,
    );
    if (len > BigInt(MAX_HEADER_BYTES)) {
      throw new Error(
        `${this.where}: safetensors header length ${len} exceeds the ${MAX_HEADER_BYTES}-byte limit`,
      );
    }
    const n = Number(len);
    const json = parseHeaderJson(this.where, await this.#take(n, "the header"));
    // The stream's length is not known in advance: the data must end where the last tensor ends
    // (checked when the stream is exhausted).
    let dataBytes = 0;
    for (const [k, v] of Object.entries(json)) {
      const end = (v as { data_offsets?: unknown })?.data_offsets;
      if (k !== "__metadata__" && Array.isArray(end) && typeof end[1] === "number") {
        dataBytes = Math.max(dataBytes, end[1]);
      }
    }
    const { entries, metadata } = validateHeader(this.where, json, dataBytes);
    return { entries, metadata, dataStart: 8 + n, fileBytes: 8 + n + dataBytes };
  }

  /**
   * Every tensor's bytes in data order, in pieces of at most `maxPiece` bytes (a multiple of
   * {@link PIECE_ALIGN}); a tensor of 0 bytes gives one empty piece. Throws naming the file when the
   * stream ends early or runs past the last tensor.
   */
  async *pieces(maxPiece: number): AsyncGenerator<TensorPiece> {
    if (!(maxPiece >= PIECE_ALIGN) || maxPiece % PIECE_ALIGN !== 0) {
      throw new Error(
        `weights: piece size ${maxPiece} is not a positive multiple of ${PIECE_ALIGN}`,
      );
    }
    const h = await this.header();
    const order = [...h.entries].sort((a, b) => a[1].begin - b[1].begin);
    for (const [key, entry] of order) {
      const size = entry.end - entry.begin;
      let offset = 0;
      do {
        const n = Math.min(maxPiece, size - offset);
        const bytes = await this.#take(n, `tensor "${key}"`);
        yield { key, entry, offset, bytes, last: offset + n === size };
        offset += n;
      } while (offset < size);
    }
    while (this.#buffered === 0) if (!(await this.#fill())) return;
    throw new Error(
      `${this.where}: more bytes follow the last tensor (the data should end at byte ${h.fileBytes})`,
    );
  }

  /** Stops reading (e.g. after an error elsewhere). */
  async cancel(): Promise<void> {
    await this.#reader.cancel().catch(() => {});
  }

  /** Reads one more chunk into the queue; false at the end of the stream. */
  async #fill(): Promise<boolean> {
    const { value, done } = await this.#reader.read();
    if (done) return false;
    if (value.length) {
      this.#chunks.push(value);
      this.#buffered += value.length;
    }
    return true;
  }

  /** The next `n` bytes as a fresh buffer. */
  async #take(n: number, what: string): Promise<Uint8Array> {
    while (this.#buffered < n) {
      if (!(await this.#fill())) {
        throw new Error(
          `${this.where}: the download ended at byte ${this.#consumed + this.#buffered} ` +
            `in ${what}`,
        );
      }
    }
    const out = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const c = this.#chunks[0];
      const k = Math.min(c.length, n - at);
      out.set(c.subarray(0, k), at);
      at += k;
      if (k === c.length) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(k);
    }
    this.#buffered -= n;
    this.#consumed += n;
    this.onBytes?.(this.#consumed);
    return out;
  }
}
