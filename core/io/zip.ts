/**
 * A minimal read-only ZIP reader over a file on disk: the central directory (ZIP64 included) is
 * parsed once, and entries are read on demand. Stored (uncompressed) entries — how PyTorch writes
 * tensor data — can be read by byte range without reading the rest of the entry.
 *
 * Deflated entries are bounded before and while inflating: an entry may declare at most
 * {@link DEFLATE_MAX_RATIO} times its compressed size (deflate cannot do better) and at most the
 * caller's `maxBytes` ({@link DEFAULT_MAX_ENTRY_BYTES} unless told), and inflating stops as soon as
 * the output passes the declared size. A deflate bomb is refused with a {@link FormatError} naming
 * the archive and entry, without ever holding more than the declared size.
 *
 * @module
 */

import { crc32, inflateRawSync } from "node:zlib";
import { FormatError } from "./format_error.ts";
import { RandomAccessFile } from "./random_access_file.ts";

/** Deflate's best case is ~1032:1 (a 258-byte match per 2 bits); more is a lie. */
export const DEFLATE_MAX_RATIO = 1032;
/** What {@link ZipReader.read} inflates at most unless the caller says otherwise. */
export const DEFAULT_MAX_ENTRY_BYTES = 1 << 30;

/** Options of {@link ZipReader.read}. */
export interface ZipReadOptions {
  /** Refuse an entry that declares (or inflates to) more bytes than this. */
  maxBytes?: number;
}

/** One file in the archive, as the central directory describes it. */
export interface ZipEntry {
  name: string;
  /** 0 = stored, 8 = deflate; others are refused when read. */
  method: number;
  compressedSize: number;
  uncompressedSize: number;
  crc32: number;
  /** General-purpose flags; bit 0 = encrypted. */
  flags: number;
  localHeaderOffset: number;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_EOCD64_LOCATOR = 0x07064b50;
const EOCD_SIZE = 22;
const MAX_COMMENT = 0xffff;

/** An open ZIP archive. */
export class ZipReader {
  readonly #file: RandomAccessFile;
  readonly #entries: Map<string, ZipEntry>;
  /** End of the region entry data may occupy (the central directory's start). */
  readonly #dataLimit: number;
  readonly #dataOffsets = new Map<string, Promise<number>>();

  private constructor(file: RandomAccessFile, entries: Map<string, ZipEntry>, dataLimit: number) {
    this.#file = file;
    this.#entries = entries;
    this.#dataLimit = dataLimit;
  }

  /** Opens `path` and parses its central directory; a truncated or damaged archive is refused. */
  static async open(path: string): Promise<ZipReader> {
    const file = await RandomAccessFile.open(path);
    try {
      const { cdOffset, cdSize, count } = await readEndRecord(file);
      const entries = parseCentralDirectory(file.path, await file.readAt(cdOffset, cdSize), count);
      for (const e of entries.values()) {
        if (e.localHeaderOffset + 30 > cdOffset) {
          throw new FormatError(`${path}: zip entry "${e.name}" starts past the entry data region`);
        }
      }
      return new ZipReader(file, entries, cdOffset);
    } catch (err) {
      file.close();
      throw err;
    }
  }

  /** Path of the archive. */
  get path(): string {
    return this.#file.path;
  }

