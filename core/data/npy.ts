/**
 * NumPy `.npy` files: a reader for format versions 1.0, 2.0 and 3.0 and a writer that produces
 * the same bytes as `numpy.save` (numpy 1.24: sorted header keys, growth padding after the
 * header dict, spaces + `\n` up to a multiple of 64 bytes).
 *
 * Float16 data travels as its raw bits in a `Uint16Array`.
 *
 * The reader refuses, with a {@link FormatError} naming the file and field, what numpy itself
 * refuses or what could make it misbehave: a header over numpy's {@link NPY_MAX_HEADER_BYTES},
 * literals nested deeper than {@link NPY_MAX_NESTING}, more than 64 dimensions.
 *
 * @module
 */

import { writeFileAtomic } from "./atomic_write.ts";
import { clip, describeValue, FormatError } from "../io/format_error.ts";

/** numpy's default `max_header_size` (np.load refuses bigger headers as unsafe). */
export const NPY_MAX_HEADER_BYTES = 10_000;
/** Deepest nesting of tuples/lists accepted in a header (a shape is one level). */
export const NPY_MAX_NESTING = 8;
/** numpy's limit on array dimensions (NPY_MAXDIMS of numpy 2). */
const NPY_MAX_DIMS = 64;

/** Array element types this module reads and writes, as numpy spells them in `descr`. */
export type NpyDtype = "<f2" | "<f4" | "<f8" | "<i4" | "<i8" | "|u1";

/** The typed array that holds each dtype's elements (f2 as raw IEEE half bits). */
export type NpyData =
  | Uint16Array
  | Float32Array
  | Float64Array
  | Int32Array
  | BigInt64Array
  | Uint8Array;

/** An n-dimensional array in C (row-major) order. */
export interface NpyArray {
  dtype: NpyDtype;
  shape: number[];
  data: NpyData;
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"
const ALIGN = 64;
/** numpy >= 1.23 leaves room for the growth axis to reach this many digits. */
const GROWTH_AXIS_MAX_DIGITS = 21;

const ITEM_SIZE: Record<NpyDtype, number> = {
  "<f2": 2,
  "<f4": 4,
  "<f8": 8,
  "<i4": 4,
  "<i8": 8,
  "|u1": 1,
};

/** Other spellings numpy accepts for the same little-endian types. */
const DESCR_ALIASES: Record<string, NpyDtype> = {
  "<f2": "<f2",
  "<f4": "<f4",
  "<f8": "<f8",
  "<i4": "<i4",
  "<i8": "<i8",
  "|u1": "|u1",
  "<u1": "|u1",
  "=u1": "|u1",
};

/** Number of elements of a shape (1 for a 0-d array). */
export function shapeSize(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function dtypeOfData(data: NpyData): NpyDtype {
  if (data instanceof Uint16Array) return "<f2";
  if (data instanceof Float32Array) return "<f4";
  if (data instanceof Float64Array) return "<f8";
  if (data instanceof Int32Array) return "<i4";
  if (data instanceof BigInt64Array) return "<i8";
  if (data instanceof Uint8Array) return "|u1";
  throw new Error("unsupported typed array for .npy");
}

function viewAs(dtype: NpyDtype, buf: ArrayBuffer): NpyData {
  switch (dtype) {
    case "<f2":
      return new Uint16Array(buf);
    case "<f4":
      return new Float32Array(buf);
    case "<f8":
      return new Float64Array(buf);
    case "<i4":
      return new Int32Array(buf);
    case "<i8":
      return new BigInt64Array(buf);
    case "|u1":
      return new Uint8Array(buf);
  }
}

// Typed arrays use the host's byte order; .npy data here is little-endian.
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error("npy.ts assumes a little-endian host");
}

/** The header text numpy writes for this array, before alignment padding. */
function headerDict(dtype: NpyDtype, shape: readonly number[]): string {
  const shapeRepr = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(", ")})`;
  let text = `{'descr': '${dtype}', 'fortran_order': False, 'shape': ${shapeRepr}, }`;
  if (shape.length > 0) text += " ".repeat(GROWTH_AXIS_MAX_DIGITS - String(shape[0]).length);
  return text;
}

/**
 * Encodes an array as `.npy` bytes identical to `numpy.save` (numpy 1.24).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * const data = Float32Array.from([0, 1, 2, 3, 4, 5]);
 * const bytes = encodeNpy({ dtype: "<f4", shape: [2, 3], data });
 * // numpy.save(f, np.arange(6, dtype="<f4").reshape(2, 3)): a 128-byte header, then the data
 * assert.equal(bytes.length, 128 + 6 * 4);
 * assert.match(new TextDecoder().decode(bytes.subarray(0, 128)), /'shape': \(2, 3\)/);
 * assert.deepEqual(decodeNpy(bytes), { dtype: "<f4", shape: [2, 3], data });
 * ```
 */
