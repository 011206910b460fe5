/**
 * Packs a folder of pair `.npy` files into an LMDB database beside it (`<content>/lmdb`): key i
 * holds pair i (numeric order, unlike the original, whose glob order could mismatch keys and
 * captions). Two value formats: "reflow" (this project's, documented in `pair_store.ts`: the `.npy`
 * bytes, `__len__` and `__keys__` as text) and "original" (what the original Python tool's data set
 * reads: pickled `LMDB_ndarray` objects and pickled `__len__` / `__keys__`, see
 * `original_lmdb_writer.ts`). This project reads both.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import { decodeNpy } from "./npy.ts";
import { LmdbBulkWriter } from "./lmdb_file.ts";
import { KEYS_KEY, LEN_KEY, pairNpyPath, validatePair } from "./pair_store.ts";
import { readCaptions } from "./captions.ts";
import {
  pickleOriginalKeys,
  pickleOriginalLength,
  pickleOriginalPair,
} from "./original_lmdb_writer.ts";

/** The value formats {@link data2lmdb} writes. */
export const LMDB_FORMATS = ["reflow", "original"] as const;
/** "reflow": `.npy` bytes and text entries; "original": the original tool's pickles. */
export type LmdbFormat = typeof LMDB_FORMATS[number];

/** Options of {@link data2lmdb}. */
export interface Data2LmdbOptions {
  /** The folder of pair files, `<root>/content/images`. */
  dpath: string;
  /** Pairs read concurrently and flushed together (default 256). */
  batchSize?: number;
  /** Replace an existing `<content>/lmdb` (default false: refuse). */
  overwrite?: boolean;
  /** Value format (default "reflow"). */
  format?: LmdbFormat;
  /** Called after each batch with the number of pairs written so far and the total. */
  onProgress?: (done: number, total: number) => void;
}

/** What {@link data2lmdb} made. */
export interface Data2LmdbResult {
  lmdbPath: string;
  count: number;
  format: LmdbFormat;
  /** [C, H, W] of every pair. */
  shape: [number, number, number];
}

/** Lists the pair indices in `dpath`; any other `.npy` name is an error. */
async function listPairIndices(dpath: string): Promise<Set<number>> {
  const found = new Set<number>();
  try {
    for await (const entry of Deno.readDir(dpath)) {
      if (!entry.name.endsWith(".npy")) continue;
      const m = /^(0|[1-9]\d*)\.npy$/.exec(entry.name);
      if (!m) throw new Error(`${join(dpath, entry.name)}: pair files must be named {i}.npy`);
      found.add(Number(m[1]));
    }
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) throw new Error(`pair folder ${dpath} not found`);
    throw err;
  }
  return found;
}

function describeIndices(indices: number[]): string {
  const shown = indices.slice(0, 10).map((i) => `${i}.npy`).join(", ");
  return indices.length > 10 ? `${shown}, ... (${indices.length} in all)` : shown;
}

/**
 * Writes `<dpath>/../lmdb` from `<dpath>/{i}.npy`, checking every file (shape [2, C, H, W],
 * float16, the same shape throughout) and the count against `<dpath>/../captions.txt`. The
 * database is built in a temporary folder and renamed into place when complete.
 */
export async function data2lmdb(options: Data2LmdbOptions): Promise<Data2LmdbResult> {
  const { dpath, batchSize = 256, overwrite = false, onProgress, format = "reflow" } = options;
  if (!Number.isSafeInteger(batchSize) || batchSize <= 0) {
    throw new Error(`batch size must be a positive integer, got ${batchSize}`);
  }
  if (!(LMDB_FORMATS as readonly string[]).includes(format)) {
    throw new Error(
      `format must be one of ${LMDB_FORMATS.map((f) => `"${f}"`).join(", ")}, ` +
        `got ${JSON.stringify(format)}`,
    );
  }
  const original = format === "original";
  const content = dirname(dpath.replace(/\/+$/, ""));
  const lmdbPath = join(content, "lmdb");
  const captionsPath = join(content, "captions.txt");

  const count = (await readCaptions(captionsPath)).length;
  if (count === 0) throw new Error(`${captionsPath} holds no captions`);
  const found = await listPairIndices(dpath);
  const missing: number[] = [];
  for (let i = 0; i < count; i++) if (!found.has(i)) missing.push(i);
  if (missing.length) {
    throw new Error(
      `${dpath}: ${captionsPath} has ${count} captions but these pairs are missing: ${
        describeIndices(missing)
      }`,
    );
  }
  const extra = [...found].filter((i) => i >= count).sort((a, b) => a - b);
  if (extra.length) {
    throw new Error(
      `${dpath}: more pairs than the ${count} captions of ${captionsPath}: ${
        describeIndices(extra)
      }`,
    );
  }

  if (!overwrite) {
    const exists = await Deno.stat(lmdbPath).then(() => true, () => false);
    if (exists) throw new Error(`${lmdbPath} already exists (pass overwrite to replace it)`);
  }
  const tmpPath = join(content, `.${basename(lmdbPath)}.tmp-${Deno.pid}`);
  await Deno.remove(tmpPath, { recursive: true }).catch(() => {});
  const writer = await LmdbBulkWriter.create(tmpPath);
  const enc = new TextEncoder();
  let shape: [number, number, number] | undefined;
  try {
    for (let start = 0; start < count; start += batchSize) {
      const end = Math.min(count, start + batchSize);
      const idx = Array.from({ length: end - start }, (_, k) => start + k);
      // Read a batch concurrently, then append in index order.
      const files = await Promise.all(idx.map((i) => Deno.readFile(pairNpyPath(dpath, i))));
      for (let k = 0; k < idx.length; k++) {
        const path = pairNpyPath(dpath, idx[k]);
        const array = decodeNpy(files[k], path);
        const s = validatePair(array, path);
        if (!shape) shape = s;
        else if (s.some((d, j) => d !== shape![j])) {
          throw new Error(`${path}: pair shape [2,${s}] differs from [2,${shape}] of 0.npy`);
        }
        const value = original ? pickleOriginalPair(array, path) : files[k];
        await writer.put(enc.encode(String(idx[k])), value);
      }
      await writer.flush();
      onProgress?.(end, count);
    }
    const keys = Array.from({ length: count }, (_, i) => String(i));
    if (original) {
      await writer.put(enc.encode(LEN_KEY), pickleOriginalLength(count));
      await writer.put(enc.encode(KEYS_KEY), pickleOriginalKeys(keys.map((k) => enc.encode(k))));
    } else {
      await writer.put(enc.encode(LEN_KEY), enc.encode(String(count)));
      await writer.put(enc.encode(KEYS_KEY), enc.encode(JSON.stringify(keys)));
    }
    await writer.finish();
    if (overwrite) await Deno.remove(lmdbPath, { recursive: true }).catch(() => {});
    await Deno.rename(tmpPath, lmdbPath);
  } catch (err) {
    await writer.abort();
    await Deno.remove(tmpPath, { recursive: true }).catch(() => {});
    throw err;
  }
  return { lmdbPath, count, format, shape: shape! };
}
