/**
 * The JavaScript values the unpickler (`pickle.ts`) builds beyond plain data: {@link PyGlobal} (a
 * class reference) and {@link PyObject} (an inert record of a call), and the conversions the
 * allowlisted builtins make (dict(), set(), bytes(), _codecs.encode), which throw a
 * {@link FormatError} naming `at` on arguments they cannot convert.
 *
 * @module
 */

import { describeValue, FormatError } from "./format_error.ts";

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

/** Elements a builtin call would copy out of `x` (its length or size). */
export function sizeOf(x: unknown): number {
  if (typeof x === "string" || Array.isArray(x) || x instanceof Uint8Array) return x.length;
  if (x instanceof Map || x instanceof Set) return x.size;
  return 1;
}

export function iterableOf(x: unknown, at: string): Iterable<unknown> {
  if (Array.isArray(x) || x instanceof Set) return x;
  if (x instanceof Map) return x.keys();
  throw new FormatError(`${at}: argument is not a list, tuple, set or dict`);
}

export function toMap(x: unknown, at: string): Map<unknown, unknown> {
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

export function encodeString(s: unknown, encoding: unknown, at: string): Uint8Array {
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

export function toBytes(args: readonly unknown[], at: string): Uint8Array {
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
