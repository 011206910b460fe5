/**
 * The web server of `deno task web` (Deno's built-in HTTP server): the page (index.html), its
 * script (core/web/page.ts bundled for the browser with `deno bundle` when the server starts), a
 * manifest of the model files, the configs and tokenizer files, and the weights as safetensors in
 * the dtype the page asks for (served_weights.ts). Only the files the manifest names are served.
 *
 * @module
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { findWeights } from "../models/diffusers_folder.ts";
import type { TimestepOrientation } from "../flow/time.ts";
import { servedLength, servedWeights } from "./served_weights.ts";
import type { WebManifest, WeightsEntry } from "./student.ts";

/** One component's files on disk. */
export interface ComponentFiles {
  config: string;
  weights: string;
}

/** The files the page needs, resolved from the command line's folders. */
export interface WebModels {
  student: string;
  teacher: string;
  unet: ComponentFiles;
  textEncoder: ComponentFiles;
  vae: ComponentFiles | null;
  tokenizer: { dir: string; files: string[] };
  /** Used when the student's weights carry no orientation metadata (the original's default). */
  orientation: TimestepOrientation;
}

/** Tokenizer files a page may need (see core/models/tokenizers/from_files.ts). */
const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "vocab.json",
  "merges.txt",
  "sentencepiece.bpe.model",
];

async function isFile(p: string): Promise<boolean> {
  return await Deno.stat(p).then((s) => s.isFile, () => false);
}

async function component(folder: string, what: string): Promise<ComponentFiles> {
  const config = join(folder, "config.json");
  if (!(await isFile(config))) throw new Error(`web: ${what}: no ${config}`);
  try {
    return { config, weights: await findWeights(folder) };
  } catch (e) {
    throw new Error(`web: ${what}: ${(e as Error).message}`);
  }
}

/**
 * Finds the student's UNet and the teacher's tokenizer, text encoder and VAE. `model` is a student
 * folder holding `unet/`, a diffusers UNet folder, or a weight file (then the teacher's
 * `unet/config.json` describes it), as the `sample` job's `sampling.ckpt_path`.
 */
export async function resolveWebModels(model: string, teacher: string): Promise<WebModels> {
  const st = await Deno.stat(model).catch(() => null);
  if (!st) throw new Error(`web: --model ${model} does not exist`);
  if (!(await Deno.stat(teacher).then((s) => s.isDirectory, () => false))) {
    throw new Error(`web: --teacher ${teacher} is not a folder`);
  }
  const teacherUnetConfig = join(teacher, "unet", "config.json");
  let unet: ComponentFiles;
  if (st.isDirectory) {
    const sub = join(model, "unet");
    const folder = (await isFile(join(sub, "config.json"))) ||
        (await Deno.stat(sub).then((s) => s.isDirectory, () => false))
      ? sub
      : model;
    const own = join(folder, "config.json");
    const config = (await isFile(own)) ? own : teacherUnetConfig;
    if (!(await isFile(config))) {
      throw new Error(`web: no UNet config.json in ${folder} or ${teacher}/unet`);
    }
    try {
      unet = { config, weights: await findWeights(folder) };
    } catch (e) {
      throw new Error(`web: --model: ${(e as Error).message}`);
    }
  } else {
    if (!(await isFile(teacherUnetConfig))) {
      throw new Error(
        `web: --model ${model} is a file, and the teacher has no ${teacherUnetConfig}`,
      );
    }
    unet = { config: teacherUnetConfig, weights: model };
  }
  const textEncoder = await component(join(teacher, "text_encoder"), "the teacher's text encoder");
  const vaeDir = join(teacher, "vae");
  const vae = (await isFile(join(vaeDir, "config.json")))
    ? await component(vaeDir, "the teacher's VAE")
    : null;
  const tokDir = join(teacher, "tokenizer");
  const files: string[] = [];
  for (const n of TOKENIZER_FILES) if (await isFile(join(tokDir, n))) files.push(n);
  if (!files.length) throw new Error(`web: the teacher has no tokenizer files in ${tokDir}`);
  return {
    student: model,
    teacher,
    unet,
    textEncoder,
    vae,
    tokenizer: { dir: tokDir, files },
    orientation: "original",
  };
}

