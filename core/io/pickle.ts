/**
 * A restricted unpickler: it decodes Python pickles (protocols 2 to 5, plus the binary opcodes of
 * protocol 1) into inert JavaScript values and NEVER executes anything. A global (GLOBAL,
 * STACK_GLOBAL) resolves only when its name is on an allowlist; calling one either builds a plain
 * JavaScript value (OrderedDict, set, bytes) or records the call as a {@link PyObject} for a
 * consumer (the numpy and torch readers) to interpret. Anything else is refused with an Error naming
 * the opcode or global and its byte position. This file is the stack machine; `pickle_input.ts`
 * reads the bytes, `pickle_globals.ts` holds the allowlist and what its calls give, and
 * `pickle_values.ts` the {@link PyGlobal} and {@link PyObject} records.
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

import { clip } from "./format_error.ts";
import { buildObject, callGlobal, type CallSite, resolveGlobal } from "./pickle_globals.ts";
import { decodeLong, latin1, PickleInput, utf8 } from "./pickle_input.ts";
import type { PyGlobal } from "./pickle_values.ts";

export { pickledAttributes } from "./pickle_globals.ts";
export { PyGlobal, PyObject } from "./pickle_values.ts";

/** Largest LONG1/LONG4 integer accepted, in bytes (32768 bits); no tensor file needs more. */
export const MAX_LONG_BYTES = 4096;

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
  readonly #in: PickleInput;
  readonly #opts: UnpickleOptions;
  #stack: unknown[] = [];
  #marks: unknown[][] = [];
  readonly #memo = new Map<number, unknown>();
  /** Elements the allowlisted calls may still copy (dict(d), set(l), bytes(b), ...). */
  #budget: number;
  /** What the allowlisted calls may use of this unpickler. */
  readonly #site: CallSite;

  constructor(bytes: Uint8Array, opts: UnpickleOptions) {
    this.#in = new PickleInput(bytes, opts.source ?? "pickle");
    this.#opts = opts;
    // A legitimate pickle copies each value it holds at most once (set(list), bytes(str), ...),
    // and every element copied took at least one input byte to write.
    this.#budget = budgetFor(bytes.length);
    this.#site = {
      allowClasses: opts.allowClasses,
      at: () => this.#in.at(),
      fail: (msg) => this.#fail(msg),
      spend: (n, what) => this.#spend(n, what),
    };
  }

  #fail(msg: string): never {
    return this.#in.fail(msg);
  }

  /** Charges `n` copied elements to the work budget; a stream that copies more is refused. */
  #spend(n: number, what: string): void {
    this.#budget -= n;
    if (this.#budget < 0) {
      this.#fail(
        `${what} copies more than a pickle of ${this.#in.bytes.length} bytes may ` +
          `(${budgetFor(this.#in.bytes.length)} elements in all): refused as a work bomb`,
      );
    }
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
    const input = this.#in;
    const b = input.bytes;
    while (input.pos < b.length) {
      input.opPos = input.pos;
      const op = b[input.pos++];
      switch (op) {
        case 0x80: { // PROTO
          const proto = input.u8();
          if (proto > 5) this.#fail(`unsupported pickle protocol ${proto}`);
          break;
        }
        case 0x95: { // FRAME: a read-ahead hint, but a frame must lie within the data
          const n = input.u64();
          if (input.pos + n > b.length) {
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
          this.#push(input.i32());
          break;
        case 0x4b: // BININT1
          this.#push(input.u8());
          break;
        case 0x4d: // BININT2
          this.#push(input.u16());
          break;
        case 0x8a: // LONG1 (at most 255 bytes)
          this.#push(decodeLong(input.take(input.u8())));
          break;
        case 0x8b: { // LONG4: length checked against the input and the cap before decoding
          const n = input.i32();
          if (n < 0) this.#fail(`LONG4 with negative length ${n}`);
          if (input.pos + n > b.length) input.take(n); // names the overrun
          if (n > MAX_LONG_BYTES) {
            this.#fail(`LONG4 integer of ${n} bytes exceeds the ${MAX_LONG_BYTES}-byte limit`);
          }
          this.#push(decodeLong(input.take(n)));
          break;
        }
        case 0x47: // BINFLOAT (big-endian double)
          this.#push(input.f64());
          break;
        case 0x58: // BINUNICODE
          this.#push(utf8(input.take(input.u32())));
          break;
        case 0x8c: // SHORT_BINUNICODE
          this.#push(utf8(input.take(input.u8())));
          break;
        case 0x8d: // BINUNICODE8
          this.#push(utf8(input.take(input.u64())));
          break;
        case 0x54: { // BINSTRING (Python 2 str)
          const n = input.i32();
          if (n < 0) this.#fail(`BINSTRING with negative length ${n}`);
          this.#push(latin1(input.take(n)));
          break;
        }
        case 0x55: // SHORT_BINSTRING
          this.#push(latin1(input.take(input.u8())));
          break;
        case 0x42: // BINBYTES
          this.#push(input.take(input.u32()).slice());
          break;
        case 0x43: // SHORT_BINBYTES
          this.#push(input.take(input.u8()).slice());
          break;
        case 0x8e: // BINBYTES8
        case 0x96: // BYTEARRAY8
          this.#push(input.take(input.u64()).slice());
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
          this.#push(this.#memoGet(input.u8()));
          break;
        case 0x6a: // LONG_BINGET
          this.#push(this.#memoGet(input.u32()));
          break;
        case 0x71: // BINPUT
          this.#memo.set(input.u8(), this.#top());
          break;
        case 0x72: // LONG_BINPUT
          this.#memo.set(input.u32(), this.#top());
          break;
        case 0x94: // MEMOIZE
          this.#memo.set(this.#memo.size, this.#top());
          break;

        // --- objects: only allowlisted names, only inert results
        case 0x63: { // GLOBAL
          const module = input.line();
          const name = input.line();
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

  #resolve(module: string, name: string, op: string): PyGlobal {
    return resolveGlobal(module, name, this.#opts.allowClasses) ??
      this.#fail(
        `global ${clip(module)}.${clip(name)} is not allowed (${op}); nothing was executed`,
      );
  }

  #call(fn: unknown, args: readonly unknown[], kwargs: Map<unknown, unknown>, op: string): unknown {
    return callGlobal(fn, args, kwargs, op, this.#site);
  }

  #build(target: unknown, state: unknown): void {
    if (!buildObject(target, state)) this.#fail("BUILD on a value that is not an object");
  }
}

/** Elements the allowlisted calls of a pickle of `n` bytes may copy in all. */
function budgetFor(n: number): number {
  return n + (1 << 20);
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
