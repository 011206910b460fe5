/**
 * A small, restricted pickle writer (protocol 4): None, booleans, integers, str, bytes, lists,
 * tuples, str-keyed dicts, and objects rebuilt from a named global (`cls.__new__(cls)` + state, or
 * `callable(*args)` + state). That is all the original tool's LMDB values hold. The output is the
 * byte sequence CPython's own `pickle.dumps(obj, protocol=4)` writes for the same objects (the C
 * pickler's framing, memoisation and batching). CPython's memo works by object identity; here only
 * a {@link PickleString} instance written twice is fetched back from the memo, every other value is
 * written out each time, as distinct Python objects would be.
 *
 * @example
 * ```ts
 * const bytes = pickleDumps([new Uint8Array([0x30]), new Uint8Array([0x31])]); // [b'0', b'1']
 * ```
 *
 * @module
 */

/**
 * A str with an identity: pickled once, then referred to from the memo wherever the same instance
 * appears again (as CPython does for one string object used twice, e.g. an interned name).
 */
export class PickleString {
  constructor(readonly value: string) {}
}

/** A Python tuple (JavaScript arrays pickle as lists). */
export class PickleTuple {
  constructor(readonly items: readonly PickleValue[]) {}
}

/** A module-level Python name, e.g. `numpy.dtype` (pickled as STACK_GLOBAL). */
export class PickleGlobal {
  constructor(readonly module: string | PickleString, readonly name: string | PickleString) {}
}

/**
 * An instance rebuilt as `cls.__new__(cls, *args)` then `__setstate__(state)` or a `__dict__`
 * update (what `object.__reduce_ex__(4)` gives for a plain class instance): NEWOBJ + BUILD.
 */
export class PickleNewObj {
  constructor(
    readonly cls: PickleGlobal,
    readonly args: readonly PickleValue[],
    readonly state?: PickleValue,
  ) {}
}

/** An object rebuilt as `callable(*args)` then given `state`: REDUCE (+ BUILD). */
export class PickleReduce {
  constructor(
    readonly callable: PickleGlobal,
    readonly args: readonly PickleValue[],
    readonly state?: PickleValue,
  ) {}
}

/** What this writer can pickle. Numbers must be integers; `Map` keys are strings. */
export type PickleValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | PickleString
  | Uint8Array
  | PickleValue[]
  | PickleTuple
  | Map<string | PickleString, PickleValue>
  | PickleGlobal
  | PickleNewObj
  | PickleReduce;

// Opcodes (pickletools names).
const PROTO = 0x80, FRAME = 0x95, STOP = 0x2e, MARK = 0x28, MEMOIZE = 0x94;
const NONE = 0x4e, NEWTRUE = 0x88, NEWFALSE = 0x89;
const BININT = 0x4a, BININT1 = 0x4b, BININT2 = 0x4d, LONG1 = 0x8a, LONG4 = 0x8b;
const SHORT_BINUNICODE = 0x8c, BINUNICODE = 0x58, BINUNICODE8 = 0x8d;
const SHORT_BINBYTES = 0x43, BINBYTES = 0x42, BINBYTES8 = 0x8e;
const EMPTY_TUPLE = 0x29, TUPLE1 = 0x85, TUPLE2 = 0x86, TUPLE3 = 0x87, TUPLE = 0x74;
const EMPTY_LIST = 0x5d, APPEND = 0x61, APPENDS = 0x65;
const EMPTY_DICT = 0x7d, SETITEM = 0x73, SETITEMS = 0x75;
const STACK_GLOBAL = 0x93, NEWOBJ = 0x81, REDUCE = 0x52, BUILD = 0x62;
const BINGET = 0x68, LONG_BINGET = 0x6a;

/** CPython's frame size target and smallest framed payload (Modules/_pickle.c). */
const FRAME_SIZE_TARGET = 64 * 1024;
const FRAME_SIZE_MIN = 4;
/** Items per APPENDS / SETITEMS batch (CPython's BATCHSIZE). */
const BATCH = 1000;
/** Nesting deeper than this is refused (CPython would hit its recursion limit). */
const MAX_DEPTH = 1000;

/** Output in CPython's frames: each frame is an 8-byte length plus its opcodes. */
class FramedOutput {
  private readonly done: Uint8Array[] = [];
  private frame: Uint8Array[] = [];
  private frameLen = 0;

  /** Bytes before framing starts (PROTO). */
  raw(bytes: Uint8Array): void {
    this.done.push(bytes);
  }

  write(bytes: Uint8Array): void {
    this.frame.push(bytes);
    this.frameLen += bytes.length;
  }

