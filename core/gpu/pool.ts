/// <reference types="@webgpu/types" />
import { GpuError } from "./errors.ts";

/**
 * A pooled allocator of storage buffers in power-of-two-ish size classes. Freed buffers are kept for
 * reuse; WebGPU's queue ordering makes reuse safe as soon as the last command using a buffer has been
 * recorded. Live and peak bytes count what tensors hold, the reserve counts what the pool keeps.
 */
export class BufferPool {
  private readonly free = new Map<number, GPUBuffer[]>();
  private live = 0;
  private peak = 0;
  private reserved = 0;
  /** Creation order of every buffer made here (the canonical order of the free lists). */
  private readonly serial = new WeakMap<GPUBuffer, number>();
  private nextSerial = 0;

  constructor(private readonly device: GPUDevice, private readonly usage: GPUBufferUsageFlags) {}

  /** Rounds a request up to its size class: 4 steps per power of two keep waste under 19%. */
  static sizeClass(bytes: number): number {
    const b = Math.max(256, Math.ceil(bytes / 4) * 4);
    const p = 2 ** Math.floor(Math.log2(b));
    if (b === p) return b;
    const step = p / 4;
    return Math.ceil(b / step) * step;
  }

  acquire(bytes: number, label = "tensor"): GPUBuffer {
    const size = BufferPool.sizeClass(bytes);
    const max = Math.min(
      this.device.limits.maxBufferSize,
      this.device.limits.maxStorageBufferBindingSize,
    );
    if (size > max) {
      throw new GpuError(
        `${label}: a buffer of ${bytes} bytes exceeds the adapter's limit of ${max} bytes ` +
          `(maxStorageBufferBindingSize/maxBufferSize)`,
      );
    }
    const list = this.free.get(size);
    let buf = list?.pop();
    if (buf) this.reserved -= size;
    else {
      buf = this.device.createBuffer({ size, usage: this.usage, label });
      this.serial.set(buf, this.nextSerial++);
    }
    this.live += size;
    this.peak = Math.max(this.peak, this.live);
    return buf;
  }

  release(buf: GPUBuffer): void {
    const size = buf.size;
    this.live -= size;
    let list = this.free.get(size);
    if (!list) this.free.set(size, list = []);
    list.push(buf);
    this.reserved += size;
  }

  /**
   * Puts every free list in creation order (newest last, so the next acquire still takes the most
   * recently made buffer of its size). Called at each submit: a step that repeats then gets the
   * same buffers in the same order every time, whatever order the last step freed them in, so its
   * bind groups can be reused.
   */
  canonicalize(): void {
    const key = (b: GPUBuffer) => this.serial.get(b) ?? -1;
    for (const list of this.free.values()) {
      if (list.length > 1) list.sort((a, b) => key(a) - key(b));
    }
  }

  /** Bytes currently held by live tensors. */
  get liveBytes(): number {
    return this.live;
  }
  /** Highest liveBytes since creation or the last {@link resetPeak}. */
  get peakBytes(): number {
    return this.peak;
  }
  /** Bytes kept in the pool for reuse. */
  get reservedBytes(): number {
    return this.reserved;
  }
  resetPeak(): void {
    this.peak = this.live;
  }

  /** Destroys every pooled (free) buffer. */
  trim(): void {
    for (const list of this.free.values()) for (const b of list) b.destroy();
    this.free.clear();
    this.reserved = 0;
  }
}
