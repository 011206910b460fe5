import assert from "node:assert/strict";
import {
  compareKeys,
  LmdbBulkWriter,
  LmdbFileReader,
  openLmdbReader,
} from "../../core/data/lmdb_file.ts";

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
  // The npm package keeps a process-exit hook and native handles; both are its own.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      const { open } = await import("lmdb");
      const db = open({ path: `${dir}/db`, encoding: "binary", keyEncoding: "binary" });
      await db.put(enc.encode("a") as unknown as Buffer, enc.encode("alpha") as unknown as Buffer);
      await db.put(enc.encode("b") as unknown as Buffer, enc.encode("beta") as unknown as Buffer);
      await db.close();
      const r = await openLmdbReader(`${dir}/db`);
      assert.equal(r.entries, 2);
      assert.equal(dec.decode((await r.get(enc.encode("b")))!), "beta");
      await r.close();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
