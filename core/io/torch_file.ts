/**
 * PyTorch `.bin` / `.pth` files in the zip format of torch >= 1.6: `<archive>/data.pkl` (the pickled
 * object, storages referenced by persistent id) and `<archive>/data/<key>` (each storage's raw
 * little-endian bytes, stored uncompressed). The pickle is decoded by the restricted unpickler, never
 * executed; tensor bytes are read lazily, one tensor's range at a time.
 *
 * @module
 */

import { DTYPE_BYTES, rawToF32, type WeightDtype } from "./dtypes.ts";
import { PyGlobal, PyObject, unpickle } from "./pickle.ts";
import type { TensorInfo, WeightReader } from "./weights.ts";
import { ZipReader } from "./zip.ts";

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

  private constructor(zip: ZipReader, tensors: Map<string, TensorEntry>) {
    this.#zip = zip;
    this.#tensors = tensors;
  }

  /** @internal use {@link openTorchFile}. */
  static async open(path: string): Promise<TorchFile> {
    const zip = await ZipReader.open(path);
    try {
      return new TorchFile(zip, await readStateDict(zip));
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
    return (await this.#zip.read(e.name)).slice(t.byteOffset, t.byteOffset + t.byteLength);
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
 * const sd = await openTorchFile("checkpoints/score_model_s20000.pth");
 * const w = await sd.readF32("conv_in.weight");
 * ```
 */
export function openTorchFile(path: string): Promise<TorchFile> {
  return TorchFile.open(path);
}

async function readStateDict(zip: ZipReader): Promise<Map<string, TensorEntry>> {
  const path = zip.path;
  const pkl = zip.entries().find((e) => e.name === "data.pkl" || e.name.endsWith("/data.pkl"));
  if (pkl === undefined) {
    throw new Error(`${path}: zip archive has no data.pkl (not a torch.save file)`);
  }
  const prefix = pkl.name.slice(0, -"data.pkl".length);
  const order = zip.get(`${prefix}byteorder`);
  if (order !== undefined) {
    const text = new TextDecoder().decode(await zip.read(order.name)).trim();
    if (text !== "little") throw new Error(`${path}: ${text}-endian tensor data is not supported`);
  }

  const persistentLoad = (pid: unknown): StorageRef => {
    if (!Array.isArray(pid) || pid[0] !== "storage" || pid.length < 5) {
      throw new Error(`${path}: unexpected persistent id in data.pkl`);
    }
    const [, type, key, , numel] = pid;
    const dtype = type instanceof PyGlobal ? STORAGE_DTYPES[type.fullName] : undefined;
    if (dtype === undefined) {
      const name = type instanceof PyGlobal ? type.fullName : String(type);
      throw new Error(`${path}: storage type ${name} is not supported`);
    }
    const entry = `${prefix}data/${key}`;
    const e = zip.get(entry);
    if (e === undefined) throw new Error(`${path}: storage entry ${entry} is missing`);
    if (typeof numel !== "number" || e.uncompressedSize < numel * DTYPE_BYTES[dtype]) {
      throw new Error(`${path}: storage entry ${entry} is shorter than its ${numel} elements`);
    }
    return { entry, dtype, numel };
  };

  const root = unpickle(await zip.read(pkl.name), {
    persistentLoad,
    source: `${path}: ${pkl.name}`,
  });
  let dict = root;
  if (dict instanceof Map && dict.get("state_dict") instanceof Map) dict = dict.get("state_dict");
  if (!(dict instanceof Map)) {
    throw new Error(`${path}: data.pkl does not hold a dict of tensors (or a "state_dict")`);
  }
  const tensors = new Map<string, TensorEntry>();
  for (const [key, value] of dict) {
    if (typeof key !== "string") continue;
    const t = tensorOf(value, `${path}: tensor "${key}"`);
    if (t !== null) tensors.set(key, t);
  }
  return tensors;
}

/** Interprets a recorded tensor rebuild; null for values that are not tensors. */
function tensorOf(value: unknown, what: string): TensorEntry | null {
  if (!(value instanceof PyObject)) return null;
  switch (value.cls) {
    case "torch._utils._rebuild_parameter":
    case "torch._utils._rebuild_parameter_with_state":
      return tensorOf(value.args[0], what);
    case "torch._tensor._rebuild_from_type_v2": {
      // (func, new_type, args, state): the tensor is func(*args).
      const [fn, , args] = value.args;
      if (!(fn instanceof PyGlobal) || !Array.isArray(args)) return null;
      return tensorOf(new PyObject(fn.fullName, args), what);
    }
    case "torch._utils._rebuild_tensor":
    case "torch._utils._rebuild_tensor_v2":
      return contiguousView(value.args, what);
    default:
      return null;
  }
}

function contiguousView(args: readonly unknown[], what: string): TensorEntry {
  const [storage, offset, size, stride] = args;
  if (
    typeof storage !== "object" || storage === null || !("entry" in storage) ||
    typeof offset !== "number" || !Array.isArray(size) || !Array.isArray(stride) ||
    size.length !== stride.length ||
    !size.every((d) => Number.isSafeInteger(d) && d >= 0) || !Number.isSafeInteger(offset) ||
    offset < 0
  ) {
    throw new Error(`${what}: malformed tensor record in data.pkl`);
  }
  const st = storage as StorageRef;
  const shape = size as number[];
  // Contiguous C order: each stride is the product of the later sizes (size-1 dims don't matter).
  let expect = 1;
  let numel = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && stride[i] !== expect) {
      throw new Error(
        `${what}: non-contiguous view (size [${shape}], stride [${stride}]); ` +
          `save it with .contiguous() first`,
      );
    }
    expect *= shape[i];
    numel *= shape[i];
  }
  if (numel > 0 && offset + numel > st.numel) {
    throw new Error(
      `${what}: elements [${offset}, ${offset + numel}) lie outside its storage of ${st.numel}`,
    );
  }
  const item = DTYPE_BYTES[st.dtype];
  return { storage: st, shape, byteOffset: offset * item, byteLength: numel * item };
}
