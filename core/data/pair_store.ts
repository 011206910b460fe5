/**
 * Pair storage: the folders a generation run writes and training reads.
 *
 * ```
 * <root>/index.json                 settings of the run that made the data
 * <root>/content/captions.txt       line i = caption of pair i
 * <root>/content/images/{i}.npy     pair i: [2, C, H, W] float16, stack([z0, z1])
 * <root>/content/lmdb/data.mdb      optional LMDB form of images/ (made by data2lmdb)
 * ```
 *
 * LMDB form written by this project (LMDB data format 1, readable by Python's `lmdb`):
 * - key `"{i}"` (ASCII decimal, no padding) -> the `.npy` bytes of pair i, exactly as in images/;
 * - `__len__` -> the number of pairs as ASCII decimal digits, e.g. `"1000000"`;
 * - `__keys__` -> a JSON array of the pair keys in index order, e.g. `["0","1",...]`.
 *
 * The original tool's databases (pickled `__len__`, `__keys__` and `LMDB_ndarray` values) are read
 * too; the two are told apart by `__len__` (a pickle starts with byte 0x80).
 *
 * @module
 */

import { join } from "node:path";
import { decodeNpy, type NpyArray, readNpy, writeNpy } from "./npy.ts";
import { type LmdbReadable, openLmdbReader } from "./lmdb_file.ts";
import { FormatError } from "../io/format_error.ts";
import {
  decodeOriginalKeys,
  decodeOriginalLength,
  decodeOriginalPair,
  isPickled,
} from "./original_lmdb_value.ts";

/** LMDB key holding the pair count. */
export const LEN_KEY = "__len__";
/** LMDB key holding the list of pair keys. */
export const KEYS_KEY = "__keys__";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Paths of a pair folder rooted at `root`. */
export function pairPaths(root: string): {
  index: string;
  content: string;
  captions: string;
  images: string;
  lmdb: string;
} {
  const content = join(root, "content");
  return {
    index: join(root, "index.json"),
    content,
    captions: join(content, "captions.txt"),
    images: join(content, "images"),
    lmdb: join(content, "lmdb"),
  };
}

/** Path of pair `i` in an images folder. */
export function pairNpyPath(imagesDir: string, i: number): string {
  return join(imagesDir, `${i}.npy`);
}

/**
 * Checks that an array is a pair: shape [2, C, H, W] in float16 (or float32 when `allowF32`).
 * `source` names the file in the error.
 */
export function validatePair(
  array: NpyArray,
  source: string,
  allowF32 = false,
): [number, number, number] {
  const { shape, dtype } = array;
  if (shape.length !== 4 || shape[0] !== 2) {
    throw new Error(`${source}: a pair must have shape [2, C, H, W], got [${shape}]`);
  }
  if (dtype !== "<f2" && !(allowF32 && dtype === "<f4")) {
    throw new Error(`${source}: a pair must be float16 (<f2), got ${dtype}`);
  }
  return [shape[1], shape[2], shape[3]];
}

/** Saves pair `i` (z0 and z1 as float16 bits, each C*H*W long) as `images/{i}.npy`. */
export async function writePairNpy(
  imagesDir: string,
  i: number,
  shape: readonly [number, number, number],
  z0: Uint16Array,
  z1: Uint16Array,
): Promise<void> {
  const n = shape[0] * shape[1] * shape[2];
  if (z0.length !== n || z1.length !== n) {
    throw new Error(`pair ${i}: z0/z1 must each hold ${n} values for shape [${shape}]`);
  }
  const data = new Uint16Array(2 * n);
  data.set(z0, 0);
  data.set(z1, n);
  await writeNpy(pairNpyPath(imagesDir, i), { dtype: "<f2", shape: [2, ...shape], data });
}

/** Random access to the pairs of one data folder, whatever its storage. */
export interface PairStore {
  /** Where the pairs come from (for messages). */
  readonly source: string;
  /** Number of pairs. */
  readonly length: number;
  /** Pair i as stored ([2, C, H, W], float16 or float32). */
  readPair(i: number): Promise<NpyArray>;
  close(): Promise<void>;
}

