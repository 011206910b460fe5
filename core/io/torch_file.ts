/**
 * PyTorch `.bin` / `.pth` files in the zip format of torch >= 1.6: `<archive>/data.pkl` (the pickled
 * object, storages referenced by persistent id) and `<archive>/data/<key>` (each storage's raw
 * little-endian bytes, stored uncompressed). The pickle is decoded by the restricted unpickler, never
 * executed; tensor bytes are read lazily, one tensor's range at a time.
 *
 * data.pkl is read whole, so its size is capped ({@link MAX_PICKLE_BYTES} unless told): a state
 * dict of thousands of tensors pickles to well under a megabyte, and a deflated data.pkl that
 * claims more is a bomb.
 *
 * @module
 */

import { DTYPE_BYTES, rawToF32, type WeightDtype } from "./dtypes.ts";
import { clip, describeValue, FormatError } from "./format_error.ts";
import { PyGlobal, PyObject, unpickle } from "./pickle.ts";
import type { TensorInfo, WeightReader } from "./weights.ts";
import { DEFAULT_MAX_ENTRY_BYTES, ZipReader } from "./zip.ts";

/** Largest data.pkl read by default (about 125 bytes per tensor: 130k tensors). */
export const MAX_PICKLE_BYTES = 16 << 20;

/** Options of {@link openTorchFile}. */
export interface TorchFileOptions {
  /** Largest data.pkl accepted, in bytes; default {@link MAX_PICKLE_BYTES}. */
  maxPickleBytes?: number;
  /** Largest deflated storage entry inflated whole; default 1 GiB (torch stores them raw). */
  maxEntryBytes?: number;
}

/** torch's legacy storage class names → element type. */
const STORAGE_DTYPES: Record<string, WeightDtype> = {
  "torch.FloatStorage": "F32",
  "torch.HalfStorage": "F16",
  "torch.BFloat16Storage": "BF16",
  "torch.DoubleStorage": "F64",
  "torch.LongStorage": "I64",
  "torch.IntStorage": "I32",
  "torch.ShortStorage": "I16",
  "torch.CharStorage": "I8",
  "torch.ByteStorage": "U8",
  "torch.BoolStorage": "BOOL",
};

/** A storage referenced from the pickle: one `data/<key>` entry of the archive. */
interface StorageRef {
  entry: string;
  dtype: WeightDtype;
  numel: number;
}

interface TensorEntry {
  storage: StorageRef;
  shape: number[];
  /** Start of the tensor in its storage, in bytes. */
  byteOffset: number;
  byteLength: number;
}

/** An open PyTorch zip checkpoint holding a state dict. */
export class TorchFile implements WeightReader {
  readonly #zip: ZipReader;
  readonly #tensors: Map<string, TensorEntry>;
  readonly #maxEntryBytes: number;

  private constructor(zip: ZipReader, tensors: Map<string, TensorEntry>, maxEntryBytes: number) {
    this.#zip = zip;
    this.#tensors = tensors;
    this.#maxEntryBytes = maxEntryBytes;
  }

  /** @internal use {@link openTorchFile}. */
  static async open(path: string, opts: TorchFileOptions = {}): Promise<TorchFile> {
    const zip = await ZipReader.open(path);
    try {
      const tensors = await readStateDict(zip, opts.maxPickleBytes ?? MAX_PICKLE_BYTES);
      return new TorchFile(zip, tensors, opts.maxEntryBytes ?? DEFAULT_MAX_ENTRY_BYTES);
    } catch (err) {
      zip.close();
      throw err;
    }
  }

  /** Path the file was opened from. */
  get path(): string {
    return this.#zip.path;
  }

