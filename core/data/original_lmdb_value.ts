/**
 * Decoding the values of the original Python tool's LMDB databases: `__len__` is a pickled int,
 * `__keys__` a pickled list of `bytes`, and each pair a pickled `LMDB_ndarray` object (attributes
 * `shape` tuple, `dtype` numpy dtype, `array` raw bytes). Pickles are never executed: they go
 * through the project's restricted unpickler in `core/io/`.
 *
 * @module
 */

import { describeValue, FormatError } from "../io/format_error.ts";
import { unpickle } from "../io/pickle.ts";
import { decodeNumpyPickle, type NumpyDtype } from "../io/numpy_pickle.ts";
import type { NpyArray, NpyDtype } from "./npy.ts";

/** Whether an LMDB value is a pickle (protocol 2 to 5) rather than this project's plain data. */
export function isPickled(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x80 && bytes[1] >= 2 && bytes[1] <= 5;
}

/** The original's `__len__`: a pickled non-negative int. */
export function decodeOriginalLength(bytes: Uint8Array, source: string): number {
  const v = unpickle(bytes, { source });
  const n = typeof v === "bigint" ? Number(v) : v;
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 0) {
    throw new FormatError(`${source}: ${describeValue(v)} is not a non-negative integer`);
  }
  return n;
}

/** The original's `__keys__`: a pickled list of byte strings. */
export function decodeOriginalKeys(bytes: Uint8Array, source: string): Uint8Array[] {
  const v = unpickle(bytes, { source });
  if (!Array.isArray(v)) {
    throw new FormatError(`${source}: ${describeValue(v)} is not a list of byte strings`);
  }
  const bad = v.findIndex((k) => !(k instanceof Uint8Array));
  if (bad >= 0) {
    throw new FormatError(
      `${source}: item ${bad} is ${describeValue(v[bad])}, not a byte string (a list of keys)`,
    );
  }
  return v as Uint8Array[];
}

const TO_NPY: Partial<Record<NumpyDtype, NpyDtype>> = {
  float16: "<f2",
  float32: "<f4",
  float64: "<f8",
  int32: "<i4",
  int64: "<i8",
  uint8: "|u1",
};

/** Decodes one pair value of the original tool: a pickled `LMDB_ndarray` (any module). */
export function decodeOriginalPair(bytes: Uint8Array, source: string): NpyArray {
  const arr = decodeNumpyPickle(bytes, { source });
  const dtype = TO_NPY[arr.dtype];
  if (!dtype) throw new FormatError(`${source}: unsupported pair dtype ${arr.dtype}`);
  return { dtype, shape: arr.shape, data: arr.data as NpyArray["data"] };
}
