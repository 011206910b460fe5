/**
 * Reading many tensors back at once: they are copied into one staging buffer per chunk and mapped
 * once, because each map costs a full GPU round trip (~10 ms in Deno) — checkpoints, state dicts and
 * the gradient all-reduce would otherwise pay it per tensor.
 */
/// <reference types="@webgpu/types" />
import { f16BitsToF32 } from "../io/half.ts";
import type { Tensor } from "./tensor.ts";

const CHUNK_BYTES = 64 << 20;

/** Reads every tensor as a Float32Array (f16 widened), in order. */
export async function readMany(tensors: Tensor[]): Promise<Float32Array[]> {
  const out: Float32Array[] = new Array(tensors.length);
  let i = 0;
  while (i < tensors.length) {
    const gpu = tensors[i].gpu;
    let bytes = 0;
    let j = i;
    const offsets: number[] = [];
    while (j < tensors.length && (j === i || bytes + tensors[j].bytes <= CHUNK_BYTES)) {
      offsets.push(bytes);
      bytes += Math.ceil(tensors[j].bytes / 4) * 4;
      j++;
    }
    const staging = gpu.device.createBuffer({
      size: Math.max(bytes, 4),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      label: "readMany",
    });
    for (let k = i; k < j; k++) {
      const t = tensors[k];
      gpu.copy(t.buffer, 0, staging, offsets[k - i], Math.ceil(t.bytes / 4) * 4);
    }
    gpu.flush();
    await staging.mapAsync(GPUMapMode.READ);
    const all = staging.getMappedRange();
    for (let k = i; k < j; k++) {
      const t = tensors[k];
      const off = offsets[k - i];
      out[k] = t.dtype === "f16"
        ? f16BitsToF32(new Uint16Array(all.slice(off, off + t.bytes)))
        : new Float32Array(all.slice(off, off + t.bytes));
    }
    staging.unmap();
    staging.destroy();
    i = j;
  }
  return out;
}
