/// <reference types="@webgpu/types" />
/**
 * The GPU context: adapter and device with the adapter's maximum limits, a pipeline cache, a pooled
 * buffer allocator and a batched command recorder. Every kernel launch goes through {@link Gpu.dispatch};
 * work is submitted in batches and read back only where a value is really needed.
 */
import { BufferPool } from "./pool.ts";
import { GpuError } from "./errors.ts";
import { trimTextures } from "./texture_pool.ts";
import {
  type CapsOverrides,
  type GpuCaps,
  overridesFromEnv,
  probeCapabilities,
} from "./capabilities.ts";
import { BACKEND_VAR, preferVulkan } from "./native_backend.ts";
import { Profiler } from "./profiler.ts";

export { GpuError };
export type { GpuCaps };

/** Storage usage of every tensor buffer: kernels read and write it, uploads and read-backs copy it. */
export const STORAGE_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC |
  GPUBufferUsage.COPY_DST;

const UNIFORM_ALIGN = 256;
const ARENA_BYTES = 1 << 20;
/** Submit after this many dispatches even without a sync point, so lavapipe and drivers stay busy. */
const MAX_DISPATCHES_PER_SUBMIT = 2048;
/** Bind groups kept for reuse; the cache starts over when it holds this many. */
const MAX_CACHED_BIND_GROUPS = 1 << 16;

export interface GpuOptions {
  /** Use f16 storage where the adapter has `shader-f16` (default true). */
  allowF16?: boolean;
  powerPreference?: GPUPowerPreference;
  /**
   * Kernel paths to switch off whatever the adapter can do (`{ textureOperands: false }` runs the
   * storage-buffer kernels only). The environment variable `REFLOW_GPU_PATHS=no-texture,no-f16`
   * does the same for a whole process.
   */
  paths?: CapsOverrides;
}

/** How to get an adapter that runs every path, for error messages. */
const GET_CAPABLE_ADAPTER = "Install your GPU's Vulkan/Metal/D3D12 driver, or on a CPU-only " +
  "Linux machine Mesa's software Vulkan driver (`apt-get install mesa-vulkan-drivers`; " +
  "`bash scripts/setup.sh` does it).";

/** A compiled compute kernel: its pipeline and the name errors are reported under. */
export interface Kernel {
  name: string;
  pipeline: GPUComputePipeline;
  usesUniforms: boolean;
}

function isBuffer(b: GPUBuffer | GPUTextureView): b is GPUBuffer {
  return "mapAsync" in b;
}

export class Gpu {
  readonly pool: BufferPool;
  readonly hasF16: boolean;
  readonly hasTimestamps: boolean;
  /**
   * What the adapter proved it can do at {@link Gpu.open} (see capabilities.ts); kernels route on
   * it: storage-buffer paths where texture operands fail, f32 where f16 does.
   */
  readonly caps: GpuCaps;
  /** Count of dispatches since creation, for benchmarks and tests. */
  dispatchCount = 0;
  /** Count of queue submits of recorded work since creation (each costs driver time). */
  submitCount = 0;
  /**
   * Host milliseconds spent inside queue.submit since creation: small on a GPU; on lavapipe a submit
   * runs much of the work before it returns, so benchmarks report it apart from recording time.
   */
  submitMs = 0;
  /** Bind groups created (a dispatch whose resources repeat an earlier one's reuses its group). */
  bindGroupsCreated = 0;
  /**
   * Bind groups by pipeline and bound resources. Creating one is most of a dispatch's host time
   * (~20 us on lavapipe's host), and a repeated step binds the same pooled buffers and uniform
   * arena offsets in the same order, so its groups are found here. Resources are keyed by object
   * identity: a destroyed buffer's id never comes back, so no stale group can be hit.
   */
  private readonly bindGroups = new Map<string, GPUBindGroup>();
  private readonly resourceIds = new WeakMap<object, number>();
  private nextResourceId = 1;
  private readonly pipelines = new Map<string, Kernel>();
  private readonly pendingChecks: Promise<GpuError | null>[] = [];
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private batchOps: string[] = [];
  private arena = new Uint8Array(new ArrayBuffer(ARENA_BYTES));
  private arenaUsed = 0;
  private arenaBuffer: GPUBuffer;
  private uncaptured: GpuError | null = null;
  private lost: string | null = null;
  /** Buffers to return to the pool once the batch that last used them has been submitted. */
  private afterSubmit: (() => void)[] = [];

