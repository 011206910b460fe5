/**
 * A weight file served as safetensors in the dtype the page asks for (Deno side of `deno task
 * web`): floating-point tensors converted to F16 or F32, others passed as they are, the source's
 * metadata kept (it carries the student's timestep orientation). Any format `openWeights` reads
 * (safetensors, PyTorch zip) can be served; the body is produced one tensor at a time, so memory
 * stays at one tensor whatever the file's size, and its length is known before the first byte
 * (Content-Length, for the page's progress bar).
 *
 * @module
 */

import { openWeights, type WeightReader } from "../io/weights.ts";
import { encodeHeader, SafetensorsFile } from "../io/safetensors.ts";
import { DTYPE_BYTES, type WeightDtype } from "../io/dtypes.ts";
import { f32ToF16Bits } from "../io/half.ts";

/** The dtypes a page can ask for. */
export type ServedDtype = "F16" | "F32";

const FLOAT: ReadonlySet<WeightDtype> = new Set(["F16", "BF16", "F32", "F64"]);

interface Planned {
  key: string;
  from: WeightDtype;
  to: WeightDtype;
  bytes: number;
}

/** The served file's layout: header bytes and each tensor's place. */
export interface ServedLayout {
  /** The 8-byte length and the JSON header (padded to 8 bytes). */
  head: Uint8Array;
  tensors: Planned[];
  /** The whole served file's length, bytes. */
  length: number;
}

/** Plans the served file of `reader` in `dtype` (tensors in name order, as our writer stores them). */
export function servedLayout(reader: WeightReader, dtype: ServedDtype): ServedLayout {
  const keys = reader.keys().sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const header: Record<string, unknown> = {};
  const metadata = reader instanceof SafetensorsFile ? reader.metadata : {};
  header.__metadata__ = { format: "pt", ...metadata };
  const tensors: Planned[] = [];
  let at = 0;
  for (const key of keys) {
    const { dtype: from, shape } = reader.info(key);
    const to = FLOAT.has(from) ? dtype : from;
    const bytes = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[to];
    header[key] = { dtype: to, shape, data_offsets: [at, at + bytes] };
    tensors.push({ key, from, to, bytes });
    at += bytes;
  }
  const head = encodeHeader(header);
  return { head, tensors, length: head.length + at };
}

/** Tensor `t`'s bytes in its served dtype. */
async function tensorBytes(reader: WeightReader, t: Planned): Promise<Uint8Array> {
  if (t.from === t.to) return await reader.readRaw(t.key);
  const f32 = await reader.readF32(t.key);
  const out = t.to === "F16" ? f32ToF16Bits(f32) : f32;
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** The file's served length in `dtype` (reads the header only). */
export async function servedLength(path: string, dtype: ServedDtype): Promise<number> {
  const reader = await openWeights(path);
  try {
    return servedLayout(reader, dtype).length;
  } finally {
    reader.close();
  }
}

/**
 * The weight file at `path` as a safetensors byte stream in `dtype`, and its length. The file is
 * open until the stream ends or is cancelled.
 */
export async function servedWeights(
  path: string,
  dtype: ServedDtype,
): Promise<{ length: number; body: ReadableStream<Uint8Array> }> {
  const reader = await openWeights(path);
  let layout: ServedLayout;
  try {
    layout = servedLayout(reader, dtype);
  } catch (e) {
    reader.close();
    throw e;
  }
  let next = -1;
  const body = new ReadableStream<Uint8Array>({
    async pull(ctl) {
      try {
        if (next < 0) ctl.enqueue(layout.head);
        else if (next < layout.tensors.length) {
          const t = layout.tensors[next];
          const bytes = await tensorBytes(reader, t);
          if (bytes.byteLength !== t.bytes) {
            throw new Error(
              `${path}: tensor "${t.key}" gave ${bytes.byteLength} bytes, not ${t.bytes}`,
            );
          }
          if (bytes.byteLength) ctl.enqueue(bytes);
        } else {
          reader.close();
          ctl.close();
        }
        next++;
      } catch (e) {
        reader.close();
        ctl.error(e);
      }
    },
    cancel() {
      reader.close();
    },
  }, { highWaterMark: 0 });
  return { length: layout.length, body };
}
