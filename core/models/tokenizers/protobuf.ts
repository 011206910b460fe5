/**
 * A minimal protobuf wire-format reader: enough to walk a message's fields (varints, fixed32/64,
 * length-delimited) without a schema. Used to read sentencepiece `ModelProto` files.
 *
 * @module
 */

/** Wire types of the protobuf encoding. */
export const WireType = { Varint: 0, Fixed64: 1, Bytes: 2, Fixed32: 5 } as const;

/** One field as it appears on the wire. */
export interface ProtoField {
  /** Field number from the schema. */
  field: number;
  /** Wire type (see {@link WireType}). */
  wire: number;
  /** Varint value (as bigint to keep all 64 bits); set for wire type 0. */
  varint?: bigint;
  /** Raw bytes: the payload of a length-delimited field or the 4/8 bytes of a fixed field. */
  bytes?: Uint8Array;
}

/**
 * Iterate over the top-level fields of one encoded message.
 *
 * @param buf encoded message
 * @param source a name for error messages (usually the file path)
 * @throws Error naming `source` when the bytes are not valid protobuf
 */
export function* readFields(buf: Uint8Array, source: string): Generator<ProtoField> {
  let pos = 0;
  const fail = (why: string): never => {
    throw new Error(`${source}: malformed protobuf at byte ${pos}: ${why}`);
  };
  const varint = (): bigint => {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (pos >= buf.length) fail("truncated varint");
      const b = buf[pos++];
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
      shift += 7n;
      if (shift > 63n) fail("varint longer than 10 bytes");
    }
  };
  const take = (n: number): Uint8Array => {
    if (n < 0 || pos + n > buf.length) fail(`field of ${n} bytes runs past the end`);
    const out = buf.subarray(pos, pos + n);
    pos += n;
    return out;
  };
  while (pos < buf.length) {
    const key = varint();
    const field = Number(key >> 3n);
    const wire = Number(key & 7n);
    if (field === 0) fail("field number 0");
    switch (wire) {
      case WireType.Varint:
        yield { field, wire, varint: varint() };
        break;
      case WireType.Fixed64:
        yield { field, wire, bytes: take(8) };
        break;
      case WireType.Bytes:
        yield { field, wire, bytes: take(Number(varint())) };
        break;
      case WireType.Fixed32:
        yield { field, wire, bytes: take(4) };
        break;
      default:
        fail(`unsupported wire type ${wire} (field ${field})`);
    }
  }
}

/** Decode a fixed32 field's bytes as a little-endian IEEE float. */
export function fieldFloat(f: ProtoField): number {
  const b = f.bytes!;
  return new DataView(b.buffer, b.byteOffset, 4).getFloat32(0, true);
}

/** Decode a length-delimited field as UTF-8 text. */
export function fieldString(f: ProtoField): string {
  return new TextDecoder().decode(f.bytes!);
}

/** Decode a varint field as a signed 32-bit int (protobuf int32 semantics). */
export function fieldInt32(f: ProtoField): number {
  return Number(BigInt.asIntN(32, f.varint!));
}

/** Decode a varint field as a boolean. */
export function fieldBool(f: ProtoField): boolean {
  return f.varint! !== 0n;
}