export function encodeNpy(array: NpyArray): Uint8Array {
  const { dtype, shape, data } = array;
  if (!(dtype in ITEM_SIZE)) throw new Error(`unsupported .npy dtype ${dtype}`);
  if (dtypeOfData(data) !== dtype) {
    throw new Error(`.npy dtype ${dtype} does not match data ${data.constructor.name}`);
  }
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new Error(`bad .npy shape [${shape}]`);
  }
  if (shapeSize(shape) !== data.length) {
    throw new Error(`.npy shape [${shape}] needs ${shapeSize(shape)} elements, got ${data.length}`);
  }
  const header = new TextEncoder().encode(headerDict(dtype, shape));
  // Version 1.0 holds the header length in 2 bytes; bigger headers need 2.0 (4 bytes).
  let lenBytes = 2;
  let hlen = header.length + 1;
  let padded = hlen + (ALIGN - ((MAGIC.length + 2 + lenBytes + hlen) % ALIGN));
  if (padded > 0xffff) {
    lenBytes = 4;
    hlen = header.length + 1;
    padded = hlen + (ALIGN - ((MAGIC.length + 2 + lenBytes + hlen) % ALIGN));
  }
  const prefix = MAGIC.length + 2 + lenBytes;
  const dataBytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint8Array(prefix + padded + dataBytes.length);
  out.set(MAGIC, 0);
  out[6] = lenBytes === 2 ? 1 : 2;
  out[7] = 0;
  const dv = new DataView(out.buffer);
  if (lenBytes === 2) dv.setUint16(8, padded, true);
  else dv.setUint32(8, padded, true);
  out.set(header, prefix);
  out.fill(0x20, prefix + header.length, prefix + padded - 1);
  out[prefix + padded - 1] = 0x0a;
  out.set(dataBytes, prefix + padded);
  return out;
}

/** A tiny reader for the Python literal that is a .npy header dict. */
class HeaderParser {
  pos = 0;
  constructor(readonly text: string, readonly source: string) {}

  fail(what: string): never {
    throw new FormatError(
      `${this.source}: malformed .npy header (${what}): ${clip(this.text.trim(), 200)}`,
    );
  }
  skipSpace() {
    while (this.pos < this.text.length && /\s/.test(this.text[this.pos])) this.pos++;
  }
  eat(ch: string): boolean {
    this.skipSpace();
    if (this.text[this.pos] === ch) {
      this.pos++;
      return true;
    }
    return false;
  }
  expect(ch: string) {
    if (!this.eat(ch)) this.fail(`expected '${ch}' at ${this.pos}`);
  }
  value(depth = 0): unknown {
    if (depth > NPY_MAX_NESTING) {
      this.fail(`nested more than ${NPY_MAX_NESTING} deep at ${this.pos}`);
    }
    this.skipSpace();
    const ch = this.text[this.pos];
    if (ch === "'" || ch === '"') {
      const end = this.text.indexOf(ch, this.pos + 1);
      if (end < 0) this.fail("unterminated string");
      const s = this.text.slice(this.pos + 1, end);
      this.pos = end + 1;
      return s;
    }
    if (ch === "(" || ch === "[") {
      const close = ch === "(" ? ")" : "]";
      this.pos++;
      const items: unknown[] = [];
      while (!this.eat(close)) {
        items.push(this.value(depth + 1));
        if (!this.eat(",")) {
          this.expect(close);
          break;
        }
      }
      return items;
    }
    const atom = /True|False|-?\d+L?/y;
    atom.lastIndex = this.pos;
    const m = atom.exec(this.text);
    if (!m) this.fail(`unexpected text at ${this.pos}`);
    this.pos += m[0].length;
    if (m[0] === "True") return true;
    if (m[0] === "False") return false;
    return Number(m[0].replace("L", ""));
  }
  dict(): Record<string, unknown> {
    this.expect("{");
    const out: Record<string, unknown> = Object.create(null); // "__proto__" is just a key
    while (!this.eat("}")) {
      const key = this.value();
      if (typeof key !== "string") this.fail("non-string key");
      this.expect(":");
      out[key] = this.value();
      if (!this.eat(",")) {
        this.expect("}");
        break;
      }
    }
    return out;
  }
}