  /** All entries in central-directory order. */
  entries(): ZipEntry[] {
    return [...this.#entries.values()];
  }

  /** The entry called `name`, or undefined. */
  get(name: string): ZipEntry | undefined {
    return this.#entries.get(name);
  }

  /**
   * Reads a whole entry, inflating it when deflated, and checks its size and CRC-32. An entry that
   * declares or inflates to more than `maxBytes` is refused before that memory is used.
   */
  async read(name: string, opts: ZipReadOptions = {}): Promise<Uint8Array> {
    const e = this.#require(name);
    const where = `${this.path}: zip entry "${name}"`;
    const maxBytes = opts.maxBytes ?? DEFAULT_MAX_ENTRY_BYTES;
    if (e.uncompressedSize > maxBytes) {
      throw new FormatError(
        `${where} declares ${e.uncompressedSize} bytes, more than the ${maxBytes}-byte limit ` +
          `for it (a deflate bomb, or raise the limit)`,
      );
    }
    if (e.method === 8 && e.uncompressedSize > DEFLATE_MAX_RATIO * e.compressedSize + 1024) {
      throw new FormatError(
        `${where} declares ${e.uncompressedSize} bytes from ${e.compressedSize} compressed: ` +
          `more than deflate's ${DEFLATE_MAX_RATIO}:1 can give`,
      );
    }
    const start = await this.#dataOffset(e);
    const stored = await this.#file.readAt(start, e.compressedSize);
    let data: Uint8Array;
    if (e.method === 0) {
      data = stored;
    } else if (e.method === 8) {
      try {
        // maxOutputLength stops inflating as soon as the output passes the declared size.
        const out = inflateRawSync(stored, { maxOutputLength: Math.max(1, e.uncompressedSize) });
        data = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
      } catch (err) {
        if ((err as { code?: string }).code === "ERR_BUFFER_TOO_LARGE") {
          throw new FormatError(
            `${where} inflates to more than the ${e.uncompressedSize} bytes its directory declares`,
          );
        }
        throw new FormatError(`${where} does not inflate (${(err as Error).message})`);
      }
    } else {
      throw new FormatError(`${where} uses unsupported method ${e.method}`);
    }
    if (data.byteLength !== e.uncompressedSize) {
      throw new FormatError(
        `${this.path}: zip entry "${name}" holds ${data.byteLength} bytes, ` +
          `directory says ${e.uncompressedSize}`,
      );
    }
    if ((crc32(data) >>> 0) !== e.crc32) {
      throw new FormatError(`${this.path}: zip entry "${name}" fails its CRC-32 check`);
    }
    return data;
  }

  /**
   * Reads `length` bytes at `offset` inside a stored (uncompressed) entry, touching only those bytes
   * on disk. No CRC check (the entry is not read whole).
   */
  async readRange(name: string, offset: number, length: number): Promise<Uint8Array> {
    const e = this.#require(name);
    if (e.method !== 0) {
      throw new FormatError(
        `${this.path}: zip entry "${name}" is compressed; ranges need stored entries`,
      );
    }
    if (
      !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
      offset + length > e.uncompressedSize
    ) {
      throw new FormatError(
        `${this.path}: range [${offset}, ${offset + length}) lies outside zip entry "${name}" ` +
          `(${e.uncompressedSize} bytes)`,
      );
    }
    return this.#file.readAt((await this.#dataOffset(e)) + offset, length);
  }

  /** Closes the archive file. */
  close(): void {
    this.#file.close();
  }

  #require(name: string): ZipEntry {
    const e = this.#entries.get(name);
    if (e === undefined) throw new FormatError(`${this.path}: no zip entry named "${name}"`);
    if (e.flags & 1) throw new FormatError(`${this.path}: zip entry "${name}" is encrypted`);
    if (e.method === 0 && e.compressedSize !== e.uncompressedSize) {
      throw new FormatError(
        `${this.path}: stored zip entry "${name}" declares ${e.uncompressedSize} bytes but ` +
          `holds ${e.compressedSize}`,
      );
    }
    return e;
  }

  /** Where an entry's data starts: after its local header, whose extra field may differ. */
  #dataOffset(e: ZipEntry): Promise<number> {
    let p = this.#dataOffsets.get(e.name);
    if (p === undefined) {
      p = this.#readLocalHeader(e);
      this.#dataOffsets.set(e.name, p);
    }
    return p;
  }

  async #readLocalHeader(e: ZipEntry): Promise<number> {
    const h = await this.#file.readAt(e.localHeaderOffset, 30);
    const v = new DataView(h.buffer);
    if (v.getUint32(0, true) !== SIG_LOCAL) {
      throw new FormatError(`${this.path}: zip entry "${e.name}" has a bad local header signature`);
    }
    const start = e.localHeaderOffset + 30 + v.getUint16(26, true) + v.getUint16(28, true);
    if (start + e.compressedSize > this.#dataLimit) {
      throw new FormatError(
        `${this.path}: zip entry "${e.name}" data (${e.compressedSize} bytes at ${start}) runs ` +
          `past the entry data region (truncated archive?)`,
      );
    }
    return start;
  }
}

