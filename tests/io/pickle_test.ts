import assert from "node:assert/strict";
import { PyGlobal, PyObject, unpickle } from "../../core/io/pickle.ts";
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
