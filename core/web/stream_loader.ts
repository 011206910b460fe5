/**
 * Loading a module's parameters from a streamed safetensors file (weight_stream.ts): the header is
 * matched with the module first (planLoad: missing, unexpected and mis-shaped keys are errors before
 * any byte is written), then each piece is converted to its parameter's storage dtype on the host
 * and written straight into the parameter's GPU buffer at its offset. Pieces of tensors the module
 * does not have (allowed unexpected keys) are read past.
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";
import type { Module } from "../nn/module.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { type LoadOptions, type LoadReport, planLoad } from "../models/load_module.ts";
import { DTYPE_BYTES, rawToF32, type WeightDtype } from "../io/dtypes.ts";
import { f32ToF16Bits } from "../io/half.ts";
import {
  pieceBytes,
  type PieceLimits,
  type SafetensorsStream,
  type TensorPiece,
} from "./weight_stream.ts";

/** Options of {@link loadModuleFromStream}. */
export interface StreamLoadOptions extends LoadOptions {
  /** Largest piece in host memory (default weight_stream's PIECE_CAP). */
  pieceCap?: number;
  /** Buffer limits to keep pieces under (default: the device's; smaller ones emulate a browser). */
  limits?: PieceLimits;
}

/** What a streamed load did, and the file's metadata (e.g. the timestep orientation). */
export interface StreamLoadReport extends LoadReport {
  metadata: Record<string, string>;
  /** Bytes of the piece size used. */
  pieceBytes: number;
}

/**
 * A piece's values in the storage dtype `to` ("f32" or "f16"), as the bytes to write and the byte
 * offset in the parameter's buffer they go to. Same dtype: the bytes as they are.
 */
export function convertPiece(
  piece: Pick<TensorPiece, "bytes" | "offset" | "key">,
  from: WeightDtype,
  to: "f32" | "f16",
  where: string,
): { bytes: Uint8Array; offset: number } {
  const srcSize = DTYPE_BYTES[from];
  const dstSize = to === "f16" ? 2 : 4;
  const offset = piece.offset / srcSize * dstSize;
  if (!Number.isInteger(offset) || offset % 4 !== 0) {
    throw new Error(
      `${where}: tensor "${piece.key}" piece at byte ${piece.offset} does not start on a ` +
        `4-byte boundary of its ${to} parameter`,
    );
  }
  if ((from === "F32" && to === "f32") || (from === "F16" && to === "f16")) {
    return { bytes: piece.bytes, offset };
  }
  const f32 = rawToF32(from, piece.bytes, `${where}: tensor ${piece.key}`, true);
  const out = to === "f32" ? f32 : f32ToF16Bits(f32);
  return { bytes: new Uint8Array(out.buffer, out.byteOffset, out.byteLength), offset };
}

/**
 * Streams a safetensors file into `module`'s parameters (in their current storage dtype: make the
 * module f16 first with `toDtype("f16")` to load f16 weights into f16 storage).
 */
export async function loadModuleFromStream(
  gpu: Gpu,
  module: Module,
  stream: SafetensorsStream,
  opts: StreamLoadOptions = {},
): Promise<StreamLoadReport> {
  const h = await stream.header();
  const plan = planLoad(
    module,
    [...h.entries.keys()],
    (k) => {
      const e = h.entries.get(k)!;
      return { dtype: e.dtype, shape: [...e.shape] };
    },
    stream.where,
    opts,
  );
  const limits = opts.limits ?? gpu.limits;
  // Each parameter is one storage buffer, bound whole by the kernels: it must fit the limits.
  const most = Math.min(limits.maxBufferSize, limits.maxStorageBufferBindingSize);
  for (const [, p, fk] of plan.pairs) {
    if (p.bytes > most) {
      throw new Error(
        `${stream.where}: tensor "${fk}" needs ${p.bytes} bytes as ${p.dtype}, more than the ` +
          `adapter's buffer limit of ${most} bytes (maxBufferSize / maxStorageBufferBindingSize)` +
          (p.dtype === "f32" ? "; f16 storage would halve it" : ""),
      );
    }
  }
  const target = new Map<string, Tensor>(plan.pairs.map(([, p, fk]) => [fk, p]));
  const size = pieceBytes(limits, opts.pieceCap);
  let loaded = 0;
  try {
    for await (const piece of stream.pieces(size)) {
      const p = target.get(piece.key);
      if (!p) continue;
      if (p.dtype !== "f32" && p.dtype !== "f16") {
        throw new Error(`${stream.where}: parameter for "${piece.key}" is stored as ${p.dtype}`);
      }
      const { bytes, offset } = convertPiece(piece, piece.entry.dtype, p.dtype, stream.where);
      if (bytes.byteLength) gpu.write(p.buffer, offset, bytes);
      if (piece.last) loaded++;
    }
  } catch (e) {
    await stream.cancel();
    throw e;
  }
  return {
    loaded,
    missing: plan.missing,
    unexpected: plan.unexpected,
    metadata: h.metadata,
    pieceBytes: size,
  };
}
