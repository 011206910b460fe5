/**
 * Decodes numpy arrays out of pickles without running them: `pickle.dumps(ndarray)` at protocols 2
 * to 5 (numpy's `_reconstruct` + state, or `_frombuffer` at protocol 5), numpy scalars, and the
 * original reflow tool's LMDB values — a pickled `LMDB_ndarray` object whose attributes are
 * `shape` (tuple), `dtype` (numpy dtype) and `array` (the raw bytes, C order).
 *
 * @module
 */

import { clip, describeValue, FormatError } from "./format_error.ts";
import { PyGlobal, PyObject, unpickle } from "./pickle.ts";

/** numpy's own limit on array dimensions (NPY_MAXDIMS of numpy 2). */
export const NUMPY_MAX_DIMS = 64;

/** numpy element types understood here (little-endian or single-byte). */
export type NumpyDtype =
  | "float16"
  | "float32"
  | "float64"
  | "int8"
  | "int16"
  | "int32"
  | "int64"
  | "uint8"
  | "uint16"
  | "uint32"
  | "uint64"
  | "bool";

/** Typed array holding each dtype's elements; float16 as raw bit patterns. */
export type NumpyData =
  | Float32Array
  | Float64Array
  | Uint16Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Uint8Array
  | Uint32Array
  | BigUint64Array;

/** A decoded numpy array: C-order elements of `dtype` with `shape`. */
export interface NdArray {
  dtype: NumpyDtype;
  shape: number[];
  data: NumpyData;
}

const CODES: Record<string, NumpyDtype> = {
  f2: "float16",
  f4: "float32",
  f8: "float64",
  i1: "int8",
  i2: "int16",
  i4: "int32",
  i8: "int64",
  u1: "uint8",
  u2: "uint16",
  u4: "uint32",
  u8: "uint64",
  b1: "bool",
};

const ITEM_BYTES: Record<NumpyDtype, number> = {
  float16: 2,
  float32: 4,
  float64: 8,
  int8: 1,
  int16: 2,
  int32: 4,
  int64: 8,
  uint8: 1,
  uint16: 2,
  uint32: 4,
  uint64: 8,
  bool: 1,
};

/** Bytes per element of a numpy dtype. */
export function numpyItemBytes(dtype: NumpyDtype): number {
  return ITEM_BYTES[dtype];
}

/**
 * Parses a numpy type string such as `"<f2"`, `"|u1"`, `"f4"` (no byte order = little-endian here,
 * as numpy's dtype pickle gives the order separately). Big-endian and other kinds are refused.
 */
export function parseNumpyDescr(descr: string, what = "numpy dtype"): NumpyDtype {
  const m = /^([<>|=]?)([a-z]\d+)$/.exec(descr);
  const dtype = m ? CODES[m[2]] : undefined;
  if (!m || dtype === undefined) {
    throw new FormatError(`${what}: unsupported dtype ${JSON.stringify(clip(descr))}`);
  }
  if (m[1] === ">" && ITEM_BYTES[dtype] > 1) {
    throw new FormatError(`${what}: big-endian dtype "${descr}" is not supported`);
  }
  return dtype;
}

/** Interprets a pickled `numpy.dtype(...)` record (byte order from its BUILD state). */
export function dtypeFromPickle(value: unknown, what = "numpy dtype"): NumpyDtype {
  if (!(value instanceof PyObject) || value.cls !== "numpy.dtype") {
    throw new FormatError(`${what}: expected a pickled numpy.dtype`);
  }
  const descr = value.args[0];
  if (typeof descr !== "string") {
    throw new FormatError(`${what}: numpy.dtype without a type string`);
  }
  const state = value.state;
  const order = Array.isArray(state) && typeof state[1] === "string" ? state[1] : "";
  if (Array.isArray(state) && state[2] !== null && state[2] !== undefined) {
    throw new FormatError(`${what}: structured numpy dtypes are not supported`);
  }
  return parseNumpyDescr(order + descr, what);
}

/** Builds an NdArray from raw little-endian C-order bytes, checking the size. */
export function ndarrayFromBytes(
  dtype: NumpyDtype,
  shape: readonly number[],
  bytes: Uint8Array,
  what = "numpy array",
): NdArray {
  if (shape.length > NUMPY_MAX_DIMS) {
    throw new FormatError(`${what}: shape has ${shape.length} dimensions (numpy allows 64)`);
  }
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new FormatError(`${what}: bad shape [${shape}]`);
    n *= d;
  }
  const need = n * ITEM_BYTES[dtype];
  if (bytes.byteLength !== need) {
    throw new FormatError(
      `${what}: shape [${shape}] of ${dtype} needs ${need} bytes, the pickle holds ${bytes.byteLength}`,
    );
  }
  // A fresh, aligned copy: typed arrays need aligned offsets, and the input may be reused.
  const buf = bytes.slice().buffer;
  const data: NumpyData = (() => {
    switch (dtype) {
      case "float16":
      case "uint16":
        return new Uint16Array(buf);
      case "float32":
        return new Float32Array(buf);
      case "float64":
        return new Float64Array(buf);
      case "int8":
        return new Int8Array(buf);
      case "int16":
        return new Int16Array(buf);
      case "int32":
        return new Int32Array(buf);
      case "int64":
        return new BigInt64Array(buf);
      case "uint32":
        return new Uint32Array(buf);
      case "uint64":
        return new BigUint64Array(buf);
      case "uint8":
      case "bool":
        return new Uint8Array(buf);
    }
  })();
  return { dtype, shape: [...shape], data };
}