  /** A header and a payload; a payload of FRAME_SIZE_TARGET bytes or more goes outside frames. */
  writeData(header: Uint8Array, payload: Uint8Array): void {
    if (payload.length >= FRAME_SIZE_TARGET) {
      this.commit();
      this.done.push(header, payload);
    } else {
      this.write(header);
      this.write(payload);
    }
  }

  /** Called before each object is saved: a frame that reached the target size is closed. */
  boundary(): void {
    if (this.frameLen >= FRAME_SIZE_TARGET) this.commit();
  }

  commit(): void {
    if (this.frameLen === 0) return;
    if (this.frameLen >= FRAME_SIZE_MIN) {
      const head = new Uint8Array(9);
      head[0] = FRAME;
      new DataView(head.buffer).setBigUint64(1, BigInt(this.frameLen), true);
      this.done.push(head);
    }
    this.done.push(...this.frame);
    this.frame = [];
    this.frameLen = 0;
  }

  bytes(): Uint8Array {
    this.commit();
    const out = new Uint8Array(this.done.reduce((s, b) => s + b.length, 0));
    let off = 0;
    for (const b of this.done) {
      out.set(b, off);
      off += b.length;
    }
    return out;
  }
}

const op = (...codes: number[]) => Uint8Array.from(codes);

function u32(code: number, n: number): Uint8Array {
  const b = new Uint8Array(5);
  b[0] = code;
  new DataView(b.buffer).setUint32(1, n, true);
  return b;
}

function u64(code: number, n: number): Uint8Array {
  const b = new Uint8Array(9);
  b[0] = code;
  new DataView(b.buffer).setBigUint64(1, BigInt(n), true);
  return b;
}

/** Two's-complement little-endian bytes of `v`, as few as hold its sign (pickle's encode_long). */
function encodeLong(v: bigint): Uint8Array {
  if (v === 0n) return new Uint8Array(0);
  const bytes: number[] = [];
  let x = v;
  // Emit bytes until the rest is all sign and the last byte's top bit agrees with the sign.
  while (true) {
    const b = Number(x & 0xffn);
    bytes.push(b);
    x >>= 8n;
    if ((x === 0n && (b & 0x80) === 0) || (x === -1n && (b & 0x80) !== 0)) break;
  }
  return Uint8Array.from(bytes);
}

class Pickler {
  readonly out = new FramedOutput();
  private readonly utf8 = new TextEncoder();
  /** Memo slots taken so far (every MEMOIZE takes the next one). */
  private memoCount = 0;
  /** Memo slot of each PickleString already written. */
  private readonly shared = new Map<PickleString, number>();

  private memoize(): void {
    this.out.write(op(MEMOIZE));
    this.memoCount++;
  }

  save(v: PickleValue, depth: number): void {
    if (depth > MAX_DEPTH) throw new Error(`pickle writer: nesting deeper than ${MAX_DEPTH}`);
    this.out.boundary();
    if (v === null) return this.out.write(op(NONE));
    if (typeof v === "boolean") return this.out.write(op(v ? NEWTRUE : NEWFALSE));
    if (typeof v === "number") {
      if (!Number.isSafeInteger(v)) {
        throw new Error(`pickle writer: only integers are supported, got ${v}`);
      }
      return this.saveInt(BigInt(v));
    }
    if (typeof v === "bigint") return this.saveInt(v);
    if (typeof v === "string") return this.saveStr(v);
    if (v instanceof PickleString) {
      const slot = this.shared.get(v);
      if (slot === undefined) {
        this.saveStr(v.value);
        this.shared.set(v, this.memoCount - 1);
      } else if (slot < 256) this.out.write(op(BINGET, slot));
      else this.out.write(u32(LONG_BINGET, slot));
      return;
    }
    if (v instanceof Uint8Array) return this.saveBytes(v);
    if (Array.isArray(v)) return this.saveList(v, depth);
    if (v instanceof PickleTuple) return this.saveTuple(v.items, depth);
    if (v instanceof Map) return this.saveDict(v, depth);
    if (v instanceof PickleGlobal) return this.saveGlobal(v);
    if (v instanceof PickleNewObj) {
      this.save(v.cls, depth + 1);
      this.save(new PickleTuple(v.args), depth + 1);
      this.out.write(op(NEWOBJ));
      this.memoize();
      return this.saveState(v.state, depth);
    }
    if (v instanceof PickleReduce) {
      this.save(v.callable, depth + 1);
      this.save(new PickleTuple(v.args), depth + 1);
      this.out.write(op(REDUCE));
      this.memoize();
      return this.saveState(v.state, depth);
    }
    throw new Error(`pickle writer: cannot pickle ${Object.prototype.toString.call(v)}`);
  }

