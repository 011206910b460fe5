/// <reference types="@webgpu/types" />
/**
 * What an adapter can really do, found by running tiny kernels rather than trusting its name: Mesa's
 * OpenGL and Vulkan software adapters both call themselves "llvmpipe", but on the GL one a 1-layer
 * texture cannot be viewed as a 2d-array (wgpu's GL backend guesses the view dimension when the
 * texture is made), so the texture-operand kernels fail there. {@link probeCapabilities} records
 * the answers once per device; kernels route on them.
 *
 * @module
 */

/** The kernel paths an adapter supports, and why a path is off. */
export interface GpuCaps {
  /** Plain storage-buffer kernels compute correctly (every path needs this). */
  compute: boolean;
  /** The texture probe passed (before overrides): false on downlevel adapters such as wgpu's GL. */
  textureProbe: boolean;
  /** Texture-operand kernels (rgba32float 2d, 2d-array and 3d textures: copies, stores, loads). */
  textureOperands: boolean;
  /** f16 storage and arithmetic (`shader-f16`, checked by running it). */
  f16: boolean;
  /**
   * Workgroup-memory tiled GEMM, convolution and flash-attention kernels are the default path: on a
   * hardware adapter (not a fallback/software one, where lavapipe's texture-operand kernels win).
   */
  tiledKernels: boolean;
  /** Why a path is off (empty when all are on). */
  missing: string[];
}

/** A probe's verdict for each path, with the first failure it saw. */
interface ProbeResult {
  ok: boolean;
  why?: string;
}

const SIDE = 2;
type Kind = "2d" | "2d-array" | "3d";
/** Texture shapes the operand kernels create: a 1-layer 2d-array is the case GL gets wrong. */
const KINDS: { kind: Kind; layers: number }[] = [
  { kind: "2d", layers: 1 },
  { kind: "2d-array", layers: 1 },
  { kind: "2d-array", layers: 3 },
  { kind: "3d", layers: 2 },
];

function wgslTexture(kind: Kind, storage: boolean): string {
  const dim = kind === "2d" ? "2d" : kind === "2d-array" ? "2d_array" : "3d";
  return storage ? `texture_storage_${dim}<rgba32float, write>` : `texture_${dim}<f32>`;
}

/** Coordinates of texel (x, y, z) in WGSL for one kind of texture. */
function coord(kind: Kind, op: "load" | "store", tex: string, value = ""): string {
  const v = value ? `, ${value}` : "";
  const lod = op === "load" ? ", 0" : "";
  const fn = op === "load" ? "textureLoad" : "textureStore";
  if (kind === "2d") return `${fn}(${tex}, vec2<u32>(x, y)${lod}${v})`;
  if (kind === "2d-array") return `${fn}(${tex}, vec2<u32>(x, y), z${lod}${v})`;
  return `${fn}(${tex}, vec3<u32>(x, y, z)${lod}${v})`;
}

/** Loads every texel of `src` into out[] and stores twice its value into `dst`. */
function copyShader(kind: Kind, layers: number): string {
  return `
@group(0) @binding(0) var src: ${wgslTexture(kind, false)};
@group(0) @binding(1) var dst: ${wgslTexture(kind, true)};
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@compute @workgroup_size(1)
fn main() {
  for (var z = 0u; z < ${layers}u; z++) {
    for (var y = 0u; y < ${SIDE}u; y++) {
      for (var x = 0u; x < ${SIDE}u; x++) {
        let v = ${coord(kind, "load", "src")};
        out[(z * ${SIDE}u + y) * ${SIDE}u + x] = v;
        ${coord(kind, "store", "dst", "v * 2.0")};
      }
    }
  }
}`;
}

/** Loads every texel of `src` into out[] (reads back what the copy shader stored). */
function loadShader(kind: Kind, layers: number): string {
  return `
@group(0) @binding(0) var src: ${wgslTexture(kind, false)};
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@compute @workgroup_size(1)
fn main() {
  for (var z = 0u; z < ${layers}u; z++) {
    for (var y = 0u; y < ${SIDE}u; y++) {
      for (var x = 0u; x < ${SIDE}u; x++) {
        out[(z * ${SIDE}u + y) * ${SIDE}u + x] = ${coord(kind, "load", "src")};
      }
    }
  }
}`;
}

const F16_SHADER = `
enable f16;
@group(0) @binding(0) var<storage, read_write> io: array<f16>;
@compute @workgroup_size(4)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let i = g.x;
  io[i] = io[i] * f16(0.5) + f16(1.25);
}`;
const F16_INPUT = [0x3c00, 0xc000, 0x3555, 0x4b00]; // 1, -2, 0.33325, 14 as IEEE half bits

/** Runs `record` with validation and internal errors captured; the first error's message, if any. */
async function captured(device: GPUDevice, record: () => void): Promise<string | null> {
  device.pushErrorScope("validation");
  device.pushErrorScope("internal");
  device.pushErrorScope("out-of-memory");
  let thrown: string | null = null;
  try {
    record();
  } catch (e) {
    thrown = (e as Error).message;
  }
  const errs = await Promise.all([
    device.popErrorScope(),
    device.popErrorScope(),
    device.popErrorScope(),
  ]);
  return thrown ?? errs.find((e) => e)?.message ?? null;
}

