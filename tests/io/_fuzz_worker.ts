/**
 * The fuzz test's worker process (run by fuzz_test.ts, or by hand to reproduce a case):
 *
 *   deno run -A tests/io/_fuzz_worker.ts --seed 15 [--cases 200] [--budget-ms 25000] [--only npy:17]
 *
 * It mutates valid safetensors, torch .pth, .npy, LMDB and pickled-numpy inputs (bit flips,
 * truncations, length fields overwritten with large or negative values, spliced bytes), loads each
 * through the public readers and classifies the end: success, a named error (a FormatError — or,
 * from the pair store's own checks, a plain Error — whose message names the file), or anything else.
 * Case i of a target draws from its own generator seeded by (seed, target, i), so one case replays
 * alone. One JSON line per case on stdout, then a summary line; peak memory per case from VmHWM.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { encodeNpy, readNpy } from "../../core/data/npy.ts";
import { LmdbBulkWriter, LmdbFileReader } from "../../core/data/lmdb_file.ts";
import { decodeOriginalKeys, decodeOriginalPair } from "../../core/data/original_lmdb_value.ts";
import { openLmdbPairStore } from "../../core/data/pair_store.ts";
import { FormatError } from "../../core/io/format_error.ts";
import { decodeNumpyPickle } from "../../core/io/numpy_pickle.ts";
import { openSafetensors, writeSafetensors } from "../../core/io/safetensors.ts";
import { openTorchFile } from "../../core/io/torch_file.ts";
import { ZipReader } from "../../core/io/zip.ts";
import { buildZip } from "./_zip_builder.ts";

// ---------------------------------------------------------------- seeded randomness

/** mulberry32: small, fast, good enough to pick mutations. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a of the parts: one independent stream per (seed, target, case). */
function caseSeed(...parts: (string | number)[]): number {
  let h = 0x811c9dc5;
  for (const c of parts.join("/")) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193);
  return h >>> 0;
}

// ---------------------------------------------------------------- mutations

/**
 * A seed input: its bytes, offsets where length fields live (mutated more often) and tokens of its
 * format (opcodes, header syntax) that insertions repeat, as a fuzzer's dictionary does.
 */
interface SeedFile {
  name: string;
  bytes: Uint8Array;
  hot: number[];
  tokens?: Uint8Array[];
}

/** Values a length field is overwritten with: edges of each width, negatives, near-misses. */
const INTERESTING = [
  0n,
  1n,
  2n,
  0x7fn,
  0x80n,
  0xffn,
  0x100n,
  0x7fffn,
  0x8000n,
  0xffffn,
  0x10000n,
  0x7fffffffn,
  0x80000000n,
  0xffffffffn,
  0x100000000n,
  1n << 53n,
  (1n << 63n) - 1n,
  1n << 63n,
  (1n << 64n) - 1n, // -1 as a u64
  (1n << 64n) - 2n,
];