  /** Tensor names in the state dict's order. */
  keys(): string[] {
    return [...this.#tensors.keys()];
  }

  /** True when the state dict holds tensor `key`. */
  has(key: string): boolean {
    return this.#tensors.has(key);
  }

  /** Dtype and shape of tensor `key`. */
  info(key: string): TensorInfo {
    const t = this.#entry(key);
    return { dtype: t.storage.dtype, shape: [...t.shape] };
  }

  /** Reads only tensor `key`'s bytes from its storage entry. */
  async readRaw(key: string): Promise<Uint8Array> {
    const t = this.#entry(key);
    const e = this.#zip.get(t.storage.entry)!;
    if (e.method === 0) return this.#zip.readRange(e.name, t.byteOffset, t.byteLength);
    // Not how torch writes, but a re-zipped archive may deflate: read the entry whole.
    const whole = await this.#zip.read(e.name, { maxBytes: this.#maxEntryBytes });
    return whole.slice(t.byteOffset, t.byteOffset + t.byteLength);
  }

  /** Reads tensor `key` converted to float32. */
  async readF32(key: string): Promise<Float32Array> {
    const t = this.#entry(key);
    return rawToF32(t.storage.dtype, await this.readRaw(key), `${this.path}: tensor ${key}`, true);
  }

  /** Closes the file. */
  close(): void {
    this.#zip.close();
  }

  #entry(key: string): TensorEntry {
    const t = this.#tensors.get(key);
    if (t === undefined) throw new Error(`${this.path}: no tensor named "${key}"`);
    return t;
  }
}

/**
 * Opens a PyTorch zip checkpoint (`torch.save` of a state dict, a plain dict of tensors, or a dict
 * with the state dict under `"state_dict"`). Non-tensor values are skipped; non-contiguous tensor
 * views are refused with an error naming the key.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * // a score-model checkpoint of a tiny UNet as the original tool saves it (torch.save, zip)
 * const sd = await openTorchFile("tests/fixtures/sample/score_model_s7.pth");
 * assert.deepEqual(sd.info("conv_in.weight"), { dtype: "F32", shape: [8, 4, 3, 3] });
 * const w = await sd.readF32("conv_in.weight");
 * assert.equal(w.length, 8 * 4 * 3 * 3);
 * sd.close();
 * ```
 */
export function openTorchFile(path: string, opts: TorchFileOptions = {}): Promise<TorchFile> {
  return TorchFile.open(path, opts);
}

async function readStateDict(
  zip: ZipReader,
  maxPickleBytes: number,
): Promise<Map<string, TensorEntry>> {
  const path = zip.path;
  const pkl = zip.entries().find((e) => e.name === "data.pkl" || e.name.endsWith("/data.pkl"));
  if (pkl === undefined) {
    throw new FormatError(`${path}: zip archive has no data.pkl (not a torch.save file)`);
  }
  const prefix = pkl.name.slice(0, -"data.pkl".length);
  const order = zip.get(`${prefix}byteorder`);
  if (order !== undefined) {
    const text = new TextDecoder().decode(await zip.read(order.name, { maxBytes: 64 })).trim();
    if (text !== "little") {
      throw new FormatError(`${path}: ${clip(text)}-endian tensor data is not supported`);
    }
  }

  const persistentLoad = (pid: unknown): StorageRef => {
    if (!Array.isArray(pid) || pid[0] !== "storage" || pid.length < 5) {
      throw new FormatError(
        `${path}: unexpected persistent id ${describeValue(pid)} in ${pkl.name}`,
      );
    }
    const [, type, key, , numel] = pid;
    const dtype = type instanceof PyGlobal ? STORAGE_DTYPES[type.fullName] : undefined;
    if (dtype === undefined) {
      throw new FormatError(`${path}: storage type ${describeValue(type)} is not supported`);
    }
    if (typeof key !== "string") {
      throw new FormatError(`${path}: storage key ${describeValue(key)} is not a string`);
    }
    const entry = `${prefix}data/${key}`;
    const e = zip.get(entry);
    if (e === undefined) throw new FormatError(`${path}: storage entry ${clip(entry)} is missing`);
    if (!Number.isSafeInteger(numel) || (numel as number) < 0) {
      throw new FormatError(
        `${path}: storage entry ${entry} has element count ${describeValue(numel)}`,
      );
    }
    if (e.uncompressedSize < (numel as number) * DTYPE_BYTES[dtype]) {
      throw new FormatError(
        `${path}: storage entry ${entry} is shorter than its ${numel} elements`,
      );
    }
    return { entry, dtype, numel: numel as number };
  };

  const root = unpickle(await zip.read(pkl.name, { maxBytes: maxPickleBytes }), {
    persistentLoad,
    source: `${path}: ${pkl.name}`,
  });
  let dict = root;
  if (dict instanceof Map && dict.get("state_dict") instanceof Map) dict = dict.get("state_dict");
  if (!(dict instanceof Map)) {
    throw new FormatError(`${path}: data.pkl does not hold a dict of tensors (or a "state_dict")`);
  }
  const tensors = new Map<string, TensorEntry>();
  for (const [key, value] of dict) {
    if (typeof key !== "string") continue;
    const t = tensorOf(value, `${path}: tensor "${key}"`);
    if (t !== null) tensors.set(key, t);
  }
  return tensors;
}