/** Reads `bytes` bytes of each of `srcs` back to the host through one mapping (one wait). */
async function readBack(
  device: GPUDevice,
  srcs: GPUBuffer[],
  bytes: number,
): Promise<ArrayBuffer[]> {
  const staging = device.createBuffer({
    size: bytes * srcs.length,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const enc = device.createCommandEncoder();
  srcs.forEach((src, i) => enc.copyBufferToBuffer(src, 0, staging, i * bytes, bytes));
  device.queue.submit([enc.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const all = staging.getMappedRange();
  const out = srcs.map((_, i) => all.slice(i * bytes, (i + 1) * bytes));
  staging.unmap();
  staging.destroy();
  return out;
}

/** Upload -> textureLoad -> textureStore -> textureLoad round trip for one texture shape. */
async function probeTextureKind(
  device: GPUDevice,
  kind: Kind,
  layers: number,
): Promise<string | null> {
  const n = SIDE * SIDE * layers;
  const data = new Float32Array(4 * n).map((_, i) => i * 0.75 - 3);
  const usage = GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.STORAGE_BINDING |
    GPUTextureUsage.COPY_DST;
  const made: { destroy(): void }[] = [];
  let out1!: GPUBuffer, out2!: GPUBuffer;
  try {
    const err = await captured(device, () => {
      const mk = () => {
        const t = device.createTexture({
          size: [SIDE, SIDE, layers],
          dimension: kind === "3d" ? "3d" : "2d",
          format: "rgba32float",
          usage,
        });
        made.push(t);
        return t;
      };
      const a = mk(), b = mk();
      const buf = (size: number) => {
        const x = device.createBuffer({
          size,
          usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
        });
        made.push(x);
        return x;
      };
      out1 = buf(16 * n);
      out2 = buf(16 * n);
      device.queue.writeTexture(
        { texture: a },
        data,
        { bytesPerRow: 16 * SIDE, rowsPerImage: SIDE },
        [SIDE, SIDE, layers],
      );
      const pipe = (code: string) =>
        device.createComputePipeline({
          layout: "auto",
          compute: { module: device.createShaderModule({ code }), entryPoint: "main" },
        });
      const p1 = pipe(copyShader(kind, layers)), p2 = pipe(loadShader(kind, layers));
      const view = (t: GPUTexture) => t.createView({ dimension: kind });
      const g1 = device.createBindGroup({
        layout: p1.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: view(a) },
          { binding: 1, resource: view(b) },
          { binding: 2, resource: { buffer: out1 } },
        ],
      });
      const g2 = device.createBindGroup({
        layout: p2.getBindGroupLayout(0),
        entries: [{ binding: 0, resource: view(b) }, { binding: 1, resource: { buffer: out2 } }],
      });
      const enc = device.createCommandEncoder();
      const pass = enc.beginComputePass();
      pass.setPipeline(p1);
      pass.setBindGroup(0, g1);
      pass.dispatchWorkgroups(1);
      pass.setPipeline(p2);
      pass.setBindGroup(0, g2);
      pass.dispatchWorkgroups(1);
      pass.end();
      device.queue.submit([enc.finish()]);
    });
    if (err) return `${kind} texture (${layers} layer(s)): ${err.split("\n")[0]}`;
    const [loaded, stored] = (await readBack(device, [out1, out2], 16 * n)).map((b) =>
      new Float32Array(b)
    );
    for (let i = 0; i < 4 * n; i++) {
      if (loaded[i] !== data[i] || stored[i] !== 2 * data[i]) {
        return `${kind} texture (${layers} layer(s)) returned wrong values ` +
          `(element ${i}: loaded ${loaded[i]}, stored ${stored[i]}, want ${data[i]}, ${
            2 * data[i]
          })`;
      }
    }
    return null;
  } finally {
    for (const m of made) m.destroy();
  }
}

async function probeTextures(device: GPUDevice): Promise<ProbeResult> {
  for (const { kind, layers } of KINDS) {
    const why = await probeTextureKind(device, kind, layers);
    if (why) return { ok: false, why };
  }
  return { ok: true };
}

/** Runs a one-binding kernel over `input` (as u32 words) and returns the words it left. */
async function runWords(
  device: GPUDevice,
  code: string,
  input: Uint32Array<ArrayBuffer> | Uint16Array<ArrayBuffer>,
): Promise<{ err: string | null; words: ArrayBuffer | null }> {
  const bytes = Math.max(4, input.byteLength);
  const buf = device.createBuffer({
    size: bytes,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
  });
  try {
    const err = await captured(device, () => {
      device.queue.writeBuffer(buf, 0, input);
      const p = device.createComputePipeline({
        layout: "auto",
        compute: { module: device.createShaderModule({ code }), entryPoint: "main" },
      });
      const g = device.createBindGroup({
        layout: p.getBindGroupLayout(0),
        entries: [{ binding: 0, resource: { buffer: buf } }],
      });
      const enc = device.createCommandEncoder();
      const pass = enc.beginComputePass();
      pass.setPipeline(p);
      pass.setBindGroup(0, g);
      pass.dispatchWorkgroups(1);
      pass.end();
      device.queue.submit([enc.finish()]);
    });
    if (err) return { err: err.split("\n")[0], words: null };
    return { err: null, words: (await readBack(device, [buf], bytes))[0] };
  } finally {
    buf.destroy();
  }
}

const STORAGE_SHADER = `
@group(0) @binding(0) var<storage, read_write> io: array<f32>;
@compute @workgroup_size(4)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  io[g.x] = io[g.x] * 3.0 - 0.5;
}`;

/** f32 arithmetic on a storage buffer: the floor every kernel path stands on. */
async function probeStorage(device: GPUDevice): Promise<ProbeResult> {
  // Exact results whether or not the compiler fuses the multiply-add.
  const input = new Float32Array([1.5, -2.25, 0.125, 4096]);
  const r = await runWords(device, STORAGE_SHADER, new Uint32Array(input.buffer));
  if (r.err) return { ok: false, why: `an f32 storage kernel failed: ${r.err}` };
  const got = new Float32Array(r.words!);
  for (let i = 0; i < 4; i++) {
    const want = Math.fround(Math.fround(input[i] * 3) - 0.5);
    if (got[i] !== want) {
      return { ok: false, why: `an f32 storage kernel computed ${got[i]} instead of ${want}` };
    }
  }
  return { ok: true };
}

/** Half-precision arithmetic on a storage buffer, checked against the exact half results. */
async function probeF16(device: GPUDevice): Promise<ProbeResult> {
  if (!device.features.has("shader-f16")) {
    return { ok: false, why: "the adapter has no 'shader-f16' feature" };
  }
  const r = await runWords(device, F16_SHADER, new Uint16Array(F16_INPUT));
  if (r.err) return { ok: false, why: `an f16 kernel failed: ${r.err}` };
  const got = new Uint16Array(r.words!);
  // x * 0.5 + 1.25 in half precision: 1.75, 0.25, 1.4166 (either rounding), 8.25
  const want = [[0x3f00], [0x3400], [0x3daa, 0x3dab], [0x4820]];
  for (let i = 0; i < 4; i++) {
    if (!want[i].includes(got[i])) {
      return {
        ok: false,
        why: `f16 arithmetic is wrong (lane ${i}: 0x${got[i].toString(16)}, want 0x${
          want[i][0].toString(16)
        })`,
      };
    }
  }
  return { ok: true };
}

/** Which kernel paths to switch off regardless of the probe (tests, or a user's workaround). */
export interface CapsOverrides {
  textureOperands?: boolean;
  f16?: boolean;
  /** Force the tiled kernels on (true) or off (false) whatever the adapter is. */
  tiledKernels?: boolean;
}

/**
 * Reads `REFLOW_GPU_PATHS` (comma list of `no-texture`, `no-f16`, `tiled`, `no-tiled`), the
 * environment switch that runs the storage-only kernel paths on any adapter, or forces the tiled
 * (GPU-shaped) kernels on or off; unknown words are an error naming them.
 */
export function overridesFromEnv(value: string | undefined): CapsOverrides {
  const o: CapsOverrides = {};
  for (const w of (value ?? "").split(",").map((s) => s.trim()).filter(Boolean)) {
    if (w === "no-texture") o.textureOperands = false;
    else if (w === "no-f16") o.f16 = false;
    else if (w === "tiled") o.tiledKernels = true;
    else if (w === "no-tiled") o.tiledKernels = false;
    else {
      throw new Error(
        `REFLOW_GPU_PATHS: unknown word '${w}' (expected a comma list of no-texture, no-f16, ` +
          `tiled, no-tiled)`,
      );
    }
  }
  return o;
}

/**
 * Runs the probes on `device` (a few tiny dispatches and read-backs); overrides switch paths off.
 * `fallback` is the adapter's `isFallbackAdapter`: the tiled kernels default to on elsewhere.
 */
export async function probeCapabilities(
  device: GPUDevice,
  overrides: CapsOverrides = {},
  fallback = false,
): Promise<GpuCaps> {
  const storage = await probeStorage(device);
  if (!storage.ok) {
    return {
      compute: false,
      textureProbe: false,
      textureOperands: false,
      f16: false,
      tiledKernels: false,
      missing: [
        `storage compute: ${storage.why}`,
      ],
    };
  }
  const missing: string[] = [];
  const tex = await probeTextures(device);
  if (!tex.ok) missing.push(`texture operands: ${tex.why}`);
  else if (overrides.textureOperands === false) missing.push("texture operands: switched off");
  const half = await probeF16(device);
  if (!half.ok) missing.push(`f16: ${half.why}`);
  else if (overrides.f16 === false) missing.push("f16: switched off");
  return {
    compute: true,
    textureProbe: tex.ok,
    textureOperands: tex.ok && overrides.textureOperands !== false,
    f16: half.ok && overrides.f16 !== false,
    tiledKernels: overrides.tiledKernels ?? !fallback,
    missing,
  };
}