/**
 * What in a bundle needs Deno or Node: imports of `node:` modules (esbuild leaves them as external
 * imports, which a browser cannot load), `require` calls and uses of the `Deno` namespace.
 */
export function browserBlockers(js: string): string[] {
  const found = new Set<string>();
  const patterns = [
    /\bfrom\s*["'](node:[\w/]+)["']/g,
    /\bimport\s*\(\s*["'](node:[\w/]+)["']/g,
    /\bimport\s*["'](node:[\w/]+)["']/g,
    /\brequire\s*\(\s*["']([^"']+)["']\s*\)/g,
    /\b(Deno\.\w+)/g,
  ];
  for (const re of patterns) for (const m of js.matchAll(re)) found.add(m[1]);
  return [...found].sort();
}

/** The page's script and its source map. */
export interface PageBundle {
  js: string;
  map: string;
}

/**
 * Bundles the page's script for the browser with `deno bundle` (esbuild inside Deno), minified
 * (comments, which may quote Deno code in examples, are dropped) with a linked source map. Fails
 * when something the page imports cannot run in a browser (a `node:` module, `require`, Deno APIs).
 */
export async function bundlePage(): Promise<PageBundle> {
  const entry = fileURLToPath(new URL("./page.ts", import.meta.url));
  const config = fileURLToPath(new URL("../../deno.json", import.meta.url));
  const dir = await Deno.makeTempDir({ prefix: "reflow-web-" });
  try {
    const out = join(dir, "app.js");
    const r = await new Deno.Command(Deno.execPath(), {
      args: [
        "bundle",
        "--quiet",
        "--config",
        config,
        "--platform",
        "browser",
        "--minify",
        "--sourcemap=linked",
        "-o",
        out,
        entry,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!r.success) {
      const err = new TextDecoder().decode(r.stderr).trim();
      throw new Error(`web: deno bundle of ${entry} failed:\n${err}`);
    }
    const js = await Deno.readTextFile(out);
    const blockers = browserBlockers(js);
    if (blockers.length) {
      throw new Error(
        `web: the page's bundle reaches code that cannot run in a browser: ${blockers.join(", ")}`,
      );
    }
    return { js, map: await Deno.readTextFile(`${out}.map`) };
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** A running server. */
export interface WebServer {
  /** The page's URL. */
  url: string;
  port: number;
  models: WebModels;
  /** The bundled script's length, bytes. */
  bundleBytes: number;
  close(): Promise<void>;
}

/** Settings of {@link startWebServer}. */
export interface WebServerOptions {
  model: string;
  teacher: string;
  /** 0: any free port. */
  port?: number;
  hostname?: string;
}

const INDEX_HTML = new URL("./index.html", import.meta.url);

async function weightsEntry(name: string, files: ComponentFiles): Promise<WeightsEntry> {
  return {
    config: `files/${name}/config.json`,
    weights: `weights/${name}`,
    bytes: {
      f16: await servedLength(files.weights, "F16"),
      f32: await servedLength(files.weights, "F32"),
    },
  };
}

/** The manifest the page reads first: where each component's config and weights are. */
async function webManifest(o: WebServerOptions, models: WebModels): Promise<WebManifest> {
  return {
    student: o.model,
    teacher: o.teacher,
    unet: await weightsEntry("unet", models.unet),
    textEncoder: await weightsEntry("text_encoder", models.textEncoder),
    vae: models.vae ? await weightsEntry("vae", models.vae) : null,
    tokenizer: { base: "files/tokenizer/", files: models.tokenizer.files },
    orientation: models.orientation,
  };
}

/** Every file path the server answers (configs, tokenizer files), and the file behind it. */
function servedFiles(
  models: WebModels,
  components: Record<string, ComponentFiles | null>,
): Map<string, string> {
  const files = new Map<string, string>();
  for (const [name, c] of Object.entries(components)) {
    if (c) files.set(`/files/${name}/config.json`, c.config);
  }
  for (const n of models.tokenizer.files) {
    files.set(`/files/tokenizer/${n}`, join(models.tokenizer.dir, n));
  }
  return files;
}

/** A small uncached response. */
function text(body: string, type: string, status = 200): Response {
  return new Response(body, {
    status,
    headers: { "content-type": type, "cache-control": "no-store" },
  });
}

/** A component's weights in the dtype the query asks for (f32 by default); HEAD: the length. */
async function weightsResponse(req: Request, url: URL, c: ComponentFiles): Promise<Response> {
  const d = url.searchParams.get("dtype") ?? "f32";
  if (d !== "f16" && d !== "f32") return text(`dtype must be f16 or f32\n`, "text/plain", 400);
  const dtype = d === "f16" ? "F16" : "F32";
  if (req.method === "HEAD") {
    const length = await servedLength(c.weights, dtype);
    return new Response(null, {
      headers: { "content-type": "application/octet-stream", "content-length": `${length}` },
    });
  }
  const { length, body } = await servedWeights(c.weights, dtype);
  return new Response(body, {
    headers: { "content-type": "application/octet-stream", "content-length": `${length}` },
  });
}

/** What the handler serves. */
interface Served {
  html: string;
  bundle: PageBundle;
  manifest: WebManifest;
  files: Map<string, string>;
  components: Record<string, ComponentFiles | null>;
}

/** The request handler: the page, its script, the manifest, and the files the manifest names. */
function makeHandler(s: Served): (req: Request) => Promise<Response> {
  return async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    if (req.method !== "GET" && req.method !== "HEAD") {
      return text("method not allowed\n", "text/plain", 405);
    }
    const p = url.pathname;
    if (p === "/" || p === "/index.html") return text(s.html, "text/html; charset=utf-8");
    if (p === "/app.js") return text(s.bundle.js, "text/javascript; charset=utf-8");
    if (p === "/app.js.map") return text(s.bundle.map, "application/json");
    if (p === "/manifest.json") return text(JSON.stringify(s.manifest), "application/json");
    const file = s.files.get(p);
    if (file) {
      const body = await Deno.readFile(file);
      return new Response(body, {
        headers: { "content-type": "application/octet-stream", "content-length": `${body.length}` },
      });
    }
    const m = /^\/weights\/(unet|text_encoder|vae)$/.exec(p);
    const c = m ? s.components[m[1]] : null;
    if (c) return await weightsResponse(req, url, c);
    return text("not found\n", "text/plain", 404);
  };
}

/** Starts the server; the page is at the returned `url`. */
export async function startWebServer(o: WebServerOptions): Promise<WebServer> {
  const models = await resolveWebModels(o.model, o.teacher);
  const [bundle, html] = await Promise.all([bundlePage(), Deno.readTextFile(INDEX_HTML)]);
  const manifest = await webManifest(o, models);
  const components: Record<string, ComponentFiles | null> = {
    unet: models.unet,
    text_encoder: models.textEncoder,
    vae: models.vae,
  };
  const files = servedFiles(models, components);
  const handler = makeHandler({ html, bundle, manifest, files, components });

  let ready!: (a: Deno.NetAddr) => void;
  const listening = new Promise<Deno.NetAddr>((r) => ready = r);
  const server = Deno.serve({
    port: o.port ?? 8000,
    hostname: o.hostname ?? "127.0.0.1",
    onListen: (addr) => ready(addr as Deno.NetAddr),
    onError: (e) => {
      const msg = (e as Error).message ?? String(e);
      console.error(`web: ${msg}`);
      return text(`${msg}\n`, "text/plain", 500);
    },
  }, handler);
  const addr = await listening;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return {
    url: `http://${host}:${addr.port}/`,
    port: addr.port,
    models,
    bundleBytes: new TextEncoder().encode(bundle.js).length,
    close: () => server.shutdown(),
  };
}
