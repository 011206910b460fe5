/**
 * Loading a student and its teacher's caption encoder (and VAE, where the teacher has one) from the
 * web server of `deno task web` (server.ts): a manifest names the files, configs and tokenizer files
 * are fetched whole, weights are streamed as safetensors into the GPU in pieces (weight_stream.ts,
 * stream_loader.ts). Uses only `fetch` and WebGPU, so it runs in a browser and in Deno alike.
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";
import { markParameter, type Module } from "../nn/module.ts";
import { keep } from "../tensor/scope.ts";
import { Tensor } from "../tensor/tensor.ts";
import { UNet2DConditionModel } from "../models/unet2d_condition.ts";
import { createTextEncoder, IGNORED_TEXT_KEYS, type TextEncoder } from "../models/text_encoders.ts";
import { AutoencoderKL, renameLegacyVaeKey } from "../models/autoencoder_kl.ts";
import type { TokenizerFiles } from "../models/tokenizers/files.ts";
import { loadTokenizerFrom } from "../models/tokenizers/from_files.ts";
import type { TimestepOrientation } from "../flow/time.ts";
import { SafetensorsStream } from "./weight_stream.ts";
import {
  loadModuleFromStream,
  type StreamLoadOptions,
  type StreamLoadReport,
} from "./stream_loader.ts";
import type { Student } from "./draw.ts";

/** The safetensors metadata key naming a checkpoint's timestep orientation. */
export const ORIENTATION_KEY = "timestep_orientation";

/** One weight file as the server offers it. */
export interface WeightsEntry {
  /** URL of the component's config.json. */
  config: string;
  /** URL of its weights as safetensors; add `?dtype=f16` or `?dtype=f32`. */
  weights: string;
  /** Length of the weights file served as f16 and as f32, bytes. */
  bytes: { f16: number; f32: number };
}

/** What the server offers (GET /manifest.json). */
export interface WebManifest {
  /** The student's folder and the teacher's, as given on the command line. */
  student: string;
  teacher: string;
  unet: WeightsEntry;
  textEncoder: WeightsEntry;
  vae: WeightsEntry | null;
  /** The tokenizer folder's URL (ends with "/") and the names of the files it holds. */
  tokenizer: { base: string; files: string[] };
  /** The orientation to use when the weights' metadata names none. */
  orientation: TimestepOrientation;
}

/** Settings of {@link loadWebStudent}. */
export interface WebLoadOptions {
  /** Storage of the UNet's weights: "f16" needs shader-f16 (default: f16 where the adapter has it). */
  dtype?: "f16" | "f32";
  /** Progress: bytes of weights received so far and the total. */
  onProgress?: (received: number, total: number, what: string) => void;
  /** Largest piece held in host memory while streaming (default weight_stream's PIECE_CAP). */
  pieceCap?: number;
  /** fetch to use (default globalThis.fetch). */
  fetch?: typeof fetch;
}

/** A loaded student, with what was loaded how. */
export interface WebStudent extends Student {
  manifest: WebManifest;
  dtype: "f16" | "f32";
  /** Weight bytes downloaded. */
  downloaded: number;
  /** Piece size used for the uploads, bytes. */
  pieceBytes: number;
  /** Where the orientation came from. */
  orientationSource: "weights metadata" | "server default";
  dispose(): void;
}

async function getOk(f: typeof fetch, url: string): Promise<Response> {
  const res = await f(url);
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`${url}: HTTP ${res.status} ${res.statusText}`);
  }
  return res;
}

async function getJson(f: typeof fetch, url: string): Promise<Record<string, unknown>> {
  const text = await (await getOk(f, url)).text();
  try {
    const v = JSON.parse(text);
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("not an object");
    return v;
  } catch (e) {
    throw new Error(`${url} is not a JSON object: ${(e as Error).message}`);
  }
}

/** The tokenizer folder on the server: files the manifest lists, fetched when read. */
export function urlFiles(
  base: string,
  names: readonly string[],
  f: typeof fetch = fetch,
): TokenizerFiles {
  const known = new Set(names);
  return {
    where: base.replace(/\/$/, ""),
    path: (name) => base + name,
    read: async (name) => {
      if (!known.has(name)) return null;
      return new Uint8Array(await (await getOk(f, base + name)).arrayBuffer());
    },
  };
}

/**
 * Swaps every parameter for an uninitialised f16 one of its shape, for weights about to be streamed
 * in (every key must come from the file: missing keys are errors). Unlike a cast, nothing is
 * computed, and the f32 buffers are freed as the swap goes, so an SD-1.x UNet (3.4 GB in f32)
 * never needs its f32 and f16 copies at once.
 */
export function emptyF16(gpu: Gpu, module: Module): void {
  // Work already recorded may still read pooled buffers: submit it before destroying any.
  gpu.flush();
  let freed = 0;
  module.mapParameters((_, p) => {
    const q = markParameter(keep(Tensor.empty(gpu, p.shape, "f16")));
    freed += p.bytes;
    p.dispose();
    // Destroy what the pool holds now and then (f16 buffers reuse some of the f32 size classes).
    if (freed > 256 << 20) {
      gpu.pool.trim();
      freed = 0;
    }
    return q;
  });
  gpu.pool.trim();
}

/** Resolves `url` against `base` (absolute URLs pass through). */
function resolve(url: string, base: string): string {
  return new URL(url, base).href;
}

/**
 * Streams the weight files of one manifest into modules, one after the other, counting the bytes
 * received for a progress display over all of them.
 */
class ManifestStreamer {
  /** Bytes received so far (every file streamed). */
  received = 0;
  /** Piece size of the last upload, bytes. */
  pieceBytes = 0;
  /** Modules made so far, released together when a load fails. */
  readonly modules: Module[] = [];

