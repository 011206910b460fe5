/**
 * A restricted unpickler: it decodes Python pickles (protocols 2 to 5, plus the binary opcodes of
 * protocol 1) into inert JavaScript values and NEVER executes anything. A global (GLOBAL,
 * STACK_GLOBAL) resolves only when its name is on an allowlist; calling one either builds a plain
 * JavaScript value (OrderedDict, set, bytes) or records the call as a {@link PyObject} for a
 * consumer (the numpy and torch readers) to interpret. Anything else is refused with an Error naming
 * the opcode or global and its byte position.
 *
 * Hostile input is bounded before work: every length is checked against the bytes that remain,
 * big integers are capped at {@link MAX_LONG_BYTES}, the copies allowlisted calls make (dict(d),
 * set(l), bytes(b)) share a budget proportional to the input, and nothing recurses, so a deeply
 * nested or huge stream ends in a {@link FormatError} naming the source and byte, never in a stack
 * overflow or a quadratic loop.
 *
 * Python values map to: None → null, bool → boolean, int → number (bigint beyond 2^53), float →
 * number, str → string, bytes/bytearray → Uint8Array, list → array, tuple → frozen array,
 * dict/OrderedDict → Map, set/frozenset → Set, a class reference → {@link PyGlobal}, an object or a
 * recorded call → {@link PyObject}.
 *
 * @module
 */

import { clip, describeValue, FormatError } from "./format_error.ts";

/** Largest LONG1/LONG4 integer accepted, in bytes (32768 bits); no tensor file needs more. */
export const MAX_LONG_BYTES = 4096;

/** A reference to an allowlisted Python global (a class or function), never called here. */
export class PyGlobal {
  constructor(readonly module: string, readonly name: string) {}
  /** `module.name`. */
  get fullName(): string {
    return `${this.module}.${this.name}`;
  }
}

/**
 * An inert record of an allowlisted call or object construction: `cls(*args, **kwargs)` followed by
 * an optional `__setstate__(state)` (the BUILD opcode). Nothing of it was executed.
 */
export class PyObject {
  /** Value given by BUILD (an instance `__dict__` as a Map, a tuple, ...), if any. */
  state: unknown = undefined;
  constructor(
    /** `module.name` of the callable or class. */
    readonly cls: string,
    readonly args: readonly unknown[],
    readonly kwargs: ReadonlyMap<unknown, unknown> = new Map(),
  ) {}

  /** An attribute from a `__dict__`-style state (a Map, or a `(dict, slots)` tuple). */
  attr(name: string): unknown {
    const s = this.state;
    if (s instanceof Map) return s.get(name);
    if (Array.isArray(s) && s.length === 2) {
      for (const part of s) if (part instanceof Map && part.has(name)) return part.get(name);
    }
    return undefined;
  }
}

/** Options of {@link unpickle}. */
export interface UnpickleOptions {
  /** Resolves a persistent id (BINPERSID), e.g. torch's storage references. Absent: refused. */
  persistentLoad?: (pid: unknown) => unknown;
  /**
   * Class names that may be instantiated as plain {@link PyObject}s (their state kept, nothing run).
   * `"module.Name"` matches exactly; a bare `"Name"` matches that class name in any module (the
   * original tool pickled `LMDB_ndarray` from whichever module ran it).
   */
  allowClasses?: readonly string[];
  /** What the error messages call the input (a file name or LMDB key). */
  source?: string;
}

/** Globals whose call is recorded as a PyObject for a consumer to interpret. */
const RECORDED_GLOBALS = new Set([
  "torch._utils._rebuild_tensor",
  "torch._utils._rebuild_tensor_v2",
  "torch._utils._rebuild_parameter",
  "torch._utils._rebuild_parameter_with_state",
  "torch._tensor._rebuild_from_type_v2",
  "torch.Tensor",
  "torch.nn.parameter.Parameter",
  ...[
    "Float",
    "Half",
    "BFloat16",
    "Double",
    "Long",
    "Int",
    "Short",
    "Char",
    "Byte",
    "Bool",
  ].map((t) => `torch.${t}Storage`),
  "numpy.ndarray",
  "numpy.dtype",
  "numpy.core.multiarray._reconstruct",
  "numpy._core.multiarray._reconstruct",
  "numpy.core.multiarray.scalar",
  "numpy._core.multiarray.scalar",
  "numpy.core.numeric._frombuffer",
  "numpy._core.numeric._frombuffer",
]);

