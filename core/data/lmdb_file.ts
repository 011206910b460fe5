/**
 * LMDB databases in the on-disk format of LMDB 0.9 ("data format 1", the one Python's `lmdb`
 * package, `mdb_dump` and the original tool use), in plain TypeScript.
 *
 * Why not the npm `lmdb` package alone: its bundled LMDB writes data format 2, which LMDB 0.9
 * refuses ("MDB_INVALID"), and it crashes on format-1 files. So this module reads format-1 files
 * and writes new ones; {@link openLmdbReader} hands format-2 files to the npm package.
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

import { open as openFileHandle } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { FormatError } from "../io/format_error.ts";

const MDB_MAGIC = 0xbeefc0de;
const PAGE_HEADER = 16;
const NODE_HEADER = 8;
const P_BRANCH = 0x01;
const P_LEAF = 0x02;
const P_OVERFLOW = 0x04;
const P_META = 0x08;
const F_BIGDATA = 0x01;
const F_SUBDATA = 0x02;
const F_DUPDATA = 0x04;
const MDB_INTEGERKEY = 0x08;
const P_INVALID = 0xffffffffffffffffn;
/** LMDB 0.9's default (and compile-time) maximum key size. */
export const LMDB_MAX_KEY_SIZE = 511;
const DEFAULT_PAGE_SIZE = 4096;