  constructor(
    private readonly gpu: Gpu,
    private readonly manifestUrl: string,
    private readonly dtype: "f16" | "f32",
    private readonly total: number,
    private readonly opts: WebLoadOptions,
    private readonly f: typeof fetch,
  ) {}

  /** A component's config.json. */
  config(e: WeightsEntry): Promise<Record<string, unknown>> {
    return getJson(this.f, resolve(e.config, this.manifestUrl));
  }

  /** Streams `entry`'s weights into `module`. */
  async stream(
    what: string,
    entry: WeightsEntry,
    module: Module,
    load: StreamLoadOptions,
  ): Promise<StreamLoadReport> {
    const url = `${resolve(entry.weights, this.manifestUrl)}?dtype=${this.dtype}`;
    const res = await getOk(this.f, url);
    if (!res.body) throw new Error(`${url}: empty response`);
    const start = this.received;
    const st = new SafetensorsStream(
      res.body,
      url,
      (n) => this.opts.onProgress?.(start + n, this.total, what),
    );
    const r = await loadModuleFromStream(this.gpu, module, st, {
      ...load,
      pieceCap: this.opts.pieceCap,
    });
    this.pieceBytes = r.pieceBytes;
    this.received += st.consumed;
    return r;
  }
}

/** The text encoder, f32 storage; keys it has no use for must be ones it is known to skip. */
async function streamTextEncoder(
  gpu: Gpu,
  m: WebManifest,
  manifestUrl: string,
  s: ManifestStreamer,
): Promise<TextEncoder> {
  const teCfgUrl = resolve(m.textEncoder.config, manifestUrl);
  const textEncoder = createTextEncoder(gpu, await s.config(m.textEncoder), teCfgUrl);
  s.modules.push(textEncoder);
  textEncoder.requiresGrad(false);
  // Buffers (position_ids) and unused heads (pooler) are in the file but not parameters.
  const te = await s.stream("text encoder", m.textEncoder, textEncoder, { allowUnexpected: true });
  const bad = te.unexpected.filter((k) => !IGNORED_TEXT_KEYS(k));
  if (bad.length) {
    throw new Error(
      `${m.textEncoder.weights}: unexpected keys the text encoder does not have: ` +
        bad.slice(0, 10).join(", "),
    );
  }
  return textEncoder;
}

/** The student UNet, and the timestep orientation its weights' metadata names (if any). */
async function streamUnet(
  gpu: Gpu,
  m: WebManifest,
  dtype: "f16" | "f32",
  s: ManifestStreamer,
): Promise<{ unet: UNet2DConditionModel; fromMeta: TimestepOrientation | undefined }> {
  const unet = UNet2DConditionModel.create(gpu, await s.config(m.unet));
  s.modules.push(unet);
  unet.requiresGrad(false);
  if (dtype === "f16") emptyF16(gpu, unet);
  const { metadata } = await s.stream("student UNet", m.unet, unet, {});
  const fromMeta = metadata[ORIENTATION_KEY];
  if (fromMeta !== undefined && fromMeta !== "original" && fromMeta !== "pretrained") {
    throw new Error(
      `${m.unet.weights}: metadata ${ORIENTATION_KEY} = "${fromMeta}" is not "original" or "pretrained"`,
    );
  }
  return { unet, fromMeta: fromMeta as TimestepOrientation | undefined };
}

/**
 * Loads the student the server at `manifestUrl` offers: tokenizer, text encoder (f32 storage),
 * UNet (f16 storage where asked for), VAE (f32) if the teacher has one.
 */
export async function loadWebStudent(
  gpu: Gpu,
  manifestUrl: string,
  opts: WebLoadOptions = {},
): Promise<WebStudent> {
  const f = opts.fetch ?? fetch;
  const m = await getJson(f, manifestUrl) as unknown as WebManifest;
  const dtype = opts.dtype ?? (gpu.hasF16 ? "f16" : "f32");
  if (dtype === "f16" && !gpu.hasF16) {
    throw new Error("weights: f16 storage needs the adapter feature 'shader-f16'");
  }
  const parts = [m.unet, m.textEncoder, ...(m.vae ? [m.vae] : [])];
  const total = parts.reduce((s, p) => s + p.bytes[dtype], 0);
  const s = new ManifestStreamer(gpu, manifestUrl, dtype, total, opts, f);
  const modules = s.modules;
  try {
    const tokBase = resolve(m.tokenizer.base, manifestUrl);
    const tokenizer = await loadTokenizerFrom(urlFiles(tokBase, m.tokenizer.files, f));
    const textEncoder = await streamTextEncoder(gpu, m, manifestUrl, s);
    const { unet, fromMeta } = await streamUnet(gpu, m, dtype, s);
    let vae: AutoencoderKL | null = null;
    if (m.vae) {
      vae = AutoencoderKL.create(gpu, await s.config(m.vae));
      modules.push(vae);
      vae.requiresGrad(false);
      await s.stream("VAE", m.vae, vae, { renameKey: renameLegacyVaeKey });
    }
    const c = unet.config;
    const side = c.sample_size;
    if (side === null) throw new Error(`${m.unet.config}: sample_size is not set`);
    return {
      gpu,
      tokenizer,
      textEncoder,
      unet,
      vae,
      orientation: fromMeta ?? m.orientation,
      orientationSource: fromMeta ? "weights metadata" : "server default",
      shape: [c.in_channels, side, side],
      manifest: m,
      dtype,
      downloaded: s.received,
      pieceBytes: s.pieceBytes,
      dispose: () => modules.forEach((x) => x.dispose()),
    };
  } catch (e) {
    modules.forEach((x) => x.dispose());
    throw e;
  }
}