/** Globals with a built-in, side-effect-free meaning. */
const BUILTIN_GLOBALS: Record<string, (args: readonly unknown[], at: string) => unknown> = {
  "collections.OrderedDict": (args, at) => toMap(args[0], at),
  "builtins.dict": (args, at) => toMap(args[0], at),
  "builtins.set": (args, at) => new Set(args.length ? iterableOf(args[0], at) : []),
  "builtins.frozenset": (args, at) => new Set(args.length ? iterableOf(args[0], at) : []),
  "builtins.bytes": (args, at) => toBytes(args, at),
  "builtins.bytearray": (args, at) => toBytes(args, at),
  "_codecs.encode": (args, at) => encodeString(args[0], args[1] ?? "utf-8", at),
  "builtins.object": (_args, at) => {
    throw new FormatError(
      `${at}: builtins.object may only appear as copyreg._reconstructor's base`,
    );
  },
};

/** Python 2 module names that protocol 0-2 pickles use (pickle's fix_imports). */
const PY2_MODULES: Record<string, string> = { "__builtin__": "builtins", "copy_reg": "copyreg" };

/**
 * Decodes a pickle without executing it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * const fromBase64 = (s: string) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
 * // pickle.dumps({"a": [1, 2.5, None]}, protocol=4)
 * const bytes = fromBase64("gASVGAAAAAAAAAB9lIwBYZRdlChLAUdABAAAAAAAAE5lcy4=");
 * const v = unpickle(bytes) as Map<string, unknown>;
 * assert.deepEqual(v.get("a"), [1, 2.5, null]);
 * // an object whose __reduce__ returns (os.system, ("echo pwned",)): refused, never run
 * const evil = fromBase64("gASVJQAAAAAAAACMBXBvc2l4lIwGc3lzdGVtlJOUjAplY2hvIHB3bmVklIWUUpQu");
 * assert.throws(() => unpickle(evil), /posix\.system/);
 * ```
 */
export function unpickle(bytes: Uint8Array, opts: UnpickleOptions = {}): unknown {
  return new Unpickler(bytes, opts).run();
}

class Unpickler {
  readonly #b: Uint8Array;
  readonly #v: DataView;
  readonly #opts: UnpickleOptions;
  readonly #src: string;
  #pos = 0;
  #opPos = 0;
  #stack: unknown[] = [];
  #marks: unknown[][] = [];
  readonly #memo = new Map<number, unknown>();
  /** Elements the allowlisted calls may still copy (dict(d), set(l), bytes(b), ...). */
  #budget: number;

  constructor(bytes: Uint8Array, opts: UnpickleOptions) {
    this.#b = bytes;
    this.#v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#opts = opts;
    this.#src = opts.source ?? "pickle";
    // A legitimate pickle copies each value it holds at most once (set(list), bytes(str), ...),
    // and every element copied took at least one input byte to write.
    this.#budget = budgetFor(bytes.length);
  }