/** Byte-wise key order of LMDB's default comparator. */
export function compareKeys(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/** Where the data file of an LMDB environment is: `<dir>/data.mdb`, or the path itself. */
async function dataFilePath(path: string): Promise<string> {
  try {
    const st = await Deno.stat(path);
    return st.isDirectory ? join(path, "data.mdb") : path;
  } catch (err) {
    throw new Error(`LMDB database ${path} not found: ${(err as Error).message}`, { cause: err });
  }
}

/** What a reader can do; both the format-1 reader and the npm fallback provide it. */
export interface LmdbReadable {
  /** Number of entries in the main database. */
  readonly entries: number;
  /** The value stored under `key`, or undefined. */
  get(key: Uint8Array): Promise<Uint8Array | undefined>;
  /** All keys in key order. */
  keys(): AsyncIterable<Uint8Array>;
  close(): Promise<void>;
}

interface DbRecord {
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
const MAX_DEPTH = 32;
const MIN_PAGE_SIZE = 512;
const MAX_PAGE_SIZE = 65536;

/** A branch or leaf page whose layout was checked: every node lies inside the page. */
interface Page {
  pgno: number;
  bytes: Uint8Array;
  dv: DataView;
  leaf: boolean;
  /** Offsets of the nodes in the page. */
  offsets: number[];
}

/**
 * A read-only view of an LMDB data-format-1 database (main database only, no lock file).
 *
 * The file is not trusted: page numbers, page layouts, node and value sizes and the tree's shape
 * (every leaf at the depth the meta page records, no page reached twice, keys in order) are checked
 * before they are used, so a corrupt file ends in a {@link FormatError} naming the file, the page
 * and the field, not in a DataView range error or a wrong value.
 */
export class LmdbFileReader implements LmdbReadable {
  readonly entries: number;
  /** Height of the B+tree (0 when empty, 1 when the root is a leaf). */
  readonly depth: number;
  #cache = new Map<number, Page>();
  /** Bytes of pages kept in the cache (4096 pages of 4 KiB; fewer when pages are bigger). */
  static readonly CACHE_BYTES = 16 << 20;

  private constructor(
    readonly path: string,
    private readonly file: FileHandle,
    readonly pageSize: number,
    /** Whole pages in the file. */
    private readonly filePages: number,
    private readonly main: DbRecord,
  ) {
    this.entries = main.entries;
    this.depth = main.depth;
  }

  /** Opens `path` (an environment folder holding `data.mdb`, or the data file itself). */
  static async open(path: string): Promise<LmdbFileReader> {
    const file = await dataFilePath(path);
    const fh = await openFileHandle(file, "r");
    try {
      const size = (await fh.stat()).size;
      const head = new Uint8Array(PAGE_HEADER + 136);
      const m0 = await readMeta(fh, 0, head, file);
      // Like LMDB, both meta pages must be valid, the second one page size after the first.
      const m1 = await readMeta(fh, m0.pageSize, head, file);
      if (m1.pageSize !== m0.pageSize) {
        throw new FormatError(
          `${file}: corrupt LMDB meta pages (page size ${m0.pageSize} in meta page 0, ` +
            `${m1.pageSize} in meta page 1)`,
        );
      }
      const meta = m1.txnid > m0.txnid ? m1 : m0;
      const which = `meta page ${meta === m1 ? 1 : 0}`;
      // Persistent flags (REVERSEKEY, DUPSORT, INTEGERKEY, ...) change key order or value layout.
      if (meta.main.flags & 0x7e) {
        throw new FormatError(
          `${file}: unsupported LMDB database flags 0x${meta.main.flags.toString(16)} (${which})`,
        );
      }
      const filePages = Math.floor(size / meta.pageSize);
      const { root, depth, entries } = meta.main;
      if (root === P_INVALID) {
        if (depth !== 0 || entries !== 0) {
          throw new FormatError(
            `${file}: corrupt LMDB ${which}: empty tree with depth ${depth} and ${entries} entries`,
          );
        }
      } else if (root < 2n || root >= BigInt(filePages)) {
        throw new FormatError(
          `${file}: corrupt LMDB ${which}: root page ${root} is not a data page of the file ` +
            `(${filePages} pages of ${meta.pageSize} bytes)`,
        );
      } else if (depth < 1 || depth > MAX_DEPTH) {
        throw new FormatError(
          `${file}: corrupt LMDB ${which}: tree depth ${depth} outside 1..${MAX_DEPTH}`,
        );
      }
      return new LmdbFileReader(file, fh, meta.pageSize, filePages, meta.main);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  #corrupt(what: string): FormatError {
    return new FormatError(`${this.path}: corrupt LMDB file (${what})`);
  }

  /** Checks a page number taken from the file before it becomes a file offset. */
  #pageNumber(pgno: bigint, what: string): number {
    if (pgno < 2n || pgno >= BigInt(this.filePages)) {
      throw this.#corrupt(
        `${what} names page ${pgno}, outside the data pages 2..${this.filePages - 1}`,
      );
    }
    return Number(pgno);
  }

  async #readAt(pos: number, len: number, what: string): Promise<Uint8Array> {
    const buf = new Uint8Array(len);
    let got = 0;
    while (got < len) {
      const { bytesRead } = await this.file.read(buf, got, len - got, pos + got);
      if (bytesRead === 0) {
        throw new FormatError(`${this.path}: truncated LMDB file reading ${what}`);
      }
      got += bytesRead;
    }
    return buf;
  }

  /** Reads, checks and caches branch or leaf page `pgno`; `from` says who pointed at it. */
  async #page(pgno: bigint, from: string): Promise<Page> {
    const n = this.#pageNumber(pgno, from);
    const hit = this.#cache.get(n);
    if (hit) return hit;
    const bytes = await this.#readAt(n * this.pageSize, this.pageSize, `page ${n}`);
    const page = this.#parsePage(n, bytes);
    if (this.#cache.size * this.pageSize >= LmdbFileReader.CACHE_BYTES) {
      this.#cache.delete(this.#cache.keys().next().value!);
    }
    this.#cache.set(n, page);
    return page;
  }

  #parsePage(n: number, bytes: Uint8Array): Page {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const named = dv.getBigUint64(0, true);
    if (named !== BigInt(n)) throw this.#corrupt(`page ${n}: header names page ${named}`);
    const flags = dv.getUint16(10, true);
    const kind = flags & (P_BRANCH | P_LEAF | P_OVERFLOW | P_META);
    if (kind !== P_BRANCH && kind !== P_LEAF) {
      throw this.#corrupt(`page ${n}: flags 0x${flags.toString(16)} are not a branch or leaf page`);
    }
    const lower = dv.getUint16(12, true);
    const upper = dv.getUint16(14, true);
    if (
      lower < PAGE_HEADER + 2 || (lower - PAGE_HEADER) % 2 !== 0 || upper < lower ||
      upper > this.pageSize
    ) {
      throw this.#corrupt(
        `page ${n}: free-space bounds lower ${lower}, upper ${upper} are impossible in a ` +
          `${this.pageSize}-byte page`,
      );
    }
    const leaf = kind === P_LEAF;
    const offsets: number[] = [];
    for (let i = 0; i < (lower - PAGE_HEADER) / 2; i++) {
      const off = dv.getUint16(PAGE_HEADER + 2 * i, true);
      const keyEnd = off + NODE_HEADER +
        (off + NODE_HEADER <= this.pageSize ? dv.getUint16(off + 6, true) : 0);
      let end = keyEnd;
      if (leaf && keyEnd <= this.pageSize) {
        const big = dv.getUint16(off + 4, true) & F_BIGDATA;
        end += big ? 8 : dv.getUint16(off, true) + dv.getUint16(off + 2, true) * 65536;
      }
      if (off < upper || off + NODE_HEADER > this.pageSize || end > this.pageSize) {
        throw this.#corrupt(
          `page ${n}: node ${i} at offset ${off} (${end - off} bytes) does not lie in the ` +
            `node area ${upper}..${this.pageSize}`,
        );
      }
      offsets.push(off);
    }
    return { pgno: n, bytes, dv, leaf, offsets };
  }

  #key(p: Page, off: number): Uint8Array {
    const ksize = p.dv.getUint16(off + 6, true);
    return p.bytes.subarray(off + NODE_HEADER, off + NODE_HEADER + ksize);
  }

  #child(p: Page, off: number): bigint {
    const lo = p.dv.getUint16(off, true);
    const hi = p.dv.getUint16(off + 2, true);
    const top = p.dv.getUint16(off + 4, true);
    return BigInt(lo) | (BigInt(hi) << 16n) | (BigInt(top) << 32n);
  }

  /** The page below `p` at `level` (root = 1), which must be a leaf exactly at the tree's depth. */
  async #descend(p: Page, off: number, level: number): Promise<Page> {
    const child = await this.#page(this.#child(p, off), `branch page ${p.pgno}`);
    if (child.leaf !== (level === this.depth)) {
      throw this.#corrupt(
        `page ${child.pgno} is a ${child.leaf ? "leaf" : "branch"} at level ${level} of a tree ` +
          `${this.depth} deep`,
      );
    }
    return child;
  }

  async #root(): Promise<Page> {
    const root = await this.#page(this.main.root, "the meta page's root");
    if (root.leaf !== (this.depth === 1)) {
      throw this.#corrupt(
        `root page ${root.pgno} is a ${root.leaf ? "leaf" : "branch"} in a tree ${this.depth} deep`,
      );
    }
    return root;
  }

  async #leafValue(p: Page, off: number): Promise<Uint8Array> {
    const dv = p.dv;
    const size = dv.getUint16(off, true) + dv.getUint16(off + 2, true) * 65536;
    const flags = dv.getUint16(off + 4, true);
    const dataOff = off + NODE_HEADER + dv.getUint16(off + 6, true);
    if (flags & (F_SUBDATA | F_DUPDATA)) {
      throw new FormatError(
        `${this.path}: named or duplicate-key LMDB databases are not supported (page ${p.pgno})`,
      );
    }
    if (!(flags & F_BIGDATA)) return p.bytes.slice(dataOff, dataOff + size);
    const ov = this.#pageNumber(dv.getBigUint64(dataOff, true), `leaf page ${p.pgno}`);
    const head = new DataView(
      (await this.#readAt(ov * this.pageSize, PAGE_HEADER, `overflow page ${ov}`)).buffer,
    );
    const pages = head.getUint32(12, true); // an overflow page keeps its page count in lower/upper
    if (
      head.getBigUint64(0, true) !== BigInt(ov) || (head.getUint16(10, true) & P_OVERFLOW) === 0
    ) {
      throw this.#corrupt(`page ${ov}, named by leaf page ${p.pgno}, is not an overflow page`);
    }
    if (pages < 1 || ov + pages > this.filePages || size > pages * this.pageSize - PAGE_HEADER) {
      throw this.#corrupt(
        `overflow page ${ov}: ${pages} pages cannot hold the ${size}-byte value of leaf page ` +
          `${p.pgno} in a file of ${this.filePages} pages`,
      );
    }
    return await this.#readAt(ov * this.pageSize + PAGE_HEADER, size, `overflow page ${ov}`);
  }

  /** The value under `key`, or undefined when absent. */
  async get(key: Uint8Array): Promise<Uint8Array | undefined> {
    if (this.main.root === P_INVALID) return undefined;
    let page = await this.#root();
    for (let level = 2; !page.leaf; level++) {
      // Last child whose separator key is <= key; node 0's key is implicitly -infinity.
      const offsets = page.offsets;
      let lo = 1;
      let hi = offsets.length - 1;
      let idx = 0;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (compareKeys(this.#key(page, offsets[mid]), key) <= 0) {
          idx = mid;
          lo = mid + 1;
        } else hi = mid - 1;
      }
      page = await this.#descend(page, offsets[idx], level);
    }
    const offsets = page.offsets;
    let lo = 0;
    let hi = offsets.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const c = compareKeys(this.#key(page, offsets[mid]), key);
      if (c === 0) return await this.#leafValue(page, offsets[mid]);
      if (c < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return undefined;
  }

  /**
   * All keys in key order. The walk is iterative; a page reached twice, keys out of order or a
   * count that differs from the meta page's are corruption.
   */
  async *keys(): AsyncIterable<Uint8Array> {
    if (this.main.root === P_INVALID) return;
    const seen = new Set<number>();
    const stack: { page: Page; next: number; level: number }[] = [];
    const enter = (page: Page, level: number) => {
      if (seen.has(page.pgno)) throw this.#corrupt(`page ${page.pgno} is reached twice`);
      seen.add(page.pgno);
      stack.push({ page, next: 0, level });
    };
    enter(await this.#root(), 1);
    let prev: Uint8Array | undefined;
    let count = 0;
    while (stack.length > 0) {
      const top = stack[stack.length - 1];
      if (top.next >= top.page.offsets.length) {
        stack.pop();
        continue;
      }
      const off = top.page.offsets[top.next++];
      if (!top.page.leaf) {
        enter(await this.#descend(top.page, off, top.level + 1), top.level + 1);
        continue;
      }
      const key = this.#key(top.page, off).slice();
      if (prev !== undefined && compareKeys(prev, key) >= 0) {
        throw this.#corrupt(`keys out of order in leaf page ${top.page.pgno}`);
      }
      prev = key;
      count++;
      yield key;
    }
    if (count !== this.entries) {
      throw this.#corrupt(`the tree holds ${count} keys, the meta page says ${this.entries}`);
    }
  }

  async close(): Promise<void> {
    this.#cache.clear();
    await this.file.close();
  }
}

interface Meta {
  pageSize: number;
  txnid: bigint;
  main: DbRecord;
}

async function readMeta(
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

/**
 * Opens any LMDB database read-only: format 1 with {@link LmdbFileReader}, format 2 (made by the
 * npm `lmdb` package) through that package.
 */
export async function openLmdbReader(path: string): Promise<LmdbReadable> {
  try {
    return await LmdbFileReader.open(path);
  } catch (err) {
    if (!(err instanceof LmdbFormat2Error)) throw err;
  }
  const { open } = await import("lmdb");
  const db = open({ path, readOnly: true, encoding: "binary", keyEncoding: "binary" });
  const stats = db.getStats() as { entryCount: number };
  return {
    entries: stats.entryCount,
    get(key: Uint8Array) {
      const v = db.getBinary(key as unknown as Buffer);
      return Promise.resolve(v ? new Uint8Array(v) : undefined);
    },
    async *keys() {
      for (const k of db.getKeys()) yield new Uint8Array(k as unknown as Uint8Array);
    },
    close: () => db.close(),
  };
}

interface PendingEntry {
  key: Uint8Array;
  /** Value kept inline in the leaf, or undefined when it lives on overflow pages. */
  inline?: Uint8Array;
  overflowPgno: number;
  size: number;
}

function even(n: number): number {
  return (n + 1) & ~1;
}

/**
 * Writes a new LMDB data-format-1 database that LMDB 0.9 (Python's `lmdb`) reads and can go on
 * writing. Entries may come in any key order; large values stream to disk as they arrive and the
 * B+tree is built on {@link LmdbBulkWriter.finish}. Keys stay in memory until then.
 */
export class LmdbBulkWriter {
  #entries: PendingEntry[] = [];
  #seen = new Set<string>();
  #nextPgno = 2; // pages 0 and 1 are the meta pages, written last
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #overflowPages = 0;
  readonly #nodeMax: number;

  private constructor(
    readonly dataPath: string,
    private readonly file: Deno.FsFile,
    readonly pageSize: number,
  ) {
    // LMDB's me_nodemax: a leaf node bigger than this moves its value to overflow pages.
    this.#nodeMax = (((pageSize - PAGE_HEADER) / 2) & ~1) - 2;
  }

  /** Creates `<dir>/data.mdb` (the folder is created; an existing data file is an error). */
  static async create(dir: string, pageSize = DEFAULT_PAGE_SIZE): Promise<LmdbBulkWriter> {
    await Deno.mkdir(dir, { recursive: true });
    const dataPath = join(dir, "data.mdb");
    const file = await Deno.open(dataPath, { write: true, createNew: true }).catch((err) => {
      throw new Error(`cannot create LMDB data file ${dataPath}: ${err.message}`, { cause: err });
    });
    await file.seek(2 * pageSize, Deno.SeekMode.Start);
    return new LmdbBulkWriter(dataPath, file, pageSize);
  }

  /** Number of entries put so far. */
  get size(): number {
    return this.#entries.length;
  }

  async #append(bytes: Uint8Array) {
    this.#pending.push(bytes);
    this.#pendingBytes += bytes.length;
    if (this.#pendingBytes >= 8 << 20) await this.flush();
  }

  /** Writes buffered pages to the file (done automatically every 8 MiB and at the end). */
  async flush(): Promise<void> {
    for (const chunk of this.#pending) {
      let done = 0;
      while (done < chunk.length) done += await this.file.write(chunk.subarray(done));
    }
    this.#pending = [];
    this.#pendingBytes = 0;
  }

  /** Adds an entry; a repeated key is an error. */
  async put(key: Uint8Array, value: Uint8Array): Promise<void> {
    if (key.length === 0 || key.length > LMDB_MAX_KEY_SIZE) {
      throw new Error(
        `${this.dataPath}: LMDB key length ${key.length} outside 1..${LMDB_MAX_KEY_SIZE}`,
      );
    }
    if (value.length > 0xffffffff) throw new Error(`${this.dataPath}: value too large`);
    const id = String.fromCharCode(...key);
    if (this.#seen.has(id)) {
      throw new Error(`${this.dataPath}: duplicate LMDB key ${JSON.stringify(id)}`);
    }
    this.#seen.add(id);
    const k = key.slice();
    if (NODE_HEADER + key.length + value.length <= this.#nodeMax) {
      this.#entries.push({ key: k, inline: value.slice(), overflowPgno: 0, size: value.length });
      return;
    }
    const pages = Math.floor((PAGE_HEADER - 1 + value.length) / this.pageSize) + 1;
    const buf = new Uint8Array(pages * this.pageSize);
    const dv = new DataView(buf.buffer);
    const pgno = this.#nextPgno;
    dv.setBigUint64(0, BigInt(pgno), true);
    dv.setUint16(10, P_OVERFLOW, true);
    dv.setUint32(12, pages, true);
    buf.set(value, PAGE_HEADER);
    this.#nextPgno += pages;
    this.#overflowPages += pages;
    this.#entries.push({ key: k, overflowPgno: pgno, size: value.length });
    await this.#append(buf);
  }

  /** Packs items into pages holding at most `capacity` bytes; avoids a lone item on the last page. */
  #pack<T>(items: T[], sizeOf: (item: T) => number): T[][] {
    const capacity = this.pageSize - PAGE_HEADER;
    const groups: T[][] = [];
    let cur: T[] = [];
    let used = 0;
    for (const item of items) {
      const sz = sizeOf(item) + 2; // node + its offset slot
      if (cur.length > 0 && used + sz > capacity) {
        groups.push(cur);
        cur = [];
        used = 0;
      }
      cur.push(item);
      used += sz;
    }
    if (cur.length) groups.push(cur);
    const n = groups.length;
    if (n > 1 && groups[n - 1].length === 1 && groups[n - 2].length > 2) {
      groups[n - 1].unshift(groups[n - 2].pop()!);
    }
    return groups;
  }

  #newPage(flags: number): { page: Uint8Array; dv: DataView; pgno: number } {
    const page = new Uint8Array(this.pageSize);
    const dv = new DataView(page.buffer);
    const pgno = this.#nextPgno++;
    dv.setBigUint64(0, BigInt(pgno), true);
    dv.setUint16(10, flags, true);
    return { page, dv, pgno };
  }

  /** Places nodes from the end of the page down, offsets after the header (as LMDB does). */
  #fillNodes(page: Uint8Array, dv: DataView, nodes: Uint8Array[]) {
    let upper = this.pageSize;
    nodes.forEach((node, i) => {
      upper -= even(node.length);
      page.set(node, upper);
      dv.setUint16(PAGE_HEADER + 2 * i, upper, true);
    });
    dv.setUint16(12, PAGE_HEADER + 2 * nodes.length, true);
    dv.setUint16(14, upper, true);
  }

  #leafNode(e: PendingEntry): Uint8Array {
    const dataLen = e.inline ? e.inline.length : 8;
    const node = new Uint8Array(NODE_HEADER + e.key.length + dataLen);
    const dv = new DataView(node.buffer);
    dv.setUint16(0, e.size & 0xffff, true);
    dv.setUint16(2, Math.floor(e.size / 65536), true);
    dv.setUint16(4, e.inline ? 0 : F_BIGDATA, true);
    dv.setUint16(6, e.key.length, true);
    node.set(e.key, NODE_HEADER);
    if (e.inline) node.set(e.inline, NODE_HEADER + e.key.length);
    else dv.setBigUint64(NODE_HEADER + e.key.length, BigInt(e.overflowPgno), true);
    return node;
  }

  #branchNode(key: Uint8Array, child: number): Uint8Array {
    const node = new Uint8Array(NODE_HEADER + key.length);
    const dv = new DataView(node.buffer);
    dv.setUint16(0, child & 0xffff, true);
    dv.setUint16(2, Math.floor(child / 65536) & 0xffff, true);
    dv.setUint16(4, Math.floor(child / 2 ** 32) & 0xffff, true);
    dv.setUint16(6, key.length, true);
    node.set(key, NODE_HEADER);
    return node;
  }

  /** Builds the B+tree, writes the meta pages, syncs and closes the file. */
  async finish(): Promise<void> {
    const entries = this.#entries.sort((a, b) => compareKeys(a.key, b.key));
    let leafPages = 0;
    let branchPages = 0;
    let depth = 0;
    let root = P_INVALID;
    if (entries.length > 0) {
      // Leaves, then branch levels until one page remains: the root.
      let level: { key: Uint8Array; pgno: number }[] = [];
      for (
        const group of this.#pack(
          entries,
          (e) => even(NODE_HEADER + e.key.length + (e.inline?.length ?? 8)),
        )
      ) {
        const { page, dv, pgno } = this.#newPage(P_LEAF);
        this.#fillNodes(page, dv, group.map((e) => this.#leafNode(e)));
        await this.#append(page);
        level.push({ key: group[0].key, pgno });
        leafPages++;
      }
      depth = 1;
      while (level.length > 1) {
        const next: typeof level = [];
        for (const group of this.#pack(level, (c) => even(NODE_HEADER + c.key.length))) {
          const { page, dv, pgno } = this.#newPage(P_BRANCH);
          const nodes = group.map((c, i) =>
            this.#branchNode(i === 0 ? new Uint8Array(0) : c.key, c.pgno)
          );
          this.#fillNodes(page, dv, nodes);
          await this.#append(page);
          next.push({ key: group[0].key, pgno });
          branchPages++;
        }
        level = next;
        depth++;
      }
      root = BigInt(level[0].pgno);
    }
    await this.flush();
    const lastPg = this.#nextPgno - 1;
    const fileSize = (lastPg + 1) * this.pageSize;
    const gib = 2 ** 30;
    const mapSize = Math.max(gib, Math.ceil(fileSize / gib) * gib);
    const meta0 = this.#meta(0, 0n, 1, mapSize, {
      depth: 0,
      branch: 0,
      leaf: 0,
      overflow: 0,
      entries: 0,
      root: P_INVALID,
    });
    const meta1 = this.#meta(1, 1n, lastPg, mapSize, {
      depth,
      branch: branchPages,
      leaf: leafPages,
      overflow: this.#overflowPages,
      entries: entries.length,
      root,
    });
    await this.file.seek(0, Deno.SeekMode.Start);
    for (const m of [meta0, meta1]) {
      let done = 0;
      while (done < m.length) done += await this.file.write(m.subarray(done));
    }
    await this.file.sync();
    this.file.close();
    this.#entries = [];
    this.#seen.clear();
  }

  #meta(
    pgno: number,
    txnid: bigint,
    lastPg: number,
    mapSize: number,
    main: {
      depth: number;
      branch: number;
      leaf: number;
      overflow: number;
      entries: number;
      root: bigint;
    },
  ): Uint8Array {
    const page = new Uint8Array(this.pageSize);
    const dv = new DataView(page.buffer);
    dv.setBigUint64(0, BigInt(pgno), true);
    dv.setUint16(10, P_META, true);
    dv.setUint32(16, MDB_MAGIC, true);
    dv.setUint32(20, 1, true); // data format 1
    dv.setBigUint64(24, 0n, true); // mm_address
    dv.setBigUint64(32, BigInt(mapSize), true);
    // Free-page database: empty; its md_pad holds the page size, its flags INTEGERKEY.
    dv.setUint32(40, this.pageSize, true);
    dv.setUint16(44, MDB_INTEGERKEY, true);
    dv.setBigUint64(80, P_INVALID, true);
    // Main database.
    dv.setUint16(94, main.depth, true);
    dv.setBigUint64(96, BigInt(main.branch), true);
    dv.setBigUint64(104, BigInt(main.leaf), true);
    dv.setBigUint64(112, BigInt(main.overflow), true);
    dv.setBigUint64(120, BigInt(main.entries), true);
    dv.setBigUint64(128, main.root, true);
    dv.setBigUint64(136, BigInt(lastPg), true);
    dv.setBigUint64(144, txnid, true);
    return page;
  }

  /** Abandons the database: closes and deletes the data file. */
  async abort(): Promise<void> {
    try {
      this.file.close();
    } catch { /* already closed */ }
    await Deno.remove(this.dataPath).catch(() => {});
  }
}
