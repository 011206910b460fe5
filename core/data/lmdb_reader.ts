/**
 * Reading LMDB databases: {@link LmdbFileReader} reads data-format-1 files (the layout is in
 * `lmdb_format.ts`) without trusting them, and {@link openLmdbReader} hands format-2 files (written
 * by the npm `lmdb` package, whose bundled LMDB crashes on format 1) to that package.
 *
 * @module
 */

import { open as openFileHandle } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { FormatError } from "../io/format_error.ts";
import {
  compareKeys,
  dataFilePath,
  type DbRecord,
  F_BIGDATA,
  F_DUPDATA,
  F_SUBDATA,
  LmdbFormat2Error,
  MAX_DEPTH,
  NODE_HEADER,
  P_BRANCH,
  P_INVALID,
  P_LEAF,
  P_META,
  P_OVERFLOW,
  PAGE_HEADER,
  readMeta,
} from "./lmdb_format.ts";

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