  #at(): string {
    return `${this.#src}: byte ${this.#opPos}`;
  }

  #fail(msg: string): never {
    throw new FormatError(`${this.#at()}: ${msg}`);
  }

  /** Charges `n` copied elements to the work budget; a stream that copies more is refused. */
  #spend(n: number, what: string): void {
    this.#budget -= n;
    if (this.#budget < 0) {
      this.#fail(
        `${what} copies more than a pickle of ${this.#b.length} bytes may ` +
          `(${budgetFor(this.#b.length)} elements in all): refused as a work bomb`,
      );
    }
  }

  /** Claims `n` input bytes; lengths are checked against the input so no huge buffer is made. */
  #take(n: number): Uint8Array {
    if (!Number.isSafeInteger(n) || n < 0) this.#fail(`negative or absurd length ${n}`);
    if (this.#pos + n > this.#b.length) {
      this.#fail(
        `length ${n} runs past the end of the data (${this.#b.length - this.#pos} of ` +
          `${this.#b.length} bytes left)`,
      );
    }
    const out = this.#b.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }

  #u8(): number {
    return this.#take(1)[0];
  }
  #u16(): number {
    this.#take(2);
    return this.#v.getUint16(this.#pos - 2, true);
  }
  #u32(): number {
    this.#take(4);
    return this.#v.getUint32(this.#pos - 4, true);
  }
  #i32(): number {
    this.#take(4);
    return this.#v.getInt32(this.#pos - 4, true);
  }
  #u64(): number {
    this.#take(8);
    const v = this.#v.getBigUint64(this.#pos - 8, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.#fail(`length ${v} is absurd`);
    return Number(v);
  }
  #line(): string {
    const end = this.#b.indexOf(0x0a, this.#pos);
    if (end < 0) this.#fail("unterminated text line");
    return latin1(this.#take(end - this.#pos + 1).subarray(0, -1));
  }

  /** Pushes after evaluating `v`: an argument that pops a MARK replaces the stack array. */
  #push(v: unknown): void {
    this.#stack.push(v);
  }
  #pop(): unknown {
    if (this.#stack.length === 0) this.#fail("stack underflow");
    return this.#stack.pop();
  }
  #top(): unknown {
    if (this.#stack.length === 0) this.#fail("stack underflow");
    return this.#stack[this.#stack.length - 1];
  }
  /** Pops everything above the most recent MARK. */
  #popMark(): unknown[] {
    const items = this.#stack;
    const prev = this.#marks.pop();
    if (prev === undefined) this.#fail("no MARK on the stack");
    this.#stack = prev;
    return items;
  }
  #memoGet(i: number): unknown {
    if (!this.#memo.has(i)) this.#fail(`memo key ${i} was never stored`);
    return this.#memo.get(i);
  }

  run(): unknown {
    const b = this.#b;
    while (this.#pos < b.length) {
      this.#opPos = this.#pos;
      const op = b[this.#pos++];
      switch (op) {
        case 0x80: { // PROTO
          const proto = this.#u8();
          if (proto > 5) this.#fail(`unsupported pickle protocol ${proto}`);
          break;
        }
        case 0x95: { // FRAME: a read-ahead hint, but a frame must lie within the data
          const n = this.#u64();
          if (this.#pos + n > b.length) {
            this.#fail(`frame of ${n} bytes runs past the end of the data (${b.length} bytes)`);
          }
          break;
        }
        case 0x2e: // STOP
          return this.#pop();
        case 0x28: // MARK
          this.#marks.push(this.#stack);
          this.#stack = [];
          break;
        case 0x30: // POP
          if (this.#stack.length === 0) this.#popMark(); // POP of an empty frame drops the MARK
          else this.#pop();
          break;
        case 0x31: // POP_MARK
          this.#popMark();
          break;
        case 0x32: // DUP
          this.#push(this.#top());
          break;

        // --- atoms
        case 0x4e: // NONE
          this.#push(null);
          break;
        case 0x88: // NEWTRUE
          this.#push(true);
          break;
        case 0x89: // NEWFALSE
          this.#push(false);
          break;
        case 0x4a: // BININT
          this.#take(4);
          this.#push(this.#v.getInt32(this.#pos - 4, true));
          break;
        case 0x4b: // BININT1
          this.#push(this.#u8());
          break;
        case 0x4d: // BININT2
          this.#push(this.#u16());
          break;
        case 0x8a: // LONG1 (at most 255 bytes)
          this.#push(decodeLong(this.#take(this.#u8())));
          break;
        case 0x8b: { // LONG4: length checked against the input and the cap before decoding
          const n = this.#i32();
          if (n < 0) this.#fail(`LONG4 with negative length ${n}`);
          if (this.#pos + n > b.length) this.#take(n); // names the overrun
          if (n > MAX_LONG_BYTES) {
            this.#fail(`LONG4 integer of ${n} bytes exceeds the ${MAX_LONG_BYTES}-byte limit`);
          }
          this.#push(decodeLong(this.#take(n)));
          break;
        }
        case 0x47: // BINFLOAT (big-endian double)
          this.#take(8);
          this.#push(this.#v.getFloat64(this.#pos - 8, false));
          break;
        case 0x58: // BINUNICODE
          this.#push(utf8(this.#take(this.#u32())));
          break;
        case 0x8c: // SHORT_BINUNICODE
          this.#push(utf8(this.#take(this.#u8())));
          break;
        case 0x8d: // BINUNICODE8
          this.#push(utf8(this.#take(this.#u64())));
          break;
        case 0x54: { // BINSTRING (Python 2 str)
          const n = this.#i32();
          if (n < 0) this.#fail(`BINSTRING with negative length ${n}`);
          this.#push(latin1(this.#take(n)));
          break;
        }
        case 0x55: // SHORT_BINSTRING
          this.#push(latin1(this.#take(this.#u8())));
          break;
        case 0x42: // BINBYTES
          this.#push(this.#take(this.#u32()).slice());
          break;
        case 0x43: // SHORT_BINBYTES
          this.#push(this.#take(this.#u8()).slice());
          break;
        case 0x8e: // BINBYTES8
        case 0x96: // BYTEARRAY8
          this.#push(this.#take(this.#u64()).slice());
          break;
        case 0x97: // NEXT_BUFFER
          this.#fail("out-of-band buffers (NEXT_BUFFER) are not supported");
          break;
        case 0x98: // READONLY_BUFFER: only a flag on the buffer on top
          this.#top();
          break;

        // --- containers
        case 0x29: // EMPTY_TUPLE
          this.#push(Object.freeze([]));
          break;
        case 0x85: // TUPLE1
          this.#push(Object.freeze([this.#pop()]));
          break;
        case 0x86: { // TUPLE2
          const y = this.#pop();
          this.#push(Object.freeze([this.#pop(), y]));
          break;
        }
        case 0x87: { // TUPLE3
          const z = this.#pop();
          const y = this.#pop();
          this.#push(Object.freeze([this.#pop(), y, z]));
          break;
        }
        case 0x74: // TUPLE
          this.#push(Object.freeze(this.#popMark()));
          break;
        case 0x5d: // EMPTY_LIST
          this.#push([]);
          break;
        case 0x6c: // LIST
          this.#push(this.#popMark());
          break;
        case 0x61: { // APPEND
          const v = this.#pop();
          this.#list(this.#top()).push(v);
          break;
        }
        case 0x65: { // APPENDS (a loop: spreading 600k items as arguments overflows the stack)
          const items = this.#popMark();
          const list = this.#list(this.#top());
          for (let i = 0; i < items.length; i++) list.push(items[i]);
          break;
        }
        case 0x7d: // EMPTY_DICT
          this.#push(new Map());
          break;
        case 0x64: // DICT
          this.#push(this.#pairsInto(new Map(), this.#popMark()));
          break;
        case 0x73: { // SETITEM
          const v = this.#pop();
          const k = this.#pop();
          this.#dict(this.#top()).set(k, v);
          break;
        }
        case 0x75: { // SETITEMS
          const items = this.#popMark();
          this.#pairsInto(this.#dict(this.#top()), items);
          break;
        }
        case 0x8f: // EMPTY_SET
          this.#push(new Set());
          break;
        case 0x90: { // ADDITEMS
          const items = this.#popMark();
          const s = this.#top();
          if (!(s instanceof Set)) this.#fail("ADDITEMS target is not a set");
          for (const x of items) s.add(x);
          break;
        }
        case 0x91: // FROZENSET
          this.#push(new Set(this.#popMark()));
          break;

        // --- memo
        case 0x68: // BINGET
          this.#push(this.#memoGet(this.#u8()));
          break;
        case 0x6a: // LONG_BINGET
          this.#push(this.#memoGet(this.#u32()));
          break;
        case 0x71: // BINPUT
          this.#memo.set(this.#u8(), this.#top());
          break;
        case 0x72: // LONG_BINPUT
          this.#memo.set(this.#u32(), this.#top());
          break;
        case 0x94: // MEMOIZE
          this.#memo.set(this.#memo.size, this.#top());
          break;

        // --- objects: only allowlisted names, only inert results
        case 0x63: { // GLOBAL
          const module = this.#line();
          const name = this.#line();
          this.#push(this.#resolve(module, name, "GLOBAL"));
          break;
        }
        case 0x93: { // STACK_GLOBAL
          const name = this.#pop();
          const module = this.#pop();
          if (typeof module !== "string" || typeof name !== "string") {
            this.#fail("STACK_GLOBAL needs two strings");
          }
          this.#push(this.#resolve(module, name, "STACK_GLOBAL"));
          break;
        }
        case 0x52: { // REDUCE
          const args = this.#pop();
          const fn = this.#pop();
          this.#push(this.#call(fn, this.#tuple(args, "REDUCE"), new Map(), "REDUCE"));
          break;
        }
        case 0x81: { // NEWOBJ
          const args = this.#pop();
          const cls = this.#pop();
          this.#push(this.#call(cls, this.#tuple(args, "NEWOBJ"), new Map(), "NEWOBJ"));
          break;
        }
        case 0x92: { // NEWOBJ_EX
          const kwargs = this.#pop();
          const args = this.#pop();
          const cls = this.#pop();
          if (!(kwargs instanceof Map)) this.#fail("NEWOBJ_EX kwargs is not a dict");
          this.#push(this.#call(cls, this.#tuple(args, "NEWOBJ_EX"), kwargs, "NEWOBJ_EX"));
          break;
        }
        case 0x6f: { // OBJ (protocol 1)
          const items = this.#popMark();
          if (items.length === 0) this.#fail("OBJ without a class");
          this.#push(this.#call(items[0], items.slice(1), new Map(), "OBJ"));
          break;
        }
        case 0x62: { // BUILD
          const state = this.#pop();
          this.#build(this.#top(), state);
          break;
        }
        case 0x51: { // BINPERSID
          const pid = this.#pop();
          const load = this.#opts.persistentLoad;
          if (load === undefined) {
            this.#fail("persistent id (BINPERSID) but no persistentLoad given");
          }
          this.#push(load(pid));
          break;
        }
        default:
          this.#fail(
            `opcode ${opcodeName(op)} (0x${op.toString(16).padStart(2, "0")}) is not supported`,
          );
      }
    }
    this.#fail("data ended without a STOP opcode");
  }

  #list(x: unknown): unknown[] {
    if (!Array.isArray(x) || Object.isFrozen(x)) this.#fail("APPEND target is not a list");
    return x;
  }
  #dict(x: unknown): Map<unknown, unknown> {
    if (!(x instanceof Map)) this.#fail("SETITEM target is not a dict");
    return x;
  }
  #tuple(x: unknown, op: string): readonly unknown[] {
    if (!Array.isArray(x)) this.#fail(`${op} arguments are not a tuple`);
    return x;
  }
  #pairsInto(m: Map<unknown, unknown>, items: unknown[]): Map<unknown, unknown> {
    if (items.length % 2 !== 0) this.#fail("odd number of items for a dict");
    for (let i = 0; i < items.length; i += 2) m.set(items[i], items[i + 1]);
    return m;
  }

  #classAllowed(full: string, name: string): boolean {
    const allow = this.#opts.allowClasses ?? [];
    return allow.includes(full) || allow.includes(name);
  }

  #resolve(module: string, name: string, op: string): PyGlobal {
    const mod = PY2_MODULES[module] ?? module;
    const full = `${mod}.${name}`;
    if (
      RECORDED_GLOBALS.has(full) || Object.hasOwn(BUILTIN_GLOBALS, full) ||
      full === "copyreg._reconstructor" || this.#classAllowed(full, name)
    ) {
      return new PyGlobal(mod, name);
    }
    this.#fail(
      `global ${clip(module)}.${clip(name)} is not allowed (${op}); nothing was executed`,
    );
  }

  #call(fn: unknown, args: readonly unknown[], kwargs: Map<unknown, unknown>, op: string): unknown {
    if (!(fn instanceof PyGlobal)) this.#fail(`${op} of something that is not an allowed global`);
    const full = fn.fullName;
    const builtin = BUILTIN_GLOBALS[full];
    if (builtin !== undefined && Object.hasOwn(BUILTIN_GLOBALS, full)) {
      this.#spend(args.reduce<number>((s, a) => s + sizeOf(a), 0), full);
      return builtin(args, `${this.#at()}: ${full}`);
    }
    if (full === "copyreg._reconstructor") {
      // copyreg._reconstructor(cls, object, None): a plain instance of cls, filled by BUILD.
      const [cls, base, baseState] = args;
      if (
        !(cls instanceof PyGlobal) || !this.#classAllowed(cls.fullName, cls.name) ||
        !(base instanceof PyGlobal) || base.fullName !== "builtins.object" || baseState !== null
      ) {
        this.#fail("copyreg._reconstructor only builds plain objects of allowed classes");
      }
      return new PyObject(cls.fullName, []);
    }
    return new PyObject(full, args, kwargs);
  }

  #build(target: unknown, state: unknown): void {
    if (target instanceof PyObject) {
      target.state = state;
    } else if (target instanceof Map) {
      // An OrderedDict's instance attributes (torch keeps `_metadata` there): kept aside.
      MAP_ATTRIBUTES.set(target, state);
    } else {
      this.#fail("BUILD on a value that is not an object");
    }
  }
}

