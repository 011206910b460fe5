import assert from "node:assert/strict";
import { compareKeys, LmdbBulkWriter, LmdbFileReader } from "../../core/data/lmdb_file.ts";
import { openLmdbPairStore } from "../../core/data/pair_store.ts";
import { FormatError } from "../../core/io/format_error.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const PYTHON = "/usr/bin/python3";
const READ_LMDB = new URL("../fixtures/data/read_lmdb.py", import.meta.url).pathname;

/** Value i: length varies so some stay in the leaf and some go to overflow pages. */
function valueOf(i: number): Uint8Array<ArrayBuffer> {
  const len = i % 5 === 0 ? 3000 + 17 * i : i % 40;
  return Uint8Array.from({ length: len }, (_, j) => (i * 31 + j * 7) & 255);
}

async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function writeDb(dir: string, n: number): Promise<void> {
  const w = await LmdbBulkWriter.create(dir);
  // Insert out of key order on purpose: the writer sorts.
  for (let i = n - 1; i >= 0; i--) await w.put(enc.encode(String(i)), valueOf(i));
  await w.finish();
}

Deno.test("lmdb: bulk-written database reads back (leaf, overflow, missing keys)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeDb(dir, 500);
    const r = await LmdbFileReader.open(dir);
    assert.equal(r.entries, 500);
    for (const i of [0, 1, 5, 39, 250, 499]) {
      assert.deepEqual(await r.get(enc.encode(String(i))), valueOf(i));
    }
    assert.equal(await r.get(enc.encode("500")), undefined);
    assert.equal(await r.get(enc.encode("")), undefined);
    const keys: string[] = [];
    for await (const k of r.keys()) keys.push(dec.decode(k));
    assert.deepEqual(keys, Array.from({ length: 500 }, (_, i) => String(i)).sort());
    await r.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("lmdb: a three-level tree and byte-order keys", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const w = await LmdbBulkWriter.create(dir);
    const n = 60000;
    for (let i = 0; i < n; i++) await w.put(enc.encode(`k${i}`), enc.encode(`v${i}`));
    await w.put(Uint8Array.of(0xff, 0), Uint8Array.of(1));
    await w.put(Uint8Array.of(0xff), Uint8Array.of(2));
    await assert.rejects(w.put(enc.encode("k7"), enc.encode("again")), /duplicate LMDB key "k7"/);
    await w.finish();
    const r = await LmdbFileReader.open(`${dir}/data.mdb`);
    assert.equal(r.entries, n + 2);
    assert.equal(r.depth, 3);
    for (const i of [0, 1, 9999, 12345, 59999]) {
      assert.equal(dec.decode((await r.get(enc.encode(`k${i}`)))!), `v${i}`);
    }
    assert.deepEqual(await r.get(Uint8Array.of(0xff)), Uint8Array.of(2));
    assert.deepEqual(await r.get(Uint8Array.of(0xff, 0)), Uint8Array.of(1));
    let prev: Uint8Array | undefined;
    let count = 0;
    for await (const k of r.keys()) {
      if (prev) assert.ok(compareKeys(prev, k) < 0);
      prev = k;
      count++;
    }
    assert.equal(count, n + 2);
    await r.close();
    if (hasPythonLmdb()) {
      const out = new Deno.Command(PYTHON, { args: [READ_LMDB, dir] }).outputSync();
      assert.ok(out.success, dec.decode(out.stderr));
      const seen = JSON.parse(dec.decode(out.stdout));
      assert.equal(seen.depth, 3);
      assert.equal(Object.keys(seen.items).length, n + 2);
      assert.equal(seen.items["k12345"], await sha256(enc.encode("v12345")));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("lmdb: reading errors name the file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(LmdbFileReader.open(`${dir}/nope`), /LMDB database .*nope not found/);
    await Deno.writeFile(`${dir}/data.mdb`, new Uint8Array(8192));
    await assert.rejects(LmdbFileReader.open(dir), /data\.mdb: not an LMDB file/);
    await assert.rejects(LmdbBulkWriter.create(dir), /cannot create LMDB data file/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** python-lmdb is a test dependency installed in CI; elsewhere the interop checks skip. */
function probePythonLmdb(): boolean {
  try {
    const out = new Deno.Command(PYTHON, { args: ["-c", "import lmdb"], stderr: "null" })
      .outputSync();
    return out.success;
  } catch {
    return false;
  }
}
const PYTHON_LMDB = probePythonLmdb();
const hasPythonLmdb = () => PYTHON_LMDB;

Deno.test({
  name: "lmdb: Python's lmdb (LMDB 0.9) reads our database and can write to it",
  ignore: !hasPythonLmdb(),
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      await writeDb(dir, 300);
      const run = (extra: string[]) => {
        const out = new Deno.Command(PYTHON, { args: [READ_LMDB, dir, ...extra] }).outputSync();
        assert.ok(out.success, dec.decode(out.stderr));
        return JSON.parse(dec.decode(out.stdout));
      };
      const seen = run([]);
      assert.equal(seen.entries, 300);
      assert.equal(Object.keys(seen.items).length, 300);
      for (let i = 0; i < 300; i++) {
        assert.equal(seen.items[String(i)], await sha256(valueOf(i)), `key ${i}`);
      }
      // LMDB appends to our file; we read its update.
      const after = run(["--append", "zz", "hello"]);
      assert.equal(after.entries, 301);
      const r = await LmdbFileReader.open(dir);
      assert.equal(dec.decode((await r.get(enc.encode("zz")))!), "hello");
      assert.deepEqual(await r.get(enc.encode("123")), valueOf(123));
      await r.close();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
if (!hasPythonLmdb()) {
  console.warn(`skipping the python-lmdb interop test: ${PYTHON} with lmdb not found`);
}

Deno.test({
  name: "lmdb: format-2 databases of the npm lmdb package open through it",
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      // In a child process: see _lmdb_npm_child.ts for why.
      const child = new URL("./_lmdb_npm_child.ts", import.meta.url).pathname;
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", child, dir],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      assert.deepEqual(JSON.parse(text.trim().split("\n").at(-1)!), { entries: 2, b: "beta" });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** Reads everything a reader offers: every key, then every value. */
async function readAll(path: string): Promise<number> {
  const r = await LmdbFileReader.open(path);
  try {
    const keys: Uint8Array[] = [];
    for await (const k of r.keys()) keys.push(k);
    for (const k of keys) await r.get(k);
    for (const i of [0, 5, 250, 499]) await r.get(enc.encode(String(i)));
    return keys.length;
  } finally {
    await r.close();
  }
}

/** Page `pgno` of a data file as a DataView (4096-byte pages, as LmdbBulkWriter writes). */
const pageView = (file: Uint8Array, pgno: number) =>
  new DataView(file.buffer, file.byteOffset + pgno * 4096, 4096);

Deno.test("lmdb: corrupt files end in errors naming the file, page and field", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeDb(`${dir}/good`, 500);
    const good = await Deno.readFile(`${dir}/good/data.mdb`);
    assert.equal(await readAll(`${dir}/good`), 500);
    const meta1 = pageView(good, 1);
    const root = Number(meta1.getBigUint64(128, true));
    assert.equal(meta1.getUint16(94, true), 2, "the fixture is two levels deep");
    const rootPage = pageView(good, root);
    assert.equal(rootPage.getUint16(10, true), 1, "root is a branch");
    const nodeOff = (p: DataView, i: number) => p.getUint16(16 + 2 * i, true);
    const child = (i: number) => rootPage.getUint16(nodeOff(rootPage, i), true);
    const leaf = pageView(good, child(0));
    // An overflow page: the first F_BIGDATA node of the first leaf names it.
    let overflow = -1;
    for (let i = 0; overflow < 0; i++) {
      const off = nodeOff(leaf, i);
      if (leaf.getUint16(off + 4, true) & 1) {
        overflow = Number(leaf.getBigUint64(off + 8 + leaf.getUint16(off + 6, true), true));
      }
    }

    let n = 0;
    const corrupt = async (what: string, edit: (f: Uint8Array) => void, want: RegExp) => {
      const f = good.slice();
      edit(f);
      const sub = `${dir}/c${n++}`;
      await Deno.mkdir(sub);
      await Deno.writeFile(`${sub}/data.mdb`, f);
      await assert.rejects(
        readAll(sub),
        (err: Error) => {
          assert.ok(err instanceof FormatError, `${what}: ${err.name}: ${err.message}`);
          assert.ok(err.message.startsWith(`${sub}/data.mdb: `), `${what}: ${err.message}`);
          assert.match(err.message, want, what);
          return true;
        },
      );
    };
    const u16 = (pg: number, at: number, v: number) => (f: Uint8Array) =>
      pageView(f, pg).setUint16(at, v, true);
    const u32 = (pg: number, at: number, v: number) => (f: Uint8Array) =>
      pageView(f, pg).setUint32(at, v, true);
    const u64 = (pg: number, at: number, v: bigint) => (f: Uint8Array) =>
      pageView(f, pg).setBigUint64(at, v, true);

    // Meta pages: the page size (was reported as "no __len__ entry"), magic, root, depth.
    await corrupt("page size 3000", u32(0, 40, 3000), /meta page 0: page size 3000 is not a power/);
    await corrupt("page size 8192", u32(0, 40, 8192), /meta page 1 at byte 8192 has a bad magic/);
    await corrupt("page size 0", u32(0, 40, 0), /page size 0 is not a power of two/);
    await corrupt("meta 1 magic", u32(1, 16, 0), /meta page 1 at byte 4096 has a bad magic/);
    await corrupt("root", u64(1, 128, 1n << 40n), /meta page 1: root page 1099511627776 is not/);
    await corrupt("root = meta", u64(1, 128, 0n), /root page 0 is not a data page/);
    await corrupt("depth 0", u16(1, 94, 0), /meta page 1: tree depth 0 outside 1\.\.32/);
    await corrupt("depth 1", u16(1, 94, 1), /root page \d+ is a branch in a tree 1 deep/);
    await corrupt("depth 3", u16(1, 94, 3), /page \d+ is a leaf at level 2 of a tree 3 deep/);
    await corrupt("entries", u64(1, 120, 499n), /the tree holds 500 keys, the meta page says 499/);
    // Page layout: lower/upper, node offsets, page numbers, page kinds.
    await corrupt("leaf lower", u16(child(0), 12, 5000), /page \d+: free-space bounds lower 5000/);
    await corrupt("leaf lower 0", u16(child(0), 12, 0), /free-space bounds lower 0, upper/);
    await corrupt("upper", u16(child(0), 14, 9), /free-space bounds lower \d+, upper 9 are/);
    await corrupt(
      "node offset",
      (f) => pageView(f, child(0)).setUint16(16, 4093, true),
      /page \d+: node 0 at offset 4093 .* does not lie in the node area/,
    );
    await corrupt(
      "key size",
      (f) => pageView(f, child(0)).setUint16(nodeOff(leaf, 0) + 6, 60000, true),
      /page \d+: node 0 at offset \d+ \(\d+ bytes\) does not lie in the node area/,
    );
    await corrupt(
      "inline value size",
      (f) => pageView(f, child(0)).setUint16(nodeOff(leaf, 1) + 2, 3, true),
      /node 1 at offset \d+ \(\d+ bytes\) does not lie/,
    );
    await corrupt("page number", u64(child(0), 0, 77n), /page \d+: header names page 77/);
    await corrupt("page kind", u16(child(0), 10, 4), /flags 0x4 are not a branch or leaf page/);
    await corrupt(
      "child out of range",
      (f) => pageView(f, root).setUint16(nodeOff(rootPage, 1) + 4, 0x7fff, true),
      /branch page \d+ names page 140733193388\d+, outside the data pages 2\.\.\d+/,
    );
    await corrupt(
      "child is the root",
      (f) => pageView(f, root).setUint16(nodeOff(rootPage, 1), root, true),
      /page \d+ is a branch at level 2 of a tree 2 deep/,
    );
    await corrupt(
      "shared child",
      (f) => pageView(f, root).setUint16(nodeOff(rootPage, 1), child(0), true),
      /page \d+ is reached twice|keys out of order/,
    );
    await corrupt(
      "keys out of order",
      (f) => {
        // Swap the first bytes of two keys in the first leaf.
        const p = pageView(f, child(0));
        const a = nodeOff(leaf, 1) + 8;
        const b = nodeOff(leaf, 2) + 8;
        const x = p.getUint8(a);
        p.setUint8(a, p.getUint8(b) + 1);
        p.setUint8(b, x);
      },
      /keys out of order in leaf page \d+/,
    );
    // Overflow pages: pointer, kind, page count.
    await corrupt(
      "overflow pointer",
      (f) => {
        const off = nodeOff(leaf, 0);
        pageView(f, child(0)).setBigUint64(off + 8 + leaf.getUint16(off + 6, true), 1n, true);
      },
      /leaf page \d+ names page 1, outside the data pages/,
    );
    await corrupt(
      "overflow kind",
      u16(overflow, 10, 2),
      /page \d+, named by leaf page \d+, is not an overflow page/,
    );
    await corrupt(
      "overflow count",
      u32(overflow, 12, 0),
      /overflow page \d+: 0 pages cannot hold the 3000-byte value/,
    );
    await corrupt("overflow count big", u32(overflow, 12, 1e9), /1000000000 pages cannot hold/);
    // Truncated file: a page past the end.
    await corrupt(
      "truncated",
      (f) => pageView(f, 1).setBigUint64(128, BigInt(good.length / 4096), true),
      /root page \d+ is not a data page of the file \(\d+ pages of 4096 bytes\)/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("lmdb pair store: a corrupt page size or __keys__ is named, not 'no __len__'", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const w = await LmdbBulkWriter.create(dir);
    await w.put(enc.encode("__len__"), enc.encode("1"));
    await w.put(enc.encode("__keys__"), enc.encode('["0", '));
    await w.put(enc.encode("0"), new Uint8Array(8));
    await w.finish();
    await assert.rejects(
      openLmdbPairStore(dir),
      (err: Error) =>
        err instanceof FormatError &&
        /^.*: __keys__ is not JSON \(.*\)$/.test(err.message) && err.message.startsWith(dir),
    );
    const f = await Deno.readFile(`${dir}/data.mdb`);
    new DataView(f.buffer).setUint32(40, 16384, true);
    await Deno.writeFile(`${dir}/data.mdb`, f);
    await assert.rejects(
      openLmdbPairStore(dir),
      /data\.mdb: corrupt LMDB file \(meta page 1 at byte 16384, .* lies past the end of the file\)/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