function mutate(seed: SeedFile, pool: SeedFile[], r: () => number, log: string[]): Uint8Array {
  let b = seed.bytes.slice();
  const pos = (n = b.length) =>
    seed.hot.length > 0 && r() < 0.5
      ? Math.min(seed.hot[Math.floor(r() * seed.hot.length)], Math.max(0, n - 1))
      : Math.floor(r() * n);
  const count = 1 + (r() < 0.3 ? 1 : 0) + (r() < 0.1 ? 1 : 0);
  for (let m = 0; m < count && b.length > 0; m++) {
    const kind = Math.floor(r() * (seed.tokens ? 5 : 4));
    if (kind === 0) { // bit flips
      const flips = 1 + Math.floor(r() * 8);
      const at: number[] = [];
      for (let k = 0; k < flips; k++) {
        const p = r() < 0.7 ? pos() : Math.floor(r() * b.length);
        b[p] ^= 1 << Math.floor(r() * 8);
        at.push(p);
      }
      log.push(`flip@${at.join(",")}`);
    } else if (kind === 1) { // truncation, often inside the headers
      const n = r() < 0.5 ? Math.floor(r() * Math.min(b.length, 512)) : Math.floor(r() * b.length);
      b = b.slice(0, n);
      log.push(`trunc@${n}`);
    } else if (kind === 2) { // a length field overwritten
      const width = [1, 2, 4, 8][Math.floor(r() * 4)];
      const p = pos();
      let v: bigint;
      const pick = r();
      if (pick < 0.6) v = INTERESTING[Math.floor(r() * INTERESTING.length)];
      else if (pick < 0.8) v = BigInt(b.length + Math.floor(r() * 33) - 16); // near the file size
      else v = BigInt(Math.floor(r() * 2 ** 32)) << BigInt(Math.floor(r() * 32));
      const bigEndian = r() < 0.15;
      for (let k = 0; k < width && p + k < b.length; k++) {
        const shift = BigInt(8 * (bigEndian ? width - 1 - k : k));
        b[p + k] = Number((v >> shift) & 0xffn);
      }
      log.push(`set${width * 8}${bigEndian ? "be" : ""}@${p}=${v}`);
    } else if (kind === 4) { // a format token repeated: deep nesting, huge batches, big ints
      const token = seed.tokens![Math.floor(r() * seed.tokens!.length)];
      const reps = [1, 1, 2, 3, 8, 64, 1000, 20_000, 100_000][Math.floor(r() * 9)];
      const times = Math.max(1, Math.min(reps, Math.floor((1 << 20) / token.length)));
      const at = pos(b.length + 1);
      const out = new Uint8Array(b.length + token.length * times);
      out.set(b.subarray(0, at));
      for (let k = 0; k < times; k++) out.set(token, at + k * token.length);
      out.set(b.subarray(at), at + token.length * times);
      b = out;
      log.push(`token@${at}x${times}(${[...token.subarray(0, 8)]})`);
    } else { // bytes spliced in from this or another seed of the same kind
      const src = pool[Math.floor(r() * pool.length)].bytes;
      const from = Math.floor(r() * src.length);
      const len = Math.min(src.length - from, 1 + Math.floor(r() * (r() < 0.8 ? 64 : 4096)));
      const chunk = src.slice(from, from + len);
      const at = pos(b.length + 1);
      if (r() < 0.5) {
        const out = new Uint8Array(b.length + len);
        out.set(b.subarray(0, at));
        out.set(chunk, at);
        out.set(b.subarray(at), at + len);
        b = out;
        log.push(`insert@${at}+${len}`);
      } else {
        b.set(chunk.subarray(0, Math.max(0, b.length - at)), at);
        log.push(`splice@${at}+${len}`);
      }
    }
  }
  return b;
}

// ---------------------------------------------------------------- seed inputs

const FIX = (rel: string) => fileURLToPath(new URL(`../fixtures/${rel}`, import.meta.url));

/** Offsets of every occurrence of a 4-byte little-endian signature. */
function signatures(b: Uint8Array, sig: number): number[] {
  const out: number[] = [];
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (let i = 0; i + 4 <= b.length; i++) if (dv.getUint32(i, true) === sig) out.push(i);
  return out;
}

const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);
const latin = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

/** A LONG4 opcode with `n` bytes of integer after it. */
function long4(n: number): Uint8Array {
  const out = new Uint8Array(5 + n).fill(0x5a);
  out[0] = 0x8b;
  new DataView(out.buffer).setUint32(1, n, true);
  return out;
}

/** Pickle opcodes: tuples, marks, appends, memo, calls, big integers. */
const PICKLE_TOKENS: Uint8Array[] = [
  ...[
    [0x85], // TUPLE1
    [0x28], // MARK
    [0x28, 0x4e], // MARK NONE
    [0x4e], // NONE
    [0x65], // APPENDS
    [0x5d], // EMPTY_LIST
    [0x61], // APPEND
    [0x71, 0x00], // BINPUT 0
    [0x68, 0x00], // BINGET 0
    [0x94], // MEMOIZE
    [0x30], // POP
    [0x52], // REDUCE
    [0x74], // TUPLE
    [0x75], // SETITEMS
    [0x8a, 0xff], // LONG1 of 255 bytes
  ].map((t) => Uint8Array.from(t)),
  latin("ccollections\nOrderedDict\n"),
  latin("c__builtin__\nset\n"),
  long4(5000),
  long4(100_000),
];

