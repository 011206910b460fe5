/**
 * `data2lmdb --format original`: the LMDB the original Python tool's training reads. Checked with
 * Python's lmdb + pickle + numpy (tests/fixtures/data/read_original_lmdb.py reads it exactly as the
 * original's data set does and compares every pair with np.load), byte for byte against CPython's
 * pickle.dumps of the same objects (numpy 1.x), and read back by this project's own reader.
 * The Python checks are skipped, with the reason printed, where python3 lacks lmdb or numpy.
 */
import assert from "node:assert/strict";
import { data2lmdb } from "../../core/data/data2lmdb.ts";
import { openLmdbPairStore, pairNpyPath, pairPaths } from "../../core/data/pair_store.ts";
import { openPairDataset } from "../../core/data/dataset.ts";
import { readNpy } from "../../core/data/npy.ts";
import {
  pickleOriginalKeys,
  pickleOriginalLength,
  pickleOriginalPair,
} from "../../core/data/original_lmdb_writer.ts";
import { decodeOriginalKeys, decodeOriginalLength } from "../../core/data/original_lmdb_value.ts";
import {
  pickleDumps,
  PickleGlobal,
  PickleTuple,
  type PickleValue,
} from "../../core/io/pickle_writer.ts";
import { makePairRoot } from "./helpers.ts";

const SCRIPT = new URL("../fixtures/data/read_original_lmdb.py", import.meta.url).pathname;
const dec = new TextDecoder();
const enc = new TextEncoder();

/** A python3 with numpy and lmdb, or the reason there is none. */
async function findPython(): Promise<{ exe: string | null; why: string }> {
  const tried: string[] = [];
  for (const exe of ["/usr/bin/python3", "python3"]) {
    const out = await new Deno.Command(exe, {
      args: ["-c", "import lmdb, numpy"],
      stdout: "null",
      stderr: "piped",
    }).output().catch((e) => ({ success: false, stderr: enc.encode(String(e)) }));
    if (out.success) return { exe, why: "" };
    tried.push(`${exe}: ${dec.decode(out.stderr).trim().split("\n").pop()}`);
  }
  return { exe: null, why: tried.join("; ") };
}
const PY = await findPython();
if (!PY.exe) console.log(`original-format LMDB: Python checks skipped (${PY.why})`);

async function python(args: string[]): Promise<unknown> {
  const out = await new Deno.Command(PY.exe!, { args: [SCRIPT, ...args] }).output();
  assert.ok(out.success, dec.decode(out.stderr));
  return JSON.parse(dec.decode(out.stdout));
}

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

Deno.test({
  name: "original LMDB values: the bytes CPython's pickle.dumps writes (numpy 1.x)",
  ignore: !PY.exe,
  async fn() {
    // Around the 64 KiB frame size: inside a frame, exactly at it, beyond it; lists of keys over
    // several APPENDS batches and frames; ints over every integer opcode.
    const shapes = [[2, 1, 1, 1], [2, 4, 2, 3], [2, 4, 62, 64], [2, 4, 64, 64], [2, 4, 64, 65]];
    const counts = [0, 1, 2, 255, 256, 1000, 1001, 65536, 30000];
    const ints = [65535, 2 ** 31 - 1, 2 ** 31, 5_000_000_000, 2 ** 53 - 1];
    const py = await python([
      "--dumps",
      JSON.stringify(shapes),
      JSON.stringify(counts),
      JSON.stringify(ints),
    ]) as {
      numpy: string;
      pairs: Record<string, string>;
      lengths: Record<string, string>;
      keys: Record<string, string>;
    };
    for (const n of counts) {
      assert.equal(hex(pickleOriginalLength(n)), py.lengths[n], `__len__ ${n}`);
      const keys = Array.from({ length: n }, (_, i) => enc.encode(String(i)));
      assert.equal(hex(pickleOriginalKeys(keys)), py.keys[n], `__keys__ of ${n}`);
    }
    for (const n of ints) assert.equal(hex(pickleOriginalLength(n)), py.lengths[n], `int ${n}`);
    const numpy2 = Number(py.numpy.split(".")[0]) >= 2;
    for (const shape of shapes) {
      const n = shape.reduce((a, b) => a * b, 1);
      const data = Uint16Array.from({ length: n }, (_, i) => (i * 37) & 0x7bff);
      const ours = hex(pickleOriginalPair({ dtype: "<f2", shape, data }, "test"));
      if (numpy2) {
        // numpy 2 writes the dtype's name string again (6 bytes more); same object when loaded.
        assert.equal(ours.length + 12, py.pairs[shape.join("x")].length, `pair [${shape}]`);
      } else assert.equal(ours, py.pairs[shape.join("x")], `pair [${shape}]`);
    }
    if (numpy2) console.log(`numpy ${py.numpy}: pair values compared by length only`);
  },
});

