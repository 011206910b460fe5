/**
 * The on-disk layout of LMDB 0.9 databases in data format 1, shared by the reader
 * (`lmdb_reader.ts`) and the writer (`lmdb_writer.ts`): page and node constants, the key order,
 * where an environment keeps its data file, and the parsing and checking of the two meta pages.
 *
 * Format summary (64-bit layout, little-endian): pages of `psize` bytes; pages 0 and 1 are meta
 * pages (the one with the larger txnid is current); a page starts with a 16-byte header
 * (pgno u64, pad u16, flags u16, lower u16, upper u16; overflow pages keep their page count in
 * lower/upper); branch and leaf pages hold an array of u16 node offsets after the header and
 * nodes at the end of the page; a node is (lo u16, hi u16, flags u16, ksize u16, key, data).
 * In a leaf, lo|hi is the data size and a value too big for the page lives on overflow pages
 * (flag F_BIGDATA, data = the first overflow pgno). In a branch, lo|hi|flags is the child pgno
 * and the first node's key is empty. Keys compare as bytes (memcmp, then length).
 *
 * @module
 */

import type { FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { FormatError } from "../io/format_error.ts";

export const MDB_MAGIC = 0xbeefc0de;
export const PAGE_HEADER = 16;
export const NODE_HEADER = 8;
export const P_BRANCH = 0x01;
export const P_LEAF = 0x02;
export const P_OVERFLOW = 0x04;
export const P_META = 0x08;
export const F_BIGDATA = 0x01;
export const F_SUBDATA = 0x02;
export const F_DUPDATA = 0x04;
export const MDB_INTEGERKEY = 0x08;
export const P_INVALID = 0xffffffffffffffffn;
/** LMDB 0.9's default (and compile-time) maximum key size. */
export const LMDB_MAX_KEY_SIZE = 511;
export const DEFAULT_PAGE_SIZE = 4096;

/** Byte-wise key order of LMDB's default comparator. */
export function compareKeys(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/** Where the data file of an LMDB environment is: `<dir>/data.mdb`, or the path itself. */
export async function dataFilePath(path: string): Promise<string> {
  try {
    const st = await Deno.stat(path);
    return st.isDirectory ? join(path, "data.mdb") : path;
  } catch (err) {
    throw new Error(`LMDB database ${path} not found: ${(err as Error).message}`, { cause: err });
  }
}

export interface DbRecord {
  flags: number;
  depth: number;
  entries: number;
  root: bigint;
}

function readDb(dv: DataView, off: number): DbRecord {
  return {
    flags: dv.getUint16(off + 4, true),
    depth: dv.getUint16(off + 6, true),
    entries: Number(dv.getBigUint64(off + 32, true)),
    root: dv.getBigUint64(off + 40, true),
  };
}

/** Thrown for an LMDB file in data format 2 (written by the npm `lmdb` package). */
export class LmdbFormat2Error extends FormatError {}

/** LMDB's cursor stack holds 32 pages: no database is deeper. */
export const MAX_DEPTH = 32;
const MIN_PAGE_SIZE = 512;
const MAX_PAGE_SIZE = 65536;

export interface Meta {
  pageSize: number;
  txnid: bigint;
  main: DbRecord;
}

export async function readMeta(
  fh: FileHandle,
  pos: number,
  buf: Uint8Array,
  file: string,
): Promise<Meta> {
  const which = `meta page ${pos === 0 ? 0 : 1}`;
  const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
  if (bytesRead < buf.length) {
    throw new FormatError(
      pos === 0
        ? `${file}: not an LMDB file (too short)`
        : `${file}: corrupt LMDB file (${which} at byte ${pos}, one page size on from meta ` +
          `page 0, lies past the end of the file)`,
    );
  }
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  // Format 2 pages carry a 24-byte header (a txnid is added), so its meta starts 8 bytes later.
  if (dv.getUint32(24, true) === MDB_MAGIC && dv.getUint32(28, true) === 2) {
    throw new LmdbFormat2Error(`${file}: LMDB data format 2`);
  }
  if (!(dv.getUint16(10, true) & P_META) || dv.getUint32(16, true) !== MDB_MAGIC) {
    throw new FormatError(
      pos === 0
        ? `${file}: not an LMDB file (bad magic)`
        : `${file}: corrupt LMDB file (${which} at byte ${pos} has a bad magic or flags)`,
    );
  }
  const version = dv.getUint32(20, true);
  if (version === 2) throw new LmdbFormat2Error(`${file}: LMDB data format 2`);
  if (version !== 1) throw new FormatError(`${file}: unsupported LMDB data format ${version}`);
  const pageSize = dv.getUint32(40, true); // mm_dbs[FREE].md_pad holds the page size
  if (pageSize < MIN_PAGE_SIZE || pageSize > MAX_PAGE_SIZE || (pageSize & (pageSize - 1)) !== 0) {
    throw new FormatError(
      `${file}: corrupt LMDB ${which}: page size ${pageSize} is not a power of two in ` +
        `${MIN_PAGE_SIZE}..${MAX_PAGE_SIZE}`,
    );
  }
  return { pageSize, main: readDb(dv, 88), txnid: dv.getBigUint64(144, true) };
}
