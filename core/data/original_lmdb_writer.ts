/**
 * The values of an LMDB pair database in the original Python tool's format (`data2lmdb --format
 * original`), which its `DataPairsWithTextLMDB` reads with `pickle.loads`:
 * - key `"{i}"` -> a pickled `reflow.data.utils.LMDB_ndarray` instance whose `__dict__` holds
 *   `shape` (a tuple), `dtype` (a numpy dtype) and `array` (the raw C-order bytes); the original
 *   then calls `resume_array()` = `np.frombuffer(array, dtype).reshape(*shape)`;
 * - `__len__` -> the pickled pair count (int);
 * - `__keys__` -> a pickled list of the keys as bytes, in pair order.
 *
 * The bytes are what the original's own `pickle.dumps` (protocol 4, Python 3.8+) writes for the
 * same objects with numpy 1.x, where the dtype's global name is the same string object as the
 * `dtype` attribute name and so comes back from the memo (numpy 2 writes the name out again; both
 * load alike); see `core/io/pickle_writer.ts`. Reading them back here goes through the restricted
 * unpickler (`original_lmdb_value.ts`); nothing is ever executed.
 *
 * @module
 */

import {
  pickleDumps,
  PickleGlobal,
  PickleNewObj,
  PickleReduce,
  PickleString,
  PickleTuple,
  type PickleValue,
} from "../io/pickle_writer.ts";
import type { NpyArray, NpyDtype } from "./npy.ts";

/** One "dtype" string: the attribute name and numpy's `dtype` class name (as under numpy 1.x). */
const DTYPE = new PickleString("dtype");

/** The class the original pickles each pair as (its module path in the original repository). */
export const LMDB_NDARRAY_CLASS = new PickleGlobal("reflow.data.utils", "LMDB_ndarray");

/** numpy's dtype code and byte-order character of each dtype a pair file may hold. */
const NUMPY_DTYPE: Record<NpyDtype, [string, string]> = {
  "<f2": ["f2", "<"],
  "<f4": ["f4", "<"],
  "<f8": ["f8", "<"],
  "<i4": ["i4", "<"],
  "<i8": ["i8", "<"],
  "|u1": ["u1", "|"],
};

/**
 * A numpy dtype as `pickle` writes it: `numpy.dtype(code, False, True)` with the state tuple
 * (version 3, byte order, no subarray, no names, no fields, elsize -1, alignment -1, flags 0)
 * that `dtype.__reduce__` gives for a plain numeric type.
 */
export function numpyDtypePickle(dtype: NpyDtype): PickleReduce {
  const spec = NUMPY_DTYPE[dtype];
  if (!spec) throw new Error(`no numpy dtype pickle for ${dtype}`);
  const [code, order] = spec;
  return new PickleReduce(
    new PickleGlobal("numpy", DTYPE),
    [code, false, true],
    new PickleTuple([3, order, null, null, null, -1, -1, 0]),
  );
}

/** Pickled `LMDB_ndarray(array)` of the original tool, `source` naming the array in errors. */
export function pickleOriginalPair(array: NpyArray, source: string): Uint8Array {
  const count = array.shape.reduce((a, b) => a * b, 1);
  if (array.data.length !== count) {
    throw new Error(`${source}: ${array.data.length} elements for shape [${array.shape}]`);
  }
  const d = array.data;
  const raw = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
  const state = new Map<string | PickleString, PickleValue>([
    ["shape", new PickleTuple(array.shape)],
    [DTYPE, numpyDtypePickle(array.dtype)],
    ["array", raw],
  ]);
  return pickleDumps(new PickleNewObj(LMDB_NDARRAY_CLASS, [], state));
}

/** The original's `__len__` value: `pickle.dumps(count)`. */
export function pickleOriginalLength(count: number): Uint8Array {
  if (!Number.isSafeInteger(count) || count < 0) {
    throw new Error(`__len__ must be a non-negative integer, got ${count}`);
  }
  return pickleDumps(count);
}

/** The original's `__keys__` value: `pickle.dumps([b"0", b"1", ...])` of the given keys. */
export function pickleOriginalKeys(keys: readonly Uint8Array[]): Uint8Array {
  return pickleDumps([...keys]);
}