/** Python-literal syntax of a .npy header dict. */
const NPY_TOKENS = [
  "(",
  ")",
  "((",
  "[",
  "]",
  ",",
  "1",
  "-1",
  "99999999999999999999",
  "'",
  " ",
  "True",
  "'__proto__'",
  ": ",
  "{",
  "}",
  "\n",
].map(latin);

/** JSON syntax of a safetensors header. */
const JSON_TOKENS = [
  "[",
  "]",
  "{",
  "}",
  ",",
  '"',
  '"shape":',
  '"data_offsets":',
  '"dtype":"F32"',
  "-1",
  "1e999",
  "18446744073709551615",
  '"__proto__"',
  '"__metadata__"',
  "null",
  " ",
].map(latin);

async function zipEntries(path: string): Promise<{ name: string; data: Uint8Array }[]> {
  const z = await ZipReader.open(path);
  try {
    return await Promise.all(
      z.entries().map(async (e) => ({ name: e.name, data: await z.read(e.name) })),
    );
  } finally {
    z.close();
  }
}

function zipHot(b: Uint8Array): number[] {
  return [
    ...signatures(b, 0x04034b50).flatMap((p) => range(p + 14, 16)), // local: crc, sizes, lengths
    ...signatures(b, 0x02014b50).flatMap((p) => range(p + 8, 38)), // central: method .. offset
    ...signatures(b, 0x06054b50).flatMap((p) => range(p + 8, 14)), // end record
  ];
}

/** Makes the inputs of every target in `dir`. */
async function makeSeeds(dir: string): Promise<Record<string, SeedFile[]>> {
  const read = (p: string) => Deno.readFileSync(p);
  const st = `${dir}/written.safetensors`;
  await writeSafetensors(st, [
    { name: "a.weight", dtype: "F32", shape: [3, 4], data: Float32Array.from(range(0, 12)) },
    { name: "b", dtype: "F16", shape: [5], data: Uint16Array.from([0, 0x3c00, 1, 2, 3]) },
    { name: "c", dtype: "I64", shape: [2], data: BigInt64Array.from([1n, -1n]) },
  ], { format: "pt" });
  const stHot = range(0, 8).concat(range(8, 120));

  const pthFiles = [FIX("io/state_dict.bin"), FIX("io/nested.pth")];
  const pickles: SeedFile[] = [];
  const pthInner: SeedFile[] = [];
  for (const path of pthFiles) {
    const entries = await zipEntries(path);
    const pkl = entries.find((e) => e.name.endsWith("data.pkl"))!;
    pthInner.push({
      name: path.split("/").pop()!,
      bytes: pkl.data,
      hot: [],
      tokens: PICKLE_TOKENS,
    });
  }

  const pickleNames = [
    "np_f16_p2",
    "np_f16_p4",
    "np_f16_p5",
    "np_i64_p2",
    "np_scalar_p4",
    "lmdb_ndarray_p2",
    "lmdb_ndarray_p4",
    "lmdb_keys_p4",
    "misc_p2",
    "misc_p4",
  ];
  for (const n of pickleNames) {
    pickles.push({
      name: `${n}.pkl`,
      bytes: read(FIX(`io/${n}.pkl`)),
      hot: [],
      tokens: PICKLE_TOKENS,
    });
  }

  const npyNames = ["f2", "f4_v2", "f4_v3", "i8", "f8_scalar", "u1_empty"];
  const npy = npyNames.map((n) => ({
    name: `${n}.npy`,
    bytes: read(FIX(`data/npy/${n}.npy`)),
    hot: range(6, 6).concat(range(10, 80)),
    tokens: NPY_TOKENS,
  }));

  // Our own LMDB: pairs on overflow pages, __len__ and __keys__ inline; and the original's.
  const own = `${dir}/own_lmdb`;
  const w = await LmdbBulkWriter.create(own);
  const n = 6;
  for (let i = 0; i < n; i++) {
    const data = Uint16Array.from({ length: 2 * 4 * 12 * 12 }, (_, j) => (i * 977 + j) & 0x3fff);
    await w.put(
      new TextEncoder().encode(String(i)),
      encodeNpy({ dtype: "<f2", shape: [2, 4, 12, 12], data }),
    );
  }
  await w.put(new TextEncoder().encode("__len__"), new TextEncoder().encode(String(n)));
  await w.put(
    new TextEncoder().encode("__keys__"),
    new TextEncoder().encode(JSON.stringify(range(0, n).map(String))),
  );
  await w.finish();
  const lmdbHot = (b: Uint8Array) => {
    const pages = Math.floor(b.length / 4096);
    return [
      ...range(0, 160),
      ...range(4096, 160),
      ...range(2, pages - 2).flatMap((p) => range(p * 4096, 24)), // page headers, first offsets
    ];
  };
  const lmdb = [
    read(`${own}/data.mdb`),
    read(FIX("data/original_root/content/lmdb/data.mdb")),
  ].map((bytes, i) => ({ name: i === 0 ? "own.mdb" : "original.mdb", bytes, hot: lmdbHot(bytes) }));

  return {
    safetensors: [st, FIX("io/py_written.safetensors")].map((p) => ({
      name: p.split("/").pop()!,
      bytes: read(p),
      hot: stHot,
      tokens: JSON_TOKENS,
    })),
    pth: pthFiles.map((p) => {
      const bytes = read(p);
      return { name: p.split("/").pop()!, bytes, hot: zipHot(bytes) };
    }),
    pth_pickle: pthInner,
    npy,
    lmdb,
    pickle: pickles,
  };
}