Deno.test("data2lmdb --format original: the original's reader and ours both read every pair", async () => {
  const root = await Deno.makeTempDir({ prefix: "reflow_orig_lmdb_" });
  try {
    await makePairRoot(root, 7, [4, 3, 5]);
    const p = pairPaths(root);
    const res = await data2lmdb({ dpath: p.images, batchSize: 3, format: "original" });
    assert.deepEqual(res, {
      lmdbPath: p.lmdb,
      count: 7,
      format: "original",
      shape: [4, 3, 5],
    });

    if (PY.exe) {
      const r = await python([root]) as {
        length: number;
        length_type: string;
        keys: string[];
        key_types: string[];
        items: { same: boolean; class: string; shape: number[]; dtype: string; finite: boolean }[];
        captions: number;
      };
      assert.equal(r.length, 7);
      assert.equal(r.length_type, "int");
      assert.deepEqual(r.keys, ["0", "1", "2", "3", "4", "5", "6"]);
      assert.deepEqual(r.key_types, ["bytes"]);
      assert.equal(r.captions, 7);
      r.items.forEach((it, i) => {
        assert.deepEqual(it, {
          same: true,
          class: "LMDB_ndarray",
          shape: [2, 4, 3, 5],
          dtype: "float16",
          finite: true,
        }, `pair ${i}`);
      });
    }

    // Our reader takes it as the original's format and gives the npy files' contents.
    const store = await openLmdbPairStore(p.lmdb);
    try {
      assert.equal(store.length, 7);
      for (let i = 0; i < 7; i++) {
        const want = await readNpy(pairNpyPath(p.images, i));
        const got = await store.readPair(i);
        assert.deepEqual(got.shape, want.shape);
        assert.equal(got.dtype, "<f2");
        assert.deepEqual(got.data, want.data, `pair ${i}`);
      }
    } finally {
      await store.close();
    }
    const ds = await openPairDataset(root, { source: "lmdb" });
    try {
      assert.equal(ds.length, 7);
      assert.equal((await ds.get(5)).caption, "cap0_5");
    } finally {
      await ds.close();
    }
    // The entries themselves, through the restricted unpickler.
    assert.equal(decodeOriginalLength(pickleOriginalLength(7), "len"), 7);
    assert.deepEqual(
      decodeOriginalKeys(pickleOriginalKeys([enc.encode("0"), enc.encode("1")]), "keys"),
      [enc.encode("0"), enc.encode("1")],
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("data2lmdb script: --format original, and a bad format is named", async () => {
  const root = await Deno.makeTempDir({ prefix: "reflow_orig_lmdb_" });
  try {
    await makePairRoot(root, 3);
    const p = pairPaths(root);
    const script = new URL("../../scripts/data2lmdb.ts", import.meta.url).pathname;
    const run = (...args: string[]) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", script, "--dpath", p.images, ...args],
      })
        .output();
    const bad = await run("--format", "pickle");
    assert.equal(bad.code, 2);
    assert.match(dec.decode(bad.stderr), /--format must be one of reflow, original, got "pickle"/);
    const ok = await run("--format", "original");
    assert.ok(ok.success, dec.decode(ok.stderr));
    assert.match(dec.decode(ok.stdout), /wrote 3 pairs .* \(the original tool's format\)/);
    const store = await openLmdbPairStore(p.lmdb);
    assert.equal(store.length, 3);
    await store.close();
    if (PY.exe) assert.equal((await python([root]) as { length: number }).length, 3);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test({
  name: "pickle writer: Python loads what it writes; what it cannot write is refused",
  ignore: !PY.exe,
  async fn() {
    const value: PickleValue = [
      null,
      true,
      false,
      -5,
      -(2 ** 31),
      -(2n ** 70n),
      2n ** 64n,
      "caf\u00e9 \u{1F431}",
      "x".repeat(300),
      new Uint8Array(70000).fill(7),
      new PickleTuple([]),
      new PickleTuple([1, new PickleTuple([2, 3])]),
      new Map<string, PickleValue>([["a", 1], ["b", [new Uint8Array([1, 2])]]]),
      new Map<string, PickleValue>([["only", null]]),
      Array.from({ length: 1001 }, (_, i) => i),
    ];
    const out = await new Deno.Command(PY.exe!, {
      args: ["-c", "import sys, pickle; print(repr(pickle.loads(sys.stdin.buffer.read())))"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const w = out.stdin.getWriter();
    await w.write(pickleDumps(value));
    await w.close();
    const r = await out.output();
    assert.ok(r.success, dec.decode(r.stderr));
    const want = "[None, True, False, -5, -2147483648, -1180591620717411303424, " +
      "18446744073709551616, 'café 🐱', '" + "x".repeat(300) + "', b'" +
      "\\x07".repeat(70000) + "', (), (1, (2, 3)), {'a': 1, 'b': [b'\\x01\\x02']}, " +
      "{'only': None}, [" + Array.from({ length: 1001 }, (_, i) => i).join(", ") + "]]";
    assert.equal(dec.decode(r.stdout).trim(), want);

    assert.throws(() => pickleDumps(1.5), /only integers are supported, got 1\.5/);
    assert.throws(() => pickleDumps(new PickleGlobal("os", "system; x")), /not a Python name/);
    assert.throws(
      () => pickleDumps({} as unknown as PickleValue),
      /cannot pickle \[object Object\]/,
    );
  },
});
