import assert from "node:assert/strict";
import { describeValue, FormatError } from "../../core/io/format_error.ts";
import { MAX_LONG_BYTES, PyGlobal, PyObject, unpickle } from "../../core/io/pickle.ts";
import { fixture } from "./_fixtures.ts";

const read = (name: string) => Deno.readFileSync(fixture(name));
const bytes = (...parts: (number[] | string)[]) =>
  new Uint8Array(
    parts.flatMap((p) => typeof p === "string" ? [...p].map((c) => c.charCodeAt(0)) : p),
  );

Deno.test("unpickle: Python values at protocols 2-5 decode to the documented JS values", () => {
  for (const proto of [2, 3, 4, 5]) {
    const v = unpickle(read(`misc_p${proto}.pkl`), { source: `misc_p${proto}` });
    assert.ok(v instanceof Map, `protocol ${proto}`);
    assert.deepEqual(v.get("a"), [1, 2.5, null, true, false]);
    assert.deepEqual(v.get("b"), bytes([0, 255], "bytes"));
    assert.deepEqual(v.get("c"), [1, "x"]);
    assert.ok(Object.isFrozen(v.get("c")), "tuples are frozen");
    assert.equal(v.get("big"), 2n ** 70n);
    assert.equal(v.get("neg"), -70000);
    assert.deepEqual(v.get("s"), new Set([3]));
    assert.equal(v.get("u"), "\u00fcn\u00ef \u4e2d");
    assert.deepEqual(v.get("empty"), new Uint8Array(0));
    assert.deepEqual(v.get("ba"), bytes("ab"));
    assert.deepEqual([...v.keys()], ["a", "b", "c", "big", "neg", "s", "u", "empty", "ba"]);
  }
});

Deno.test("unpickle: os.system via GLOBAL or STACK_GLOBAL is refused, nothing runs", () => {
  for (const proto of [2, 4]) {
    assert.throws(
      () => unpickle(read(`evil_p${proto}.pkl`), { source: "evil.pkl" }),
      /evil\.pkl: byte \d+: global (posix|os)\.system is not allowed \((STACK_)?GLOBAL\)/,
    );
  }
  // Even an allowlisted-looking class name is refused unless the caller allows it.
  const obj = bytes([0x80, 2], "c__main__\nLMDB_ndarray\n)", [0x81], "}b.");
  assert.throws(() => unpickle(obj), /global __main__\.LMDB_ndarray is not allowed/);
  const v = unpickle(obj, { allowClasses: ["LMDB_ndarray"] });
  assert.ok(v instanceof PyObject && v.cls === "__main__.LMDB_ndarray");
  assert.ok(unpickle(obj, { allowClasses: ["__main__.LMDB_ndarray"] }) instanceof PyObject);
  assert.throws(() => unpickle(obj, { allowClasses: ["other.LMDB_ndarray"] }), /not allowed/);
  // builtins.eval / getattr are never on the list.
  assert.throws(
    () => unpickle(bytes([0x80, 2], "c__builtin__\neval\n.")),
    /global __builtin__\.eval is not allowed/,
  );
  assert.throws(() => unpickle(bytes([0x80, 2], "cbuiltins\ngetattr\n.")), /builtins\.getattr/);
});

Deno.test("unpickle: length fields past the data are refused before allocating", () => {
  const u64 = (n: bigint) => [...new Uint8Array(new BigUint64Array([n]).buffer)];
  const u32 = (n: number) => [...new Uint8Array(new Uint32Array([n]).buffer)];
  const cases: [string, Uint8Array][] = [
    ["BINBYTES8", bytes([0x80, 4, 0x8e], u64(2n ** 40n))],
    ["BYTEARRAY8", bytes([0x80, 5, 0x96], u64(2n ** 62n))],
    ["BINUNICODE8", bytes([0x80, 4, 0x8d], u64(1n << 33n))],
    ["BINBYTES", bytes([0x80, 3, 0x42], u32(0xffffffff))],
    ["BINUNICODE", bytes([0x80, 2, 0x58], u32(1 << 30), "ab")],
    ["LONG4", bytes([0x80, 2, 0x8b], u32(1 << 30))],
    ["FRAME", bytes([0x80, 4, 0x95], u64(2n ** 50n))],
  ];
  for (const [name, data] of cases) {
    assert.throws(() => unpickle(data), /runs past the end of the data|absurd/, name);
  }
  // bytes(n) would allocate n zero bytes from a few input bytes.
  const bomb = bytes([0x80, 2], "c__builtin__\nbytes\nJ", [0xff, 0xff, 0xff, 0x7f], [0x85], "R.");
  assert.throws(() => unpickle(bomb), /unsupported bytes\/bytearray arguments/);
});