// ---------------------------------------------------------------- loading

/** Loads one mutated input the way a user's job would; returns a short summary on success. */
async function load(target: string, path: string, bytes: Uint8Array, seedName: string) {
  switch (target) {
    case "safetensors": {
      const f = await openSafetensors(path);
      try {
        for (const k of f.keys()) await f.readF32(k);
        return `${f.keys().length} tensors`;
      } finally {
        f.close();
      }
    }
    case "pth":
    case "pth_pickle": {
      const f = await openTorchFile(path);
      try {
        for (const k of f.keys()) await f.readF32(k);
        return `${f.keys().length} tensors`;
      } finally {
        f.close();
      }
    }
    case "npy": {
      const a = await readNpy(path);
      return `shape [${a.shape}]`;
    }
    case "lmdb": {
      const r = await LmdbFileReader.open(path);
      const keys: Uint8Array[] = [];
      try {
        for await (const k of r.keys()) keys.push(k);
        for (const k of keys) await r.get(k);
      } finally {
        await r.close();
      }
      // The same file through the pair store, which decodes npy or pickled values.
      const store = await openLmdbPairStore(path);
      try {
        for (let i = 0; i < Math.min(store.length, 16); i++) await store.readPair(i);
        return `${keys.length} keys, ${store.length} pairs`;
      } finally {
        await store.close();
      }
    }
    case "pickle": {
      if (seedName.startsWith("lmdb_keys")) return `${decodeOriginalKeys(bytes, path).length} keys`;
      if (seedName.startsWith("lmdb_ndarray")) return `[${decodeOriginalPair(bytes, path).shape}]`;
      if (seedName.startsWith("np_")) {
        return `[${decodeNumpyPickle(bytes, { source: path }).shape}]`;
      }
      const { unpickle } = await import("../../core/io/pickle.ts");
      unpickle(bytes, { source: path });
      return "decoded";
    }
  }
  throw new Error(`unknown target ${target}`);
}

/** "named" when `err` is one of our errors naming `path`, else what is wrong with it. */
function classify(err: unknown, path: string, plainAllowed: boolean): string {
  if (!(err instanceof Error)) return `threw a non-Error: ${String(err).slice(0, 200)}`;
  if (/call stack/i.test(err.message)) return "stack overflow";
  const ours = err instanceof FormatError || (plainAllowed && err.constructor === Error);
  if (!ours) return `${err.name} is not one of our error types`;
  if (!err.message.includes(path)) return "the message does not name the file";
  if (err.message.length > 2000) return `a message of ${err.message.length} characters`;
  return "named";
}

function peakKiB(): number {
  const s = Deno.readTextFileSync("/proc/self/status");
  return Number(/VmHWM:\s+(\d+)/.exec(s)?.[1] ?? "0");
}

// ---------------------------------------------------------------- main

function arg(name: string): string | undefined {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] : undefined;
}

const seed = Number(arg("seed") ?? "15");
const casesPerTarget = Number(arg("cases") ?? "200");
const budgetMs = Number(arg("budget-ms") ?? "25000");
const only = arg("only"); // "target:index" replays one case
const keep = arg("keep"); // folder to copy failing inputs into