function shapeOf(x: unknown, what: string): number[] {
  if (!Array.isArray(x) || !x.every((d) => typeof d === "number")) {
    throw new FormatError(`${what}: shape ${describeValue(x)} is not a tuple of ints`);
  }
  return x as number[];
}

function bytesOf(x: unknown, what: string): Uint8Array {
  if (!(x instanceof Uint8Array)) throw new FormatError(`${what}: array data is not bytes`);
  return x;
}

const RECONSTRUCT = new Set([
  "numpy.core.multiarray._reconstruct",
  "numpy._core.multiarray._reconstruct",
]);
const FROMBUFFER = new Set(["numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer"]);
const SCALAR = new Set(["numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"]);

/** True when `value` is a pickled numpy array, scalar, or LMDB_ndarray-like wrapper. */
export function isPickledArray(value: unknown): value is PyObject {
  if (!(value instanceof PyObject)) return false;
  if (RECONSTRUCT.has(value.cls) || FROMBUFFER.has(value.cls) || SCALAR.has(value.cls)) return true;
  return value.attr("array") instanceof Uint8Array && value.attr("dtype") instanceof PyObject &&
    Array.isArray(value.attr("shape"));
}

/**
 * Converts an unpickled numpy array (any of the forms above) into an {@link NdArray}. Fortran-order
 * arrays of more than one dimension, object arrays and big-endian data are refused.
 */
export function toNdArray(value: unknown, what = "numpy pickle"): NdArray {
  if (!(value instanceof PyObject)) throw new FormatError(`${what}: not a pickled numpy array`);
  if (RECONSTRUCT.has(value.cls)) {
    const [cls] = value.args;
    if (!(cls instanceof PyGlobal) || cls.fullName !== "numpy.ndarray") {
      throw new FormatError(`${what}: _reconstruct of something other than numpy.ndarray`);
    }
    const state = value.state;
    if (!Array.isArray(state) || state.length !== 5) {
      throw new FormatError(`${what}: ndarray state is not (version, shape, dtype, fortran, data)`);
    }
    const [, shape, dtype, fortran, data] = state;
    const dims = shapeOf(shape, what);
    if (fortran === true && dims.filter((d) => d > 1).length > 1) {
      throw new FormatError(`${what}: Fortran-order arrays are not supported`);
    }
    if (Array.isArray(data)) throw new FormatError(`${what}: object arrays are not supported`);
    return ndarrayFromBytes(dtypeFromPickle(dtype, what), dims, bytesOf(data, what), what);
  }
  if (FROMBUFFER.has(value.cls)) {
    const [buf, dtype, shape, order] = value.args;
    const dims = shapeOf(shape, what);
    if (order === "F" && dims.filter((d) => d > 1).length > 1) {
      throw new FormatError(`${what}: Fortran-order arrays are not supported`);
    }
    return ndarrayFromBytes(dtypeFromPickle(dtype, what), dims, bytesOf(buf, what), what);
  }
  if (SCALAR.has(value.cls)) {
    const [dtype, data] = value.args;
    return ndarrayFromBytes(dtypeFromPickle(dtype, what), [], bytesOf(data, what), what);
  }
  const array = value.attr("array");
  const dtype = value.attr("dtype");
  const shape = value.attr("shape");
  if (array === undefined || dtype === undefined || shape === undefined) {
    throw new FormatError(`${what}: ${value.cls} has no shape/dtype/array attributes`);
  }
  return ndarrayFromBytes(
    dtypeFromPickle(dtype, what),
    shapeOf(shape, what),
    bytesOf(array, what),
    what,
  );
}

/** Options of {@link decodeNumpyPickle}. */
export interface NumpyPickleOptions {
  /** Wrapper classes allowed as plain objects; default `["LMDB_ndarray"]` (any module). */
  allowClasses?: readonly string[];
  /** Names the input in errors (a file name, an LMDB key). */
  source?: string;
}

/**
 * Unpickles one numpy array: a pickled ndarray, numpy scalar, or an `LMDB_ndarray`-like wrapper.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { openLmdbReader } from "../data/lmdb_file.ts";
 * import { readNpy } from "../data/npy.ts";
 *
 * // A database the original Python tool wrote: each pair is a pickled LMDB_ndarray.
 * const root = "tests/fixtures/data/original_root/content";
 * const db = await openLmdbReader(`${root}/lmdb`);
 * const lmdbValue = (await db.get(new TextEncoder().encode("0")))!;
 * await db.close();
 * const pair = decodeNumpyPickle(lmdbValue, { source: "lmdb key 0" });
 * assert.equal(pair.dtype, "float16"); // pair.data: Uint16Array of [z0, z1]
 * const npy = await readNpy(`${root}/images/0.npy`); // the same pair as numpy saved it
 * assert.deepEqual(pair.shape, npy.shape); // [2, 4, 16, 16]
 * assert.deepEqual(pair.data, npy.data);
 * ```
 */
export function decodeNumpyPickle(bytes: Uint8Array, opts: NumpyPickleOptions = {}): NdArray {
  const source = opts.source ?? "numpy pickle";
  const value = unpickle(bytes, { allowClasses: opts.allowClasses ?? ["LMDB_ndarray"], source });
  return toNdArray(value, source);
}
