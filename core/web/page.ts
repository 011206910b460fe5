/// <reference lib="dom" />
/**
 * The page of `deno task web` (bundled for the browser by server.ts): opens WebGPU, streams the
 * student's weights with a progress bar, and draws the caption's picture on the canvas with the
 * chosen steps and seed, showing the time per image and the adapter.
 *
 * State for tests and scripts: `document.body.dataset.state` is "starting", "loading", "compiling",
 * "ready", "drawing", "drawn", "no-webgpu" or "error"; after a drawing, `globalThis.reflowLast` holds its
 * caption, steps, seed, latents, time and dtype. `?dtype=f32` (or f16) in the URL picks the weights'
 * storage instead of the default (f16 where the adapter has shader-f16); `?paths=no-texture` runs
 * the storage-buffer kernels only (the words of REFLOW_GPU_PATHS).
 *
 * @module
 */

// Types only: the code is imported after the WebGPU check, because the library reads WebGPU's
// globals (GPUBufferUsage) when it loads, which a browser without WebGPU does not have.
import type { Gpu } from "../gpu/device.ts";
import type { Picture } from "./draw.ts";
import type { WebStudent } from "./student.ts";

/** What the last drawing left for scripts (tests read it through the DevTools protocol). */
export interface LastDrawing {
  caption: string;
  steps: number;
  seed: number;
  latents: number[];
  seconds: number;
  nfe: number;
  dtype: "f16" | "f32";
  adapter: string;
}

const $ = <T extends HTMLElement>(id: string): T => {
  const e = document.getElementById(id);
  if (!e) throw new Error(`page: no element #${id}`);
  return e as T;
};

function setState(s: string): void {
  document.body.dataset.state = s;
}

function message(text: string, kind: "error" | "note" = "error"): void {
  const m = $("message");
  m.textContent = text;
  m.className = kind;
}

const mb = (b: number) => `${(b / 1e6).toFixed(b < 1e7 ? 2 : 0)} MB`;

/** The adapter in words: Chrome reports vendor and architecture, often no description. */
function adapterName(gpu: Gpu): string {
  const i = gpu.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const name = [i.vendor, i.architecture, i.device, i.description].filter((x) => x).join(" ");
  const parts = [name || "unknown adapter"];
  if (i.isFallbackAdapter) parts.push("(software fallback adapter)");
  parts.push(gpu.hasF16 ? "· shader-f16" : "· no shader-f16");
  return parts.join(" ");
}

/** Paints a [C, H, W] picture in [0, 1] on the canvas (pixels kept square and sharp). */
function paint(canvas: HTMLCanvasElement, p: Picture): void {
  canvas.width = p.width;
  canvas.height = p.height;
  const ctx = canvas.getContext("2d");
  if (!ctx) throw new Error("page: no 2d canvas context");
  const img = ctx.createImageData(p.width, p.height);
  const plane = p.width * p.height;
  for (let j = 0; j < plane; j++) {
    for (let c = 0; c < 3; c++) {
      const src = p.channels >= 3 ? c : 0;
      img.data[4 * j + c] = Math.round(255 * p.data[src * plane + j]);
    }
    img.data[4 * j + 3] = p.channels === 4 ? Math.round(255 * p.data[3 * plane + j]) : 255;
  }
  ctx.putImageData(img, 0, 0);
}

/** The library's modules, imported once WebGPU is known to be there (see the imports' note). */
async function importLibrary() {
  const [{ Gpu }, { overridesFromEnv }, { drawPicture }, { loadWebStudent }] = await Promise.all([
    import("../gpu/device.ts"),
    import("../gpu/capabilities.ts"),
    import("./draw.ts"),
    import("./student.ts"),
  ]);
  return { Gpu, overridesFromEnv, drawPicture, loadWebStudent };
}

type Library = Awaited<ReturnType<typeof importLibrary>>;

/** Fills the form's caption, steps and seed from the URL's parameters of those names. */
function fillFormFromUrl(params: URLSearchParams): void {
  for (const id of ["caption", "steps", "seed"]) {
    const v = params.get(id);
    if (v !== null) $<HTMLInputElement>(id).value = v;
  }
}

/** Whether this browser offers WebGPU with an adapter; says why not on the page otherwise. */
async function checkWebGpu(): Promise<boolean> {
  if (!("gpu" in navigator) || !navigator.gpu) {
    setState("no-webgpu");
    message(
      "This browser has no WebGPU (navigator.gpu is missing), so the student cannot run here. " +
        "Use a browser with WebGPU — Chrome or Edge 113 or newer, Safari 26, Firefox 141 on " +
        "Windows — and open the page from http://localhost or https (WebGPU needs a secure " +
        "context). On Linux, Chrome may need chrome://flags/#enable-unsafe-webgpu.",
    );
    return false;
  }
  // Browsers that have the API but no adapter (Linux Chrome without its WebGPU flag, a blocked
  // GPU) get told so before the library's driver advice, which is about machines, not browsers.
  const probe = await navigator.gpu.requestAdapter().catch(() => null);
  if (!probe) {
    setState("no-webgpu");
    message(
      "This browser has WebGPU but offers no adapter, so the student cannot run here. Update " +
        "the browser and the graphics driver; on Linux, Chrome may need " +
        "chrome://flags/#enable-unsafe-webgpu (or --enable-unsafe-webgpu).",
    );
    return false;
  }
  return true;
}