function checkIndex(i: number, length: number, source: string) {
  if (!Number.isInteger(i) || i < 0 || i >= length) {
    throw new Error(`${source}: pair index ${i} out of range [0, ${length})`);
  }
}

/** Pairs stored as `images/{i}.npy` files, i in [0, length). */
export function openNpyPairStore(imagesDir: string, length: number): PairStore {
  return {
    source: imagesDir,
    length,
    async readPair(i) {
      checkIndex(i, length, imagesDir);
      const path = pairNpyPath(imagesDir, i);
      const arr = await readNpy(path);
      validatePair(arr, path, true);
      return arr;
    },
    close: () => Promise.resolve(),
  };
}

/** Opens an LMDB pair database (this project's or the original tool's format). */
export async function openLmdbPairStore(lmdbDir: string): Promise<PairStore> {
  const db = await openLmdbReader(lmdbDir);
  try {
    const lenBytes = await db.get(encoder.encode(LEN_KEY));
    if (!lenBytes) throw new Error(`${lmdbDir}: LMDB pair database has no ${LEN_KEY} entry`);
    return isPickled(lenBytes)
      ? await openOriginalLmdb(db, lmdbDir, lenBytes)
      : await openOwnLmdb(db, lmdbDir, lenBytes);
  } catch (err) {
    await db.close();
    throw err;
  }
}

async function openOwnLmdb(
  db: LmdbReadable,
  source: string,
  lenBytes: Uint8Array,
): Promise<PairStore> {
  const text = decoder.decode(lenBytes);
  if (!/^\d+$/.test(text)) throw new Error(`${source}: ${LEN_KEY} is not a decimal count: ${text}`);
  const length = Number(text);
  let keys: string[] | undefined;
  const keysBytes = await db.get(encoder.encode(KEYS_KEY));
  if (keysBytes) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(decoder.decode(keysBytes));
    } catch (err) {
      throw new FormatError(`${source}: ${KEYS_KEY} is not JSON (${(err as Error).message})`);
    }
    if (
      !Array.isArray(parsed) || parsed.length !== length ||
      !parsed.every((k) => typeof k === "string")
    ) {
      throw new Error(`${source}: ${KEYS_KEY} must be a JSON array of ${length} key strings`);
    }
    keys = parsed;
  }
  return {
    source,
    length,
    async readPair(i) {
      checkIndex(i, length, source);
      const key = keys ? keys[i] : String(i);
      const bytes = await db.get(encoder.encode(key));
      const where = `${source} key ${key}`;
      if (!bytes) throw new Error(`${where}: missing from the LMDB database`);
      const arr = decodeNpy(bytes, where);
      validatePair(arr, where, true);
      return arr;
    },
    close: () => db.close(),
  };
}

async function openOriginalLmdb(
  db: LmdbReadable,
  source: string,
  lenBytes: Uint8Array,
): Promise<PairStore> {
  const length = decodeOriginalLength(lenBytes, `${source} ${LEN_KEY}`);
  const keysBytes = await db.get(encoder.encode(KEYS_KEY));
  if (!keysBytes) throw new Error(`${source}: LMDB pair database has no ${KEYS_KEY} entry`);
  const keys = decodeOriginalKeys(keysBytes, `${source} ${KEYS_KEY}`);
  if (keys.length < length) {
    throw new Error(`${source}: ${KEYS_KEY} lists ${keys.length} keys but ${LEN_KEY} is ${length}`);
  }
  return {
    source,
    length,
    async readPair(i) {
      checkIndex(i, length, source);
      const where = `${source} key ${decoder.decode(keys[i])}`;
      const bytes = await db.get(keys[i]);
      if (!bytes) throw new Error(`${where}: missing from the LMDB database`);
      const arr = decodeOriginalPair(bytes, where);
      validatePair(arr, where, true);
      return arr;
    },
    close: () => db.close(),
  };
}