/**
 * Decodes `.npy` bytes (format 1.0, 2.0 or 3.0; C order only). `source` names the file in errors.
 */
export function decodeNpy(bytes: Uint8Array, source = "<npy bytes>"): NpyArray {
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new FormatError(`${source}: not a .npy file (bad magic)`);
  }
  const major = bytes[6];
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerStart: number;
  let headerLen: number;
  if (major === 1) {
    headerStart = 10;
    headerLen = dv.getUint16(8, true);
  } else if (major === 2 || major === 3) {
    if (bytes.length < 12) throw new FormatError(`${source}: truncated .npy header`);
    headerStart = 12;
    headerLen = dv.getUint32(8, true);
  } else {
    throw new FormatError(`${source}: unsupported .npy format version ${major}.${bytes[7]}`);
  }
  const dataStart = headerStart + headerLen;
  if (bytes.length < dataStart) {
    throw new FormatError(
      `${source}: truncated .npy header (header length ${headerLen}, file has ${bytes.length} bytes)`,
    );
  }
  if (headerLen > NPY_MAX_HEADER_BYTES) {
    throw new FormatError(
      `${source}: .npy header length ${headerLen} exceeds numpy's ${NPY_MAX_HEADER_BYTES}-byte limit`,
    );
  }
  const headerBytes = bytes.subarray(headerStart, dataStart);
  const text = major === 3 ? new TextDecoder().decode(headerBytes) : latin1(headerBytes);
  const dict = new HeaderParser(text, source).dict();
  const descr = dict["descr"];
  const dtype = typeof descr === "string" && Object.hasOwn(DESCR_ALIASES, descr)
    ? DESCR_ALIASES[descr]
    : undefined;
  if (!dtype) {
    throw new FormatError(
      `${source}: unsupported .npy dtype ${describeValue(descr)} (supported: ${
        Object.keys(ITEM_SIZE).join(", ")
      })`,
    );
  }
  if (dict["fortran_order"] === true) {
    throw new FormatError(`${source}: Fortran-ordered .npy arrays are not supported`);
  }
  if (dict["fortran_order"] !== false) {
    throw new FormatError(
      `${source}: .npy fortran_order is ${describeValue(dict["fortran_order"])}, not a boolean`,
    );
  }
  const shape = dict["shape"];
  if (
    !Array.isArray(shape) || shape.length > NPY_MAX_DIMS ||
    !shape.every((d) => typeof d === "number" && Number.isSafeInteger(d) && d >= 0)
  ) {
    throw new FormatError(
      `${source}: bad .npy shape ${
        describeValue(shape)
      } (a tuple of at most ${NPY_MAX_DIMS} sizes)`,
    );
  }
  const nbytes = shapeSize(shape) * ITEM_SIZE[dtype];
  if (bytes.length < dataStart + nbytes) {
    throw new FormatError(
      `${source}: truncated .npy data (shape [${shape}] ${dtype} needs ${nbytes} bytes, file has ${
        bytes.length - dataStart
      })`,
    );
  }
  // Copy into a fresh buffer: the data offset need not suit the typed array's alignment.
  const buf = bytes.slice(dataStart, dataStart + nbytes).buffer;
  return { dtype, shape: shape as number[], data: viewAs(dtype, buf) };
}

/** Bytes to a string, one char per byte, without spreading a huge argument list. */
function latin1(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 4096) {
    s += String.fromCharCode(...b.subarray(i, i + 4096));
  }
  return s;
}

/** Reads a `.npy` file; errors name the file. */
export async function readNpy(path: string): Promise<NpyArray> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (err) {
    throw new Error(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  return decodeNpy(bytes, path);
}

/** Writes a `.npy` file atomically (`<path>.tmp` then rename), byte-identical to `numpy.save`. */
export async function writeNpy(path: string, array: NpyArray): Promise<void> {
  await writeFileAtomic(path, encodeNpy(array));
}