  private saveState(state: PickleValue | undefined, depth: number): void {
    if (state === undefined) return;
    this.save(state, depth + 1);
    this.out.write(op(BUILD));
  }

  private saveInt(v: bigint): void {
    if (v >= 0n && v <= 0xffn) return this.out.write(op(BININT1, Number(v)));
    if (v >= 0n && v <= 0xffffn) {
      return this.out.write(op(BININT2, Number(v) & 0xff, Number(v) >> 8));
    }
    if (v >= -0x80000000n && v <= 0x7fffffffn) {
      const b = new Uint8Array(5);
      b[0] = BININT;
      new DataView(b.buffer).setInt32(1, Number(v), true);
      return this.out.write(b);
    }
    const data = encodeLong(v);
    if (data.length < 256) {
      this.out.write(op(LONG1, data.length));
      this.out.write(data);
    } else {
      this.out.write(u32(LONG4, data.length));
      this.out.write(data);
    }
  }

  private saveStr(s: string): void {
    const data = this.utf8.encode(s);
    if (data.length <= 0xff) this.out.writeData(op(SHORT_BINUNICODE, data.length), data);
    else if (data.length > 0xffffffff) this.out.writeData(u64(BINUNICODE8, data.length), data);
    else this.out.writeData(u32(BINUNICODE, data.length), data);
    this.memoize();
  }

  private saveBytes(b: Uint8Array): void {
    if (b.length <= 0xff) this.out.writeData(op(SHORT_BINBYTES, b.length), b);
    else if (b.length > 0xffffffff) this.out.writeData(u64(BINBYTES8, b.length), b);
    else this.out.writeData(u32(BINBYTES, b.length), b);
    this.memoize();
  }

  private saveTuple(items: readonly PickleValue[], depth: number): void {
    if (items.length === 0) return this.out.write(op(EMPTY_TUPLE));
    if (items.length <= 3) {
      for (const x of items) this.save(x, depth + 1);
      this.out.write(op([TUPLE1, TUPLE2, TUPLE3][items.length - 1]));
      return this.memoize();
    }
    this.out.write(op(MARK));
    for (const x of items) this.save(x, depth + 1);
    this.out.write(op(TUPLE));
    this.memoize();
  }

  private saveList(items: readonly PickleValue[], depth: number): void {
    this.out.write(op(EMPTY_LIST));
    this.memoize();
    if (items.length === 1) {
      this.save(items[0], depth + 1);
      return this.out.write(op(APPEND));
    }
    // As CPython's batch_list_exact: every batch, even a last one of one item, is MARK..APPENDS.
    for (let start = 0; start < items.length; start += BATCH) {
      this.out.write(op(MARK));
      for (const x of items.slice(start, start + BATCH)) this.save(x, depth + 1);
      this.out.write(op(APPENDS));
    }
  }

  private saveDict(d: Map<string | PickleString, PickleValue>, depth: number): void {
    this.out.write(op(EMPTY_DICT));
    this.memoize();
    const entries = [...d.entries()];
    if (entries.length === 1) {
      this.save(entries[0][0], depth + 1);
      this.save(entries[0][1], depth + 1);
      return this.out.write(op(SETITEM));
    }
    for (let start = 0; start < entries.length; start += BATCH) {
      this.out.write(op(MARK));
      for (const [k, x] of entries.slice(start, start + BATCH)) {
        if (typeof k !== "string" && !(k instanceof PickleString)) {
          throw new Error("pickle writer: dict keys must be strings");
        }
        this.save(k, depth + 1);
        this.save(x, depth + 1);
      }
      this.out.write(op(SETITEMS));
    }
  }

  private saveGlobal(g: PickleGlobal): void {
    const text = (x: string | PickleString) => (typeof x === "string" ? x : x.value);
    const [module, name] = [text(g.module), text(g.name)];
    if (!/^[A-Za-z_][\w.]*$/.test(module) || !/^[A-Za-z_][\w.]*$/.test(name)) {
      throw new Error(`pickle writer: "${module}.${name}" is not a Python name`);
    }
    this.save(g.module, 1);
    this.save(g.name, 1);
    this.out.write(op(STACK_GLOBAL));
    this.memoize();
  }
}

/** `pickle.dumps(value, protocol=4)` for the values {@link PickleValue} allows. */
export function pickleDumps(value: PickleValue): Uint8Array {
  const p = new Pickler();
  p.out.raw(op(PROTO, 4));
  p.save(value, 0);
  p.out.write(op(STOP));
  return p.out.bytes();
}
