/// <reference types="@webgpu/types" />
/**
 * Tensors: contiguous GPU buffers with a shape and a dtype, released deterministically (explicit
 * `dispose()` or a {@link tidy} scope), and the autograd fields the tape needs.
 */
import type { Gpu } from "../gpu/device.ts";
import { GpuError } from "../gpu/errors.ts";
import { f16BitsToF32, f32ToF16Bits } from "../io/half.ts";
import { currentScope } from "./scope.ts";

export type DType = "f32" | "f16" | "i32";

export const BYTES: Record<DType, number> = { f32: 4, f16: 2, i32: 4 };

export type HostArray = Float32Array | Int32Array | Uint16Array;

/** A GPU buffer shared by a tensor and its views (reshape, saved-for-backward aliases). */
class Storage {
  refs = 1;
  constructor(readonly gpu: Gpu, readonly buffer: GPUBuffer, readonly bytes: number) {}
  retain(): void {
    this.refs++;
  }
  release(): void {
    if (--this.refs === 0) this.gpu.pool.release(this.buffer);
  }
}

/** One recorded operation of the autograd tape. */
export interface GradNode {
  /** The op's name, for error messages. */
  readonly op: string;
  /** Inputs the gradient flows to (null for those that do not need one). */
  readonly inputs: (Tensor | null)[];
  /** Given d(loss)/d(output), returns d(loss)/d(input) for each input (null where not needed). */
  backward(gradOut: Tensor): (Tensor | null)[];
  /** Releases what the op saved for backward. */
  release(): void;
}

let nextId = 1;

export class Tensor {
  readonly id = nextId++;
  readonly shape: readonly number[];
  readonly size: number;
  requiresGrad = false;
  /** Accumulated gradient of a leaf that requires grad. */
  grad: Tensor | null = null;
  /** The op that made this tensor, while the tape holds it. */
  node: GradNode | null = null;
  private storage: Storage | null;

  private constructor(
    readonly gpu: Gpu,
    shape: readonly number[],
    readonly dtype: DType,
    storage: Storage,
  ) {
    this.shape = Object.freeze([...shape]);
    this.size = numel(shape);
    this.storage = storage;
    currentScope()?.track(this);
  }

  /** Allocates an uninitialised tensor. */
  static empty(gpu: Gpu, shape: readonly number[], dtype: DType = "f32"): Tensor {
    checkShape(shape, "empty");
    const bytes = Math.max(4, numel(shape) * BYTES[dtype]);
    const buffer = gpu.pool.acquire(bytes, `tensor[${shape.join(",")}] ${dtype}`);
    return new Tensor(gpu, shape, dtype, new Storage(gpu, buffer, bytes));
  }

  /** Uploads a host array. A Float32Array becomes f16 when `dtype` is "f16". */
  static from(
    gpu: Gpu,
    data: ArrayLike<number> | HostArray,
    shape: readonly number[],
    dtype: DType = "f32",
  ): Tensor {
    checkShape(shape, "from");
    const n = numel(shape);
    if (data.length !== n) {
      throw new GpuError(`Tensor.from: ${data.length} values do not fill shape [${shape}] (${n})`);
    }
    if (dtype === "f16" && !gpu.hasF16) {
      throw new GpuError("Tensor.from: f16 storage needs the adapter feature 'shader-f16'");
    }
    let host: HostArray;
    if (dtype === "f32") host = data instanceof Float32Array ? data : Float32Array.from(data);
    else if (dtype === "i32") host = data instanceof Int32Array ? data : Int32Array.from(data);
    else {host = data instanceof Uint16Array
        ? data
        : f32ToF16Bits(data instanceof Float32Array ? data : Float32Array.from(data));}
    const t = Tensor.empty(gpu, shape, dtype);
    gpu.write(t.buffer, 0, host);
    return t;
  }

  /** The GPU buffer; throws if the tensor was released. */
  get buffer(): GPUBuffer {
    if (!this.storage) {
      throw new GpuError(`tensor #${this.id} [${this.shape}] ${this.dtype} used after release`);
    }
    return this.storage.buffer;
  }

  get isDisposed(): boolean {
    return this.storage === null;
  }

  get bytes(): number {
    return this.size * BYTES[this.dtype];
  }

  /** Releases this tensor's reference to its buffer (idempotent). */
  dispose(): void {
    if (this.storage) {
      this.storage.release();
      this.storage = null;
    }
  }

  /** A new tensor sharing this one's buffer (a view with another shape, same element count). */
  alias(shape: readonly number[] = this.shape): Tensor {
    if (numel(shape) !== this.size) {
      throw new GpuError(`reshape: cannot view [${this.shape}] (${this.size}) as [${shape}]`);
    }
    const s = this.storage;
    if (!s) this.buffer; // throws use-after-release
    s!.retain();
    return new Tensor(this.gpu, shape, this.dtype, s!);
  }

  /** Reads the values back to the host; f16 is widened to f32. */
  async data(): Promise<Float32Array | Int32Array> {
    const raw = await this.gpu.read(this.buffer, 0, this.bytes);
    if (this.dtype === "f32") return new Float32Array(raw);
    if (this.dtype === "i32") return new Int32Array(raw);
    return f16BitsToF32(new Uint16Array(raw));
  }

  /** Reads f32 or f16 values as a Float32Array. */
  async toF32(): Promise<Float32Array> {
    if (this.dtype === "i32") throw new GpuError(`toF32: tensor #${this.id} is i32`);
    return (await this.data()) as Float32Array;
  }

  /** Reads the raw f16 bits of an f16 tensor. */
  async f16Bits(): Promise<Uint16Array> {
    if (this.dtype !== "f16") throw new GpuError(`f16Bits: tensor #${this.id} is ${this.dtype}`);
    return new Uint16Array(await this.gpu.read(this.buffer, 0, this.bytes));
  }

  toString(): string {
    return `Tensor#${this.id}[${this.shape.join(",")}] ${this.dtype}`;
  }
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function checkShape(shape: readonly number[], op: string): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new GpuError(`${op}: invalid shape [${shape}]`);
  }
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
