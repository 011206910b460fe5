/**
 * Writing LMDB databases: {@link LmdbBulkWriter} builds a new data-format-1 file (the layout is in
 * `lmdb_format.ts`) bottom-up, leaves then branch levels, and writes the meta pages last.
 *
 * @module
 */

import { join } from "node:path";
import {
  compareKeys,
  DEFAULT_PAGE_SIZE,
  F_BIGDATA,
  LMDB_MAX_KEY_SIZE,
  MDB_INTEGERKEY,
  MDB_MAGIC,
  NODE_HEADER,
  P_BRANCH,
  P_INVALID,
  P_LEAF,
  P_META,
  P_OVERFLOW,
  PAGE_HEADER,
} from "./lmdb_format.ts";

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