Deno.test("unpickle: unknown, text and extension opcodes and malformed streams are refused", () => {
  assert.throws(() => unpickle(bytes([0x80, 2, 0xff])), /byte 2: opcode unknown \(0xff\)/);
  assert.throws(() => unpickle(bytes([0x80, 2], "I12\n.")), /opcode INT \(0x49\)/);
  assert.throws(() => unpickle(bytes([0x80, 2, 0x82, 1, 0x2e])), /opcode EXT1/);
  assert.throws(() => unpickle(bytes([0x80, 6])), /unsupported pickle protocol 6/);
  assert.throws(() => unpickle(bytes([0x80, 2, 0x4e])), /without a STOP/);
  assert.throws(() => unpickle(bytes([0x80, 2, 0x2e])), /stack underflow/);
  assert.throws(() => unpickle(bytes([0x80, 2, 0x65])), /no MARK/);
  assert.throws(() => unpickle(bytes([0x80, 2, 0x68, 9])), /memo key 9 was never stored/);
  assert.throws(() => unpickle(bytes([0x80, 2, 0x4e, 0x51])), /no persistentLoad given/);
  assert.throws(() => unpickle(bytes([0x80, 5, 0x97])), /out-of-band buffers/);
  assert.throws(() => unpickle(bytes([0x80, 4, 0x4b, 1, 0x4b, 2, 0x93])), /two strings/);
  // APPEND onto a tuple is a malformed stream, not a crash.
  assert.throws(() => unpickle(bytes([0x80, 2, 0x29, 0x4e, 0x61, 0x2e])), /not a list/);
});

Deno.test("unpickle: memo cycles, persistent ids, OrderedDict attributes", () => {
  // l = []; l.append(l)
  const cyc = unpickle(bytes([0x80, 2, 0x5d, 0x71, 0, 0x68, 0, 0x61, 0x2e])) as unknown[];
  assert.equal(cyc[0], cyc);

  // persistent id ("storage", torch.FloatStorage, "0") resolved by the caller.
  const pid = bytes(
    [0x80, 2],
    "(X",
    [7, 0, 0, 0],
    "storagectorch\nFloatStorage\nX",
    [1, 0, 0, 0],
    "0tQ.",
  );
  const seen: unknown[] = [];
  const got = unpickle(pid, { persistentLoad: (p) => (seen.push(p), "resolved") });
  assert.equal(got, "resolved");
  const p = seen[0] as unknown[];
  assert.equal(p[0], "storage");
  assert.ok(p[1] instanceof PyGlobal && p[1].fullName === "torch.FloatStorage");
  assert.equal(p[2], "0");
});

const le32 = (n: number) => [...new Uint8Array(new Uint32Array([n >>> 0]).buffer)];
/** `pattern` repeated `n` times, as one byte array (no argument spreading). */
function repeat(pattern: number[], n: number): Uint8Array {
  const out = new Uint8Array(pattern.length * n);
  for (let i = 0; i < n; i++) out.set(pattern, i * pattern.length);
  return out;
}
const cat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return out;
};