/** Opens the library's device (null once the page says why it cannot). */
async function openGpu(lib: Library, params: URLSearchParams): Promise<Gpu | null> {
  try {
    // `?paths=no-texture` (the words of REFLOW_GPU_PATHS) switches kernel paths off, as in Deno.
    return await lib.Gpu.open({ paths: lib.overridesFromEnv(params.get("paths") ?? undefined) });
  } catch (e) {
    setState("error");
    message(`WebGPU is there but gave no usable adapter: ${(e as Error).message}`);
    return null;
  }
}

/** Streams the student in the dtype asked for, with the progress bar (null after an error). */
async function loadStudent(
  lib: Library,
  gpu: Gpu,
  params: URLSearchParams,
): Promise<WebStudent | null> {
  const asked = params.get("dtype");
  const dtype = asked === "f16" || asked === "f32" ? asked : gpu.hasF16 ? "f16" : "f32";
  setState("loading");
  const progress = $<HTMLProgressElement>("progress");
  const progressText = $("progress-text");
  try {
    return await lib.loadWebStudent(gpu, new URL("manifest.json", location.href).href, {
      dtype,
      onProgress: (got, total, what) => {
        progress.max = total;
        progress.value = got;
        progressText.textContent = `${what}: ${mb(got)} of ${mb(total)}`;
      },
    });
  } catch (e) {
    setState("error");
    message(`Loading the model failed: ${(e as Error).message}`);
    return null;
  }
}

/**
 * One drawing compiles every kernel (tens of seconds on a software adapter), so that the times
 * shown afterwards are drawing times. False after an error.
 */
async function compileKernels(lib: Library, student: WebStudent): Promise<boolean> {
  const progressText = $("progress-text");
  progressText.textContent = `weights loaded: ${mb(student.downloaded)}; compiling the kernels…`;
  setState("compiling");
  const t0 = performance.now();
  try {
    await lib.drawPicture(student, "", 1, 0);
  } catch (e) {
    setState("error");
    message(`The first run of the model failed: ${(e as Error).message}`);
    return false;
  }
  progressText.textContent = `weights loaded: ${mb(student.downloaded)}; kernels compiled in ` +
    `${((performance.now() - t0) / 1000).toFixed(1)} s`;
  return true;
}

/** Shows which model was loaded, how. */
function showModel(student: WebStudent): void {
  const m = student.manifest;
  $("model").textContent = `${m.student} (caption encoder of ${m.teacher})`;
  $("weights").textContent = `${student.dtype} storage · ${mb(student.downloaded)} streamed in ` +
    `pieces of at most ${mb(student.pieceBytes)} · timestep orientation ${student.orientation}`;
}

/** Enables the form: each submit draws the caption and leaves the drawing in `reflowLast`. */
function enableDrawing(lib: Library, student: WebStudent, adapter: string): void {
  const button = $<HTMLButtonElement>("draw");
  const canvas = $<HTMLCanvasElement>("canvas");
  button.disabled = false;
  setState("ready");
  $<HTMLFormElement>("form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const caption = $<HTMLInputElement>("caption").value;
    const steps = Number($<HTMLSelectElement>("steps").value);
    const seed = Number($<HTMLInputElement>("seed").value);
    button.disabled = true;
    setState("drawing");
    message("");
    try {
      const d = await lib.drawPicture(student, caption, steps, seed);
      paint(canvas, d.picture);
      const ms = d.seconds * 1000;
      $("time").textContent = `${ms.toFixed(ms < 100 ? 1 : 0)} ms (${steps} Euler step${
        steps > 1 ? "s" : ""
      })`;
      const last: LastDrawing = {
        caption,
        steps,
        seed,
        latents: Array.from(d.latents),
        seconds: d.seconds,
        nfe: d.nfe,
        dtype: student.dtype,
        adapter,
      };
      (globalThis as { reflowLast?: LastDrawing }).reflowLast = last;
      setState("drawn");
    } catch (e) {
      setState("error");
      message(`Drawing failed: ${(e as Error).message}`);
    } finally {
      button.disabled = false;
    }
  });
}

async function main(): Promise<void> {
  setState("starting");
  const params = new URLSearchParams(location.search);
  fillFormFromUrl(params);
  if (!(await checkWebGpu())) return;
  const lib = await importLibrary();
  const gpu = await openGpu(lib, params);
  if (!gpu) return;
  const adapter = adapterName(gpu);
  $("adapter").textContent = adapter;
  const student = await loadStudent(lib, gpu, params);
  if (!student) return;
  if (!(await compileKernels(lib, student))) return;
  showModel(student);
  enableDrawing(lib, student, adapter);
}

main().catch((e) => {
  setState("error");
  message(`The page failed: ${(e as Error).message}`);
});