/** Wrappers a tensor may sit in (a Parameter of a subclass of a Parameter ...). */
const MAX_TENSOR_WRAPPERS = 8;

/** Interprets a recorded tensor rebuild; null for values that are not tensors. */
function tensorOf(value: unknown, what: string): TensorEntry | null {
  // A loop with a bound, not recursion: a hostile pickle can nest wrappers without end.
  for (let wraps = 0; value instanceof PyObject; wraps++) {
    if (wraps > MAX_TENSOR_WRAPPERS) {
      throw new FormatError(`${what}: tensor wrapped more than ${MAX_TENSOR_WRAPPERS} times`);
    }
    switch (value.cls) {
      case "torch._utils._rebuild_parameter":
      case "torch._utils._rebuild_parameter_with_state":
        value = value.args[0];
        break;
      case "torch._tensor._rebuild_from_type_v2": {
        // (func, new_type, args, state): the tensor is func(*args).
        const [fn, , args] = value.args;
        if (!(fn instanceof PyGlobal) || !Array.isArray(args)) return null;
        value = new PyObject(fn.fullName, args);
        break;
      }
      case "torch._utils._rebuild_tensor":
      case "torch._utils._rebuild_tensor_v2":
        return contiguousView(value.args, what);
      default:
        return null;
    }
  }
  return null;
}

const isDim = (d: unknown): d is number => Number.isSafeInteger(d) && (d as number) >= 0;

function contiguousView(args: readonly unknown[], what: string): TensorEntry {
  const [storage, offset, size, stride] = args;
  if (
    typeof storage !== "object" || storage === null || !("entry" in storage) ||
    typeof offset !== "number" || !Array.isArray(size) || !Array.isArray(stride) ||
    size.length !== stride.length || size.length > 64 || !size.every(isDim) ||
    !stride.every(Number.isSafeInteger) || !isDim(offset)
  ) {
    throw new FormatError(
      `${what}: malformed tensor record in data.pkl (storage ${describeValue(storage)}, ` +
        `offset ${describeValue(offset)}, size ${describeValue(size)}, ` +
        `stride ${describeValue(stride)})`,
    );
  }
  const st = storage as StorageRef;
  const shape = size as number[];
  // Contiguous C order: each stride is the product of the later sizes (size-1 dims don't matter).
  let expect = 1;
  let numel = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && stride[i] !== expect) {
      throw new FormatError(
        `${what}: non-contiguous view (size [${shape}], stride [${stride}]); ` +
          `save it with .contiguous() first`,
      );
    }
    expect *= shape[i];
    numel *= shape[i];
  }
  if (numel > 0 && offset + numel > st.numel) {
    throw new FormatError(
      `${what}: elements [${offset}, ${offset + numel}) lie outside its storage of ${st.numel}`,
    );
  }
  const item = DTYPE_BYTES[st.dtype];
  return { storage: st, shape, byteOffset: offset * item, byteLength: numel * item };
}