const MAP_ATTRIBUTES = new WeakMap<Map<unknown, unknown>, unknown>();

/** Instance attributes a pickle set on a dict (e.g. a torch state dict's `_metadata`). */
export function pickledAttributes(dict: Map<unknown, unknown>): unknown {
  return MAP_ATTRIBUTES.get(dict);
}

/** Elements the allowlisted calls of a pickle of `n` bytes may copy in all. */
function budgetFor(n: number): number {
  return n + (1 << 20);
}

/** Elements a builtin call would copy out of `x` (its length or size). */
function sizeOf(x: unknown): number {
  if (typeof x === "string" || Array.isArray(x) || x instanceof Uint8Array) return x.length;
  if (x instanceof Map || x instanceof Set) return x.size;
  return 1;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** Little-endian two's complement bytes to an integer, in linear time (one hex parse). */
function decodeLong(bytes: Uint8Array): number | bigint {
  if (bytes.length === 0) return 0;
  const digits: string[] = [];
  for (let i = bytes.length - 1; i >= 0; i--) digits.push(HEX[bytes[i]]);
  let v = BigInt(`0x${digits.join("")}`);
  if (bytes[bytes.length - 1] & 0x80) v -= 1n << BigInt(bytes.length * 8);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
    ? Number(v)
    : v;
}

function utf8(b: Uint8Array): string {
  return new TextDecoder("utf-8").decode(b);
}

function latin1(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 8192) {
    s += String.fromCharCode(...b.subarray(i, i + 8192));
  }
  return s;
}