  private constructor(
    readonly adapter: GPUAdapter,
    readonly device: GPUDevice,
    readonly info: GPUAdapterInfo,
    allowF16: boolean,
    caps: GpuCaps,
  ) {
    this.caps = caps;
    this.hasF16 = allowF16 && caps.f16;
    this.hasTimestamps = device.features.has("timestamp-query");
    this.pool = new BufferPool(device, STORAGE_USAGE);
    this.arenaBuffer = this.newArenaBuffer();
    device.addEventListener("uncapturederror", (ev) => {
      const e = (ev as GPUUncapturedErrorEvent).error;
      this.uncaptured ??= new GpuError(
        `GPU error during [${this.batchOps.slice(-8).join(", ")}]: ${e.message}`,
      );
    });
    device.lost.then((info) => {
      this.lost = `GPU device lost (${info.reason}): ${info.message}`;
    });
  }

  /** Opens the default adapter with its maximum limits and useful features. */
  static async open(opts: GpuOptions = {}): Promise<Gpu> {
    if (typeof navigator === "undefined" || !navigator.gpu) {
      throw new GpuError(
        "WebGPU is not available in this runtime (navigator.gpu is missing); run with Deno 2 or newer.",
      );
    }
    const backends = preferVulkan();
    const adapter = await navigator.gpu.requestAdapter({
      powerPreference: opts.powerPreference ?? "high-performance",
    });
    if (!adapter) {
      const where = backends ? ` on wgpu's ${backends} backend (${BACKEND_VAR}=${backends})` : "";
      const gl = backends === "vulkan"
        ? ` (${BACKEND_VAR}=gl would use wgpu's GL backend: storage kernels only.)`
        : "";
      throw new GpuError(`No WebGPU adapter found${where}. ${GET_CAPABLE_ADAPTER}${gl}`);
    }
    const wanted: GPUFeatureName[] = ["shader-f16", "timestamp-query"];
    const requiredFeatures = wanted.filter((f) => adapter.features.has(f));
    const requiredLimits: Record<string, number> = {};
    for (
      const k of [
        "maxStorageBufferBindingSize",
        "maxBufferSize",
        "maxComputeWorkgroupStorageSize",
        "maxComputeInvocationsPerWorkgroup",
        "maxComputeWorkgroupSizeX",
        "maxComputeWorkgroupSizeY",
        "maxComputeWorkgroupSizeZ",
        "maxComputeWorkgroupsPerDimension",
        "maxStorageBuffersPerShaderStage",
        "maxBindGroups",
        "maxTextureDimension2D",
        "maxTextureDimension3D",
        "maxTextureArrayLayers",
      ] as const
    ) requiredLimits[k] = adapter.limits[k];
    const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
    const env = (globalThis as { Deno?: { env: { get(k: string): string | undefined } } }).Deno
      ?.env.get("REFLOW_GPU_PATHS");
    const fallback = (adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean })
      .isFallbackAdapter ?? false;
    const caps = await probeCapabilities(
      device,
      { ...overridesFromEnv(env), ...opts.paths },
      fallback,
    );
    if (!caps.compute) {
      device.destroy();
      throw new GpuError(
        `The WebGPU adapter '${adapter.info.description || "unknown"}' cannot run compute ` +
          `kernels correctly (${caps.missing.join("; ")}). ${GET_CAPABLE_ADAPTER}`,
      );
    }
    return new Gpu(adapter, device, adapter.info, opts.allowF16 ?? true, caps);
  }

  get limits(): GPUSupportedLimits {
    return this.device.limits;
  }

  /** Human-readable adapter description for logs and benchmark records. */
  describe(): {
    description: string;
    vendor: string;
    backend: string;
    fallback: boolean;
    paths: { texture: boolean; f16: boolean; tiled: boolean };
    missing: string[];
    features: string[];
  } {
    return {
      description: this.info.description || this.info.device || "unknown",
      vendor: this.info.vendor,
      backend: backendOf(this.caps),
      fallback: (this.info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter ??
        false,
      paths: {
        texture: this.caps.textureOperands,
        f16: this.hasF16,
        tiled: this.caps.tiledKernels,
      },
      missing: this.caps.missing,
      features: [...this.device.features].sort(),
    };
  }

  /** One line naming the adapter, its backend and the kernel paths in use, for logs. */
  summary(): string {
    const d = this.describe();
    const paths = [d.paths.texture ? "texture" : "storage-only", d.paths.f16 ? "f16" : "no f16"];
    if (d.paths.tiled) paths.push("tiled kernels");
    return `${d.description} (${d.backend}${d.fallback ? ", software" : ""}; ${paths.join(", ")})`;
  }

  /**
   * Throws naming `op` when it is asked for the texture-operand path on an adapter without it;
   * says whether the default (`path` undefined) may take that path.
   */
  texturePathAllowed(op: string, path: string | undefined): boolean {
    if (path === "texture" && !this.caps.textureOperands) {
      throw new GpuError(
        `${op}: the texture path was asked for, but this adapter cannot use texture operands ` +
          `(${this.caps.missing.join("; ")}). Leave the path unset to use the storage kernels.`,
      );
    }
    return path !== "storage" && this.caps.textureOperands;
  }

  /**
   * Returns the cached pipeline for `key`, compiling `code` on first use. Compile errors are
   * collected and thrown (naming the kernel) at the next sync point.
   */
  kernel(name: string, key: string, code: () => string): Kernel {
    const cacheKey = `${name}|${key}`;
    const hit = this.pipelines.get(cacheKey);
    if (hit) return hit;
    const src = code();
    this.device.pushErrorScope("validation");
    const module = this.device.createShaderModule({ code: src, label: name });
    const pipeline = this.device.createComputePipeline({
      layout: "auto",
      compute: { module, entryPoint: "main" },
      label: name,
    });
    // Resolves to the error (never rejects) so nothing is left unhandled until the next sync point.
    const check = this.device.popErrorScope().then((err) =>
      err
        ? new GpuError(`kernel '${name}' (${key}) failed to compile or link: ${err.message}`)
        : null
    );
    this.pendingChecks.push(check);
    const k: Kernel = { name, pipeline, usesUniforms: /var<uniform>/.test(src) };
    this.pipelines.set(cacheKey, k);
    return k;
  }

  /** Number of distinct compiled pipelines (for tests of the cache). */
  get pipelineCount(): number {
    return this.pipelines.size;
  }

  /**
   * Records one dispatch. `buffers` (storage buffers or texture views) bind to @binding(1..n) in
   * order; `uniforms` (if the kernel
   * declares a uniform) bind to @binding(0).
   */
  dispatch(
    k: Kernel,
    buffers: (GPUBuffer | GPUTextureView)[],
    uniforms: ArrayBufferView | null,
    workgroups: [number, number?, number?],
  ): void {
    this.throwIfBroken();
    const maxWg = this.limits.maxComputeWorkgroupsPerDimension;
    const [x, y = 1, z = 1] = workgroups;
    if (x > maxWg || y > maxWg || z > maxWg) {
      throw new GpuError(
        `kernel '${k.name}': dispatch [${x}, ${y}, ${z}] exceeds maxComputeWorkgroupsPerDimension ${maxWg}`,
      );
    }
    if (x === 0 || y === 0 || z === 0) return;
    const entries: GPUBindGroupEntry[] = [];
    let key = `${this.resourceId(k.pipeline)}|`;
    if (k.usesUniforms) {
      if (!uniforms) throw new GpuError(`kernel '${k.name}' needs uniforms`);
      const size = uniforms.byteLength;
      if (this.arenaUsed + size > ARENA_BYTES) this.flush();
      const off = this.arenaUsed;
      this.arena.set(new Uint8Array(uniforms.buffer, uniforms.byteOffset, size), off);
      this.arenaUsed = off + Math.ceil(Math.max(size, 16) / UNIFORM_ALIGN) * UNIFORM_ALIGN;
      entries.push({ binding: 0, resource: { buffer: this.arenaBuffer, offset: off, size } });
      key += `${this.resourceId(this.arenaBuffer)}:${off}:${size}|`;
    }
    buffers.forEach((b, i) => {
      entries.push({ binding: i + 1, resource: isBuffer(b) ? { buffer: b } : b });
      key += `${this.resourceId(b)},`;
    });
    let bindGroup = this.bindGroups.get(key);
    if (!bindGroup) {
      bindGroup = this.device.createBindGroup({
        layout: k.pipeline.getBindGroupLayout(0),
        entries,
        label: k.name,
      });
      this.bindGroupsCreated++;
      if (this.bindGroups.size >= MAX_CACHED_BIND_GROUPS) this.bindGroups.clear();
      this.bindGroups.set(key, bindGroup);
    }
    if (this.profiler) this.endPass(); // one pass per dispatch, each timed
    if (!this.pass) {
      // An encoder may already hold copies recorded since the last flush: keep them.
      this.encoder ??= this.device.createCommandEncoder();
      this.pass = this.encoder.beginComputePass(this.profiler?.passTimestamps(k.name));
    }
    this.pass.setPipeline(k.pipeline);
    this.pass.setBindGroup(0, bindGroup);
    this.pass.dispatchWorkgroups(x, y, z);
    this.batchOps.push(k.name);
    this.dispatchCount++;
    if (this.batchOps.length >= MAX_DISPATCHES_PER_SUBMIT) this.flush();
  }

  /** A stable id per GPU object (pipelines, buffers, texture views) for bind-group keys. */
  private resourceId(o: object): number {
    let id = this.resourceIds.get(o);
    if (id === undefined) {
      id = this.nextResourceId++;
      this.resourceIds.set(o, id);
    }
    return id;
  }

  /** Records a buffer-to-buffer copy in the current batch. */
  copy(src: GPUBuffer, srcOff: number, dst: GPUBuffer, dstOff: number, bytes: number): void {
    this.throwIfBroken();
    this.endPass();
    this.encoder ??= this.device.createCommandEncoder();
    this.encoder.copyBufferToBuffer(src, srcOff, dst, dstOff, bytes);
    this.batchOps.push("copy");
  }

  /** Records a copy of rows of a buffer into a texture (texture-operand kernels). */
  copyToTexture(
    src: GPUBuffer,
    layout: { bytesPerRow: number; rowsPerImage: number },
    dst: GPUTexture,
    size: [number, number, number],
  ): void {
    this.endPass();
    this.encoder ??= this.device.createCommandEncoder();
    this.encoder.copyBufferToTexture({ buffer: src, ...layout }, { texture: dst }, size);
    this.batchOps.push("copyToTexture");
  }

  /** Runs `fn` once the current batch is submitted (used to recycle buffers safely). */
  onSubmit(fn: () => void): void {
    this.afterSubmit.push(fn);
  }

  private endPass(): void {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
  }

  /** Submits all recorded work. */
  flush(): void {
    this.endPass();
    if (this.encoder) {
      if (this.arenaUsed > 0) {
        this.device.queue.writeBuffer(this.arenaBuffer, 0, this.arena, 0, this.arenaUsed);
      }
      this.profiler?.resolve(this.encoder);
      const cmd = this.encoder.finish();
      const t0 = performance.now();
      this.device.queue.submit([cmd]);
      this.submitMs += performance.now() - t0;
      this.submitCount++;
      this.profiler?.afterSubmit();
      this.encoder = null;
      // The arena buffer is in flight now; writes for the next batch go to a fresh one so they
      // cannot overtake the submitted commands' reads.
      if (this.arenaUsed > 0) {
        const old = this.arenaBuffer;
        this.arenaBuffer = this.newArenaBuffer();
        this.afterSubmit.push(() => this.retireArena(old));
      }
      this.arenaUsed = 0;
      this.batchOps = [];
    }
    const fns = this.afterSubmit;
    this.afterSubmit = [];
    for (const f of fns) f();
    this.pool.canonicalize();
  }

  private spareArenas: GPUBuffer[] = [];
  private newArenaBuffer(): GPUBuffer {
    return this.spareArenas.pop() ?? this.device.createBuffer({
      size: ARENA_BYTES,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      label: "uniform-arena",
    });
  }
  private retireArena(b: GPUBuffer): void {
    // writeBuffer is ordered after earlier submits on the queue, so a retired arena can be reused.
    if (this.spareArenas.length < 4) this.spareArenas.push(b);
    else b.destroy();
  }

  private profiler: Profiler | null = null;

  /**
   * Times every following dispatch with timestamp queries (each in its own compute pass) until
   * {@link stopProfiling}, which returns milliseconds and counts per kernel name. Needs the
   * adapter feature `timestamp-query`.
   */
  startProfiling(): void {
    if (!this.hasTimestamps) throw new GpuError("profiling needs the 'timestamp-query' feature");
    this.flush();
    this.profiler = new Profiler(this.device, MAX_DISPATCHES_PER_SUBMIT);
  }

  async stopProfiling(): Promise<Map<string, { ms: number; count: number }>> {
    const p = this.profiler;
    if (!p) throw new GpuError("stopProfiling: profiling was not started");
    this.flush();
    this.profiler = null;
    return await p.collect();
  }

  /** Uploads host data into `buffer` at `offset`, after any recorded work that precedes it. */
  write(buffer: GPUBuffer, offset: number, data: ArrayBufferView): void {
    this.throwIfBroken();
    // queue.writeBuffer runs before not-yet-submitted commands, so submit them first.
    this.flush();
    let bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
    if (bytes.byteLength % 4 !== 0) {
      const padded = new Uint8Array(new ArrayBuffer(Math.ceil(bytes.byteLength / 4) * 4));
      padded.set(bytes);
      bytes = padded;
    }
    this.device.queue.writeBuffer(buffer, offset, bytes);
  }

  /** Reads `bytes` bytes of `buffer` from `offset` back to the host (a sync point). */
  async read(buffer: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
    this.throwIfBroken();
    const padded = Math.ceil(bytes / 4) * 4;
    const staging = this.device.createBuffer({
      size: Math.max(padded, 4),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    this.copy(buffer, offset, staging, 0, padded);
    this.flush();
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (e) {
      await this.sync();
      throw e;
    }
    const out = staging.getMappedRange().slice(0, bytes);
    staging.unmap();
    staging.destroy();
    await this.checkErrors();
    return out;
  }

  /** Waits for all submitted work and surfaces any error it raised. */
  async sync(): Promise<void> {
    this.throwIfBroken();
    // A mapped read of a copy recorded last is a fence: the queue runs in order, so once it maps,
    // all earlier work is done. (onSubmittedWorkDone was seen to resolve early on lavapipe.)
    this.fenceSrc ??= this.device.createBuffer({
      size: 4,
      usage: GPUBufferUsage.COPY_SRC,
      label: "fence-src",
    });
    const dst = this.device.createBuffer({
      size: 4,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      label: "fence",
    });
    this.copy(this.fenceSrc, 0, dst, 0, 4);
    this.flush();
    await dst.mapAsync(GPUMapMode.READ);
    dst.unmap();
    dst.destroy();
    await this.checkErrors();
  }
  private fenceSrc: GPUBuffer | null = null;

  private async checkErrors(): Promise<void> {
    const checks = this.pendingChecks.splice(0);
    const failed = (await Promise.all(checks)).find((e) => e !== null);
    if (failed) throw failed;
    this.throwIfBroken();
  }

  private throwIfBroken(): void {
    if (this.destroyed) {
      throw new GpuError("this Gpu was destroyed; open a new one with Gpu.open()");
    }
    if (this.lost) throw new GpuError(this.lost);
    if (this.uncaptured) {
      const e = this.uncaptured;
      this.uncaptured = null;
      throw e;
    }
  }

  private destroyed = false;

  /**
   * Waits for the work already submitted, then destroys the device ({@link destroy}). Prefer it
   * where the caller can await: destroying a device under running work is where drivers crash.
   */
  async close(): Promise<void> {
    if (this.destroyed) return;
    try {
      await this.sync();
    } finally {
      this.destroy();
    }
  }

  /**
   * Releases pooled memory and textures and destroys the device; later use is an error. Calling
   * it again does nothing (a second device.destroy() is not left to the driver).
   */
  destroy(): void {
    if (this.destroyed) return;
    this.flush();
    this.destroyed = true;
    this.bindGroups.clear();
    trimTextures(this);
    this.pool.trim();
    for (const b of this.spareArenas.splice(0)) b.destroy();
    this.arenaBuffer.destroy();
    this.fenceSrc?.destroy();
    this.fenceSrc = null;
    this.device.destroy();
  }
}

/**
 * The graphics backend, as far as it can be known: Deno does not report it, so it is the forced one
 * (`DENO_WEBGPU_BACKEND`) or inferred: on Linux wgpu offers Vulkan and GL, and only GL fails the
 * texture probe.
 */
function backendOf(caps: GpuCaps): string {
  const d = (globalThis as {
    Deno?: { env: { get(k: string): string | undefined }; build: { os: string } };
  }).Deno;
  const forced = d?.env.get("DENO_WEBGPU_BACKEND");
  if (forced) return forced;
  if (!d) return "browser";
  if (d.build.os === "linux") return caps.textureProbe ? "vulkan" : "gl (downlevel)";
  return d.build.os === "darwin"
    ? "metal"
    : d.build.os === "windows"
    ? "dx12 or vulkan"
    : "unknown";
}