/** Finds the end-of-central-directory record (and its ZIP64 form) near the end of the file. */
async function readEndRecord(
  file: RandomAccessFile,
): Promise<{ cdOffset: number; cdSize: number; count: number }> {
  const path = file.path;
  if (file.size < EOCD_SIZE) throw new FormatError(`${path}: too short to be a zip archive`);
  const tailLen = Math.min(file.size, EOCD_SIZE + MAX_COMMENT);
  const tailStart = file.size - tailLen;
  const tail = await file.readAt(tailStart, tailLen);
  const tv = new DataView(tail.buffer);
  let at = -1;
  for (let i = tailLen - EOCD_SIZE; i >= 0; i--) {
    if (
      tv.getUint32(i, true) === SIG_EOCD && i + EOCD_SIZE + tv.getUint16(i + 20, true) <= tailLen
    ) {
      at = i;
      break;
    }
  }
  if (at < 0) {
    throw new FormatError(
      `${path}: not a zip archive, or truncated (no end-of-central-directory record)`,
    );
  }
  const disk = tv.getUint16(at + 4, true);
  const cdDisk = tv.getUint16(at + 6, true);
  let count = tv.getUint16(at + 10, true);
  let cdSize = tv.getUint32(at + 12, true);
  let cdOffset = tv.getUint32(at + 16, true);
  const eocdPos = tailStart + at;
  let cdEnd = eocdPos;
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    // ZIP64: a locator just before the classic record points at the 64-bit record.
    const locPos = eocdPos - 20;
    if (locPos < 0) throw new FormatError(`${path}: zip64 end record locator missing`);
    const loc = new DataView((await file.readAt(locPos, 20)).buffer);
    if (loc.getUint32(0, true) !== SIG_EOCD64_LOCATOR) {
      throw new FormatError(`${path}: zip64 end record locator has a bad signature`);
    }
    const rec64Pos = safeNumber(path, loc.getBigUint64(8, true));
    if (rec64Pos + 56 > locPos) {
      throw new FormatError(`${path}: zip64 end record lies out of range`);
    }
    const r = new DataView((await file.readAt(rec64Pos, 56)).buffer);
    if (r.getUint32(0, true) !== SIG_EOCD64) {
      throw new FormatError(`${path}: zip64 end record has a bad signature`);
    }
    if (r.getUint32(16, true) !== 0 || r.getUint32(20, true) !== 0) {
      throw new FormatError(`${path}: multi-disk zip archives are not supported`);
    }
    count = safeNumber(path, r.getBigUint64(32, true));
    cdSize = safeNumber(path, r.getBigUint64(40, true));
    cdOffset = safeNumber(path, r.getBigUint64(48, true));
    cdEnd = rec64Pos;
  } else if (disk !== 0 || cdDisk !== 0) {
    throw new FormatError(`${path}: multi-disk zip archives are not supported`);
  }
  if (cdOffset + cdSize > cdEnd) {
    throw new FormatError(
      `${path}: zip central directory (${cdSize} bytes at ${cdOffset}) runs past its end record ` +
        `(truncated archive?)`,
    );
  }
  return { cdOffset, cdSize, count };
}

function safeNumber(path: string, v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new FormatError(`${path}: zip64 field ${v} too large`);
  }
  return Number(v);
}

function parseCentralDirectory(
  path: string,
  cd: Uint8Array,
  count: number,
): Map<string, ZipEntry> {
  const v = new DataView(cd.buffer, cd.byteOffset, cd.byteLength);
  const names = new TextDecoder("utf-8");
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || v.getUint32(p, true) !== SIG_CENTRAL) {
      throw new FormatError(`${path}: zip central directory entry ${i} has a bad signature`);
    }
    const nameLen = v.getUint16(p + 28, true);
    const extraLen = v.getUint16(p + 30, true);
    const commentLen = v.getUint16(p + 32, true);
    const next = p + 46 + nameLen + extraLen + commentLen;
    if (next > cd.length) {
      throw new FormatError(`${path}: zip central directory entry ${i} is truncated`);
    }
    const name = names.decode(cd.subarray(p + 46, p + 46 + nameLen));
    let uncompressedSize = v.getUint32(p + 24, true);
    let compressedSize = v.getUint32(p + 20, true);
    let localHeaderOffset = v.getUint32(p + 42, true);
    // ZIP64 extra field: 64-bit values for exactly those fields saturated at 0xffffffff, in order.
    let x = p + 46 + nameLen;
    const xEnd = x + extraLen;
    while (x + 4 <= xEnd) {
      const id = v.getUint16(x, true);
      const size = v.getUint16(x + 2, true);
      if (id === 0x0001) {
        let f = x + 4;
        const take = (): number => {
          // Within the field as declared and within the entry's extra data as a whole.
          if (f + 8 > Math.min(x + 4 + size, xEnd)) {
            throw new FormatError(`${path}: zip64 extra field of "${name}" short`);
          }
          const val = safeNumber(path, v.getBigUint64(f, true));
          f += 8;
          return val;
        };
        if (uncompressedSize === 0xffffffff) uncompressedSize = take();
        if (compressedSize === 0xffffffff) compressedSize = take();
        if (localHeaderOffset === 0xffffffff) localHeaderOffset = take();
      }
      x += 4 + size;
    }
    if (entries.has(name)) throw new FormatError(`${path}: duplicate zip entry "${name}"`);
    entries.set(name, {
      name,
      method: v.getUint16(p + 10, true),
      flags: v.getUint16(p + 8, true),
      crc32: v.getUint32(p + 16, true),
      compressedSize,
      uncompressedSize,
      localHeaderOffset,
    });
    p = next;
  }
  return entries;
}
