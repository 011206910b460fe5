/**
 * One reader interface over the weight file formats (safetensors, PyTorch zip `.bin`/`.pth`), and
 * {@link openWeights} choosing the format by the file's first bytes.
 *
 * @module
 */

import type { WeightDtype } from "./dtypes.ts";
import { openSafetensors } from "./safetensors.ts";
import { openTorchFile } from "./torch_file.ts";

export type { WeightDtype } from "./dtypes.ts";

/** Dtype and shape of one stored tensor. */
export interface TensorInfo {
  dtype: WeightDtype;
  shape: number[];
}

/** Lazy, read-only access to the named tensors of a weight file. */
export interface WeightReader {
  /** Path the file was opened from. */
  readonly path: string;
  /** Tensor names. */
  keys(): string[];
  /** True when tensor `key` exists. */
  has(key: string): boolean;
  /** Dtype and shape of tensor `key`; throws naming the file and key when absent. */
  info(key: string): TensorInfo;
  /** Tensor `key` converted to float32, C order. */
  readF32(key: string): Promise<Float32Array>;
  /** Tensor `key`'s raw little-endian bytes, C order; only those bytes are read from disk. */
  readRaw(key: string): Promise<Uint8Array>;
  /** Releases the file handle. */
  close(): void;
}

/**
 * Opens a weight file of either format: a ZIP signature (`PK\x03\x04`) means a PyTorch file,
 * anything else is read as safetensors (whose validation then names what is wrong).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * // the same tiny UNet's weights, saved by torch.save and as safetensors
 * const dir = "tests/fixtures/sample";
 * const pt = await openWeights(`${dir}/score_model_s7.pth`);
 * const st = await openWeights(`${dir}/unet_tiny/diffusion_pytorch_model.safetensors`);
 * assert.deepEqual(pt.keys().sort(), st.keys().sort());
 * assert.deepEqual(pt.info("conv_in.weight"), st.info("conv_in.weight"));
 * assert.deepEqual(await pt.readF32("conv_in.weight"), await st.readF32("conv_in.weight"));
 * pt.close();
 * st.close();
 * ```
 */
export async function openWeights(path: string): Promise<WeightReader> {
  const head = new Uint8Array(4);
  const file = await Deno.open(path, { read: true });
  let got = 0;
  try {
    while (got < 4) {
      const n = await file.read(head.subarray(got));
      if (n === null) break;
      got += n;
    }
  } finally {
    file.close();
  }
  const isZip = got === 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 3 &&
    head[3] === 4;
  if (isZip) return await openTorchFile(path);
  // Legacy torch.save: a pickled LONG1 magic number (PROTO n, LONG1 ...); a safetensors header
  // length would have a zero third byte.
  if (got >= 3 && head[0] === 0x80 && head[1] <= 5 && head[2] === 0x8a) {
    throw new Error(
      `${path}: legacy (pre-1.6, non-zip) PyTorch serialization is not supported; ` +
        `re-save it with torch.save from torch >= 1.6 or convert it to safetensors`,
    );
  }
  return await openSafetensors(path);
}
