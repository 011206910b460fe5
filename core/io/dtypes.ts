/**
 * Element types of stored tensors, named as the safetensors format names them, and their conversion
 * to float32 on the host.
 *
 * @module
 */

import { bf16BitsToF32, f16BitsToF32 } from "./half.ts";

/** Element type of a stored tensor (safetensors spelling). All are little-endian. */
export type WeightDtype =
  | "BOOL"
  | "U8"
  | "I8"
  | "I16"
  | "U16"
  | "F16"
  | "BF16"
  | "I32"
  | "U32"
  | "F32"
  | "F64"
  | "I64"
  | "U64"
  | "F8_E4M3"
  | "F8_E5M2";

/** Bytes per element of each dtype. */
export const DTYPE_BYTES: Readonly<Record<WeightDtype, number>> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
  F8_E4M3: 1,
  F8_E5M2: 1,
};

/** True when `name` is a dtype this module knows. */
export function isWeightDtype(name: unknown): name is WeightDtype {
  return typeof name === "string" && Object.hasOwn(DTYPE_BYTES, name);
}

/** Number of elements of a shape (1 for a scalar shape `[]`). */
export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * Converts raw little-endian tensor bytes of `dtype` to float32. Integers beyond 2^24 lose precision
 * as float32 does; 8-bit float formats are refused. `what` names the tensor in errors. With `owned`
 * the caller hands `raw` over, and F32 data may be returned as a view of its buffer, uncopied.
 */
export function rawToF32(
  dtype: WeightDtype,
  raw: Uint8Array,
  what: string,
  owned = false,
): Float32Array {
  const size = DTYPE_BYTES[dtype];
  if (raw.byteLength % size !== 0) {
    throw new Error(`${what}: ${raw.byteLength} bytes is not a whole number of ${dtype} elements`);
  }
  const n = raw.byteLength / size;
  // Typed-array views need aligned offsets; copy to a fresh buffer when the input is unaligned.
  const buf = raw.byteOffset % 8 === 0 ? raw : raw.slice();
  const view = <T>(Ctor: new (b: ArrayBufferLike, o: number, l: number) => T): T =>
    new Ctor(buf.buffer, buf.byteOffset, n);
  switch (dtype) {
    case "F32":
      // A buffer handed over whole need not be copied (large tensors).
      return (buf !== raw || owned) && buf.byteOffset === 0 &&
          buf.byteLength === buf.buffer.byteLength
        ? view(Float32Array)
        : view(Float32Array).slice();
    case "F16":
      return f16BitsToF32(view(Uint16Array));
    case "BF16":
      return bf16BitsToF32(view(Uint16Array));
    case "F64":
      return Float32Array.from(view(Float64Array));
    case "I64":
      return Float32Array.from(view(BigInt64Array), (v) => Number(v));
    case "U64":
      return Float32Array.from(view(BigUint64Array), (v) => Number(v));
    case "I32":
      return Float32Array.from(view(Int32Array));
    case "U32":
      return Float32Array.from(view(Uint32Array));
    case "I16":
      return Float32Array.from(view(Int16Array));
    case "U16":
      return Float32Array.from(view(Uint16Array));
    case "I8":
      return Float32Array.from(view(Int8Array));
    case "U8":
    case "BOOL":
      return Float32Array.from(buf.subarray(0, n));
    default:
      throw new Error(`${what}: cannot convert dtype ${dtype} to float32`);
  }
}