function iterableOf(x: unknown, at: string): Iterable<unknown> {
  if (Array.isArray(x) || x instanceof Set) return x;
  if (x instanceof Map) return x.keys();
  throw new FormatError(`${at}: argument is not a list, tuple, set or dict`);
}

function toMap(x: unknown, at: string): Map<unknown, unknown> {
  const m = new Map<unknown, unknown>();
  if (x === undefined || x === null) return m;
  if (x instanceof Map) return new Map(x);
  for (const pair of iterableOf(x, at)) {
    if (!Array.isArray(pair) || pair.length !== 2) {
      throw new FormatError(`${at}: item is not a pair`);
    }
    m.set(pair[0], pair[1]);
  }
  return m;
}

function encodeString(s: unknown, encoding: unknown, at: string): Uint8Array {
  if (typeof s !== "string") throw new FormatError(`${at}: needs a string`);
  if (typeof encoding !== "string") {
    throw new FormatError(`${at}: encoding is ${describeValue(encoding)}, not a string`);
  }
  const enc = encoding.toLowerCase().replace("_", "-");
  if (enc === "latin1" || enc === "latin-1" || enc === "iso-8859-1") {
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c > 0xff) throw new FormatError(`${at}: character U+${c.toString(16)} is not latin-1`);
      out[i] = c;
    }
    return out;
  }
  if (enc === "utf-8" || enc === "utf8") return new TextEncoder().encode(s);
  throw new FormatError(`${at}: unsupported encoding ${describeValue(encoding)}`);
}

function toBytes(args: readonly unknown[], at: string): Uint8Array {
  if (args.length === 0) return new Uint8Array(0);
  const [x, encoding] = args;
  if (x instanceof Uint8Array) return x.slice();
  if (typeof x === "string") return encodeString(x, encoding ?? "utf-8", at);
  if (Array.isArray(x) && x.every((v) => Number.isInteger(v) && v >= 0 && v < 256)) {
    return Uint8Array.from(x as number[]);
  }
  // bytes(n) would allocate n bytes from a 5-byte pickle: refused as a memory bomb.
  throw new FormatError(`${at}: unsupported bytes/bytearray arguments`);
}

const OPCODE_NAMES: Record<number, string> = {
  0x28: "MARK",
  0x2e: "STOP",
  0x46: "FLOAT",
  0x49: "INT",
  0x4c: "LONG",
  0x50: "PERSID",
  0x53: "STRING",
  0x56: "UNICODE",
  0x67: "GET",
  0x69: "INST",
  0x70: "PUT",
  0x82: "EXT1",
  0x83: "EXT2",
  0x84: "EXT4",
};

function opcodeName(op: number): string {
  return OPCODE_NAMES[op] ?? "unknown";
}