const dir = await Deno.makeTempDir({ prefix: "reflow_fuzz_" });
try {
  const seeds = await makeSeeds(dir);
  const targets = Object.keys(seeds);
  const t0 = performance.now();
  const counts: Record<string, Record<string, number>> = {};
  let worstMs = { ms: 0, id: "" };
  let worstKiB = { kib: 0, id: "" };
  let ran = 0;
  let stoppedEarly = false;
  // Round-robin over targets so a time budget cut leaves every target tested.
  outer: for (let i = 0; i < casesPerTarget; i++) {
    for (const target of targets) {
      const id = `${target}:${i}`;
      if (only !== undefined && only !== id) continue;
      if (only === undefined && performance.now() - t0 > budgetMs) {
        stoppedEarly = true;
        break outer;
      }
      const r = rng(caseSeed(seed, target, i));
      const pool = seeds[target];
      const base = pool[Math.floor(r() * pool.length)];
      const log: string[] = [];
      const bytes = mutate(base, pool, r, log);
      const ext = { safetensors: "safetensors", pth: "pth", pth_pickle: "pth", npy: "npy" }[
        target
      ] ?? "bin";
      const caseDir = `${dir}/case_${target}_${i}`;
      await Deno.mkdir(caseDir);
      let path = `${caseDir}/${base.name.replace(/\.\w+$/, "")}.${ext}`;
      if (target === "pth_pickle") {
        // The unpickler sees the mutation: the archive around it is rebuilt, CRC and all.
        const entries = await zipEntries(pthSeedPath(base.name));
        const deflate = r() < 0.3;
        Deno.writeFileSync(
          path,
          buildZip(
            entries.map((e) =>
              e.name.endsWith("data.pkl") ? { name: e.name, data: bytes, deflate } : e
            ),
          ),
        );
        log.push(deflate ? "rezip(deflate)" : "rezip");
      } else if (target === "lmdb") {
        path = `${caseDir}/data.mdb`;
        Deno.writeFileSync(path, bytes);
      } else if (target === "pickle") {
        path = `${caseDir}/${base.name}`; // names the value in messages; not read from disk
      } else {
        Deno.writeFileSync(path, bytes);
      }
      console.log(JSON.stringify({ t: "start", id, base: base.name, muts: log }));
      const before = peakKiB();
      const c0 = performance.now();
      let outcome: string;
      let detail: string;
      try {
        detail = await load(target, path, bytes, base.name);
        outcome = "ok";
      } catch (err) {
        const verdict = classify(err, path, target === "lmdb");
        outcome = verdict === "named" ? "named" : "bad";
        detail = verdict === "named"
          ? (err as Error).message.slice(path.length, path.length + 160)
          : `${verdict}: ${(err as Error)?.stack?.slice(0, 1500) ?? String(err)}`;
        if (outcome === "bad" && keep !== undefined) {
          await Deno.mkdir(keep, { recursive: true });
          Deno.writeFileSync(`${keep}/fuzz_${seed}_${target}_${i}.bin`, bytes);
        }
      }
      const ms = performance.now() - c0;
      const grewKiB = peakKiB() - before;
      ran++;
      counts[target] ??= {};
      counts[target][outcome] = (counts[target][outcome] ?? 0) + 1;
      if (ms > worstMs.ms) worstMs = { ms, id };
      if (grewKiB > worstKiB.kib) worstKiB = { kib: grewKiB, id };
      console.log(
        JSON.stringify({
          t: "end",
          id,
          outcome,
          ms: Math.round(ms * 10) / 10,
          kib: Math.ceil(bytes.length / 1024),
          grewKiB,
          detail,
        }),
      );
      await Deno.remove(caseDir, { recursive: true });
    }
  }
  console.log(JSON.stringify({
    t: "done",
    seed,
    ran,
    stoppedEarly,
    seconds: Math.round((performance.now() - t0) / 100) / 10,
    counts,
    worstMs,
    worstKiB,
    peakMiB: Math.round(peakKiB() / 1024),
  }));
} finally {
  await Deno.remove(dir, { recursive: true });
}

function pthSeedPath(name: string): string {
  return name === "nested.pth" ? FIX("io/nested.pth") : FIX("io/state_dict.bin");
}
