/**
 * The byte stream under the unpickler (`pickle.ts`): {@link PickleInput}, a cursor that checks
 * every length against the bytes that remain before it takes them (so a hostile length never
 * becomes a huge buffer) and names the source and the opcode's byte in its errors, and the decoders
 * of pickle's scalar encodings (LONG integers, utf-8 and latin-1 text).
 *
 * @module
 */

import { FormatError } from "./format_error.ts";

/** A bounds-checked cursor over a pickle's bytes. */
export class PickleInput {
  readonly #v: DataView;
  /** Position of the next byte to read. */
  pos = 0;
  /** Position of the opcode being run: where errors say they happened. */
  opPos = 0;

  constructor(readonly bytes: Uint8Array, readonly source: string) {
    this.#v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** `source: byte N` of the opcode being run. */
  at(): string {
    return `${this.source}: byte ${this.opPos}`;
  }

  /** Throws a {@link FormatError} at the opcode being run. */
  fail(msg: string): never {
    throw new FormatError(`${this.at()}: ${msg}`);
  }

  /** Claims `n` input bytes; lengths are checked against the input so no huge buffer is made. */
  take(n: number): Uint8Array {
    if (!Number.isSafeInteger(n) || n < 0) this.fail(`negative or absurd length ${n}`);
    if (this.pos + n > this.bytes.length) {
      this.fail(
        `length ${n} runs past the end of the data (${this.bytes.length - this.pos} of ` +
          `${this.bytes.length} bytes left)`,
      );
    }
    const out = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  u8(): number {
    return this.take(1)[0];
  }
  u16(): number {
    this.take(2);
    return this.#v.getUint16(this.pos - 2, true);
  }
  u32(): number {
    this.take(4);
    return this.#v.getUint32(this.pos - 4, true);
  }
  i32(): number {
    this.take(4);
    return this.#v.getInt32(this.pos - 4, true);
  }
  /** A u64 length, refused beyond 2^53. */
  u64(): number {
    this.take(8);
    const v = this.#v.getBigUint64(this.pos - 8, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`length ${v} is absurd`);
    return Number(v);
  }
  /** A big-endian double (BINFLOAT). */
  f64(): number {
    this.take(8);
    return this.#v.getFloat64(this.pos - 8, false);
  }
  /** A newline-terminated latin-1 line, without the newline. */
  line(): string {
    const end = this.bytes.indexOf(0x0a, this.pos);
    if (end < 0) this.fail("unterminated text line");
    return latin1(this.take(end - this.pos + 1).subarray(0, -1));
  }
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** Little-endian two's complement bytes to an integer, in linear time (one hex parse). */
export function decodeLong(bytes: Uint8Array): number | bigint {
  if (bytes.length === 0) return 0;
  const digits: string[] = [];
  for (let i = bytes.length - 1; i >= 0; i--) digits.push(HEX[bytes[i]]);
  let v = BigInt(`0x${digits.join("")}`);
  if (bytes[bytes.length - 1] & 0x80) v -= 1n << BigInt(bytes.length * 8);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
    ? Number(v)
    : v;
}

export function utf8(b: Uint8Array): string {
  return new TextDecoder("utf-8").decode(b);
}

export function latin1(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 8192) {
    s += String.fromCharCode(...b.subarray(i, i + 8192));
  }
  return s;
}