Deno.test("unpickle: big LONG4 integers are capped before decoding and decoded in linear time", () => {
  // 2 MB and 180 KB LONG4 (the latter took 46 s before): refused at once, naming source and byte.
  for (const n of [2 << 20, 180_000, MAX_LONG_BYTES + 1]) {
    const data = cat(bytes([0x80, 2, 0x8b], le32(n)), new Uint8Array(n).fill(0x5a), bytes("."));
    const t0 = performance.now();
    assert.throws(
      () => unpickle(data, { source: "big.pkl" }),
      (err: Error) =>
        err instanceof FormatError &&
        err.message ===
          `big.pkl: byte 2: LONG4 integer of ${n} bytes exceeds the ${MAX_LONG_BYTES}-byte limit`,
    );
    assert.ok(performance.now() - t0 < 500, `${n} bytes: ${performance.now() - t0} ms`);
  }
  // At the cap it decodes, to the value computed another way (sum of b_i * 256^i, two's complement).
  let seed = 12345;
  const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
  for (const n of [1, 7, 8, 9, 255, MAX_LONG_BYTES]) {
    for (const negative of [false, true]) {
      const b = Uint8Array.from({ length: n }, rnd);
      b[n - 1] = negative ? b[n - 1] | 0x80 : b[n - 1] & 0x7f;
      let want = 0n;
      let scale = 1n;
      for (const x of b) {
        want += BigInt(x) * scale;
        scale *= 256n;
      }
      if (negative) want -= scale;
      const op = n < 256 ? bytes([0x8a, n]) : bytes([0x8b], le32(n));
      const t0 = performance.now();
      const got = unpickle(cat(bytes([0x80, 2]), op, b, bytes("."))) as bigint | number;
      assert.ok(performance.now() - t0 < 500);
      assert.equal(BigInt(got), want, `${n} bytes, negative ${negative}`);
      assert.equal(typeof got, Number.isSafeInteger(Number(want)) ? "number" : "bigint");
    }
  }
  // Protocol 0's text LONG is refused as an opcode, before reading its digits.
  assert.throws(
    () => unpickle(cat(bytes([0x80, 2], "L"), new Uint8Array(1 << 20).fill(0x39), bytes("L\n."))),
    /byte 2: opcode LONG \(0x4c\) is not supported/,
  );
  // Negative lengths are named as such.
  assert.throws(
    () => unpickle(bytes([0x80, 2, 0x8b], le32(-5), ".")),
    /LONG4 with negative length -5/,
  );
  assert.throws(
    () => unpickle(bytes([0x80, 2, 0x54], le32(-1), ".")),
    /BINSTRING with negative length -1/,
  );
});

Deno.test("unpickle: 600k-item APPENDS and million-deep nesting decode without recursion", () => {
  const n = 600_000;
  const appends = cat(bytes([0x80, 2, 0x5d, 0x28]), repeat([0x4b, 7], n), bytes([0x65, 0x2e]));
  const list = unpickle(appends) as number[];
  assert.equal(list.length, n);
  assert.ok(list.every((x) => x === 7));
  // ((((None,),),),) one million deep: the stack machine builds it iteratively.
  const depth = 1_000_000;
  let v = unpickle(cat(bytes([0x80, 2, 0x4e]), repeat([0x85], depth), bytes("."))) as unknown;
  let d = 0;
  while (Array.isArray(v)) (v = v[0], d++);
  assert.equal(d, depth);
  assert.equal(v, null);
  // Error messages describe such values without walking them.
  assert.equal(describeValue([[[[1]]]]), "a list of 1 items");
});

Deno.test("unpickle: copies by allowlisted calls share a budget linear in the input", () => {
  // d = {0: None, ..., 99999: None}; then OrderedDict(d) 200k times: 2e10 copies from ~1.3 MB.
  const keys = 100_000;
  const items = new Uint8Array(keys * 6);
  for (let i = 0; i < keys; i++) items.set([0x4a, ...le32(i), 0x4e], i * 6);
  const bomb = cat(
    bytes([0x80, 2], "ccollections\nOrderedDict\n", [0x71, 0], [0x7d, 0x71, 1, 0x28]),
    items,
    bytes([0x75]), // SETITEMS
    repeat([0x68, 0, 0x68, 1, 0x85, 0x52, 0x30], 200_000), // OrderedDict(d), POP
    bytes("."),
  );
  const t0 = performance.now();
  assert.throws(
    () => unpickle(bomb, { source: "copies.pkl" }),
    /copies\.pkl: byte \d+: collections\.OrderedDict copies more than a pickle of \d+ bytes may .*work bomb/,
  );
  assert.ok(performance.now() - t0 < 10_000, `${performance.now() - t0} ms`);
  // A few such calls are fine.
  const ok = cat(
    bomb.subarray(0, bomb.length - 200_000 * 7 - 1),
    repeat([0x68, 0, 0x68, 1, 0x85, 0x52], 1),
    bytes("."),
  );
  assert.equal((unpickle(ok) as Map<unknown, unknown>).size, keys);
  // _codecs.encode with a non-string encoding is named, not stringified.
  assert.throws(
    () => unpickle(bytes([0x80, 2], "c_codecs\nencode\nX", le32(1), "a", [0x29, 0x86, 0x52, 0x2e])),
    /_codecs\.encode: encoding is a tuple of 0 items, not a string/,
  );
});
