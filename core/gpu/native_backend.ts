/**
 * Which of wgpu's backends a Deno process starts. Deno's default on Linux starts Vulkan *and* GL in
 * every isolate that asks for an adapter; the GL one loads EGL and libglvnd, whose per-thread state
 * is freed both by a finishing thread and by the library's teardown at process exit. When the two
 * meet (a `deno test` worker thread ending while the process exits) glibc aborts with "double free
 * or corruption" / "corrupted size vs. prev_size" after every test passed (2-3 % of processes here).
 * Vulkan serves every adapter this project supports, so GL is started only when asked for.
 *
 * @module
 */

/** The environment variable Deno reads (at each isolate's first `requestAdapter`) for backends. */
export const BACKEND_VAR = "DENO_WEBGPU_BACKEND";

interface DenoEnv {
  env: { get(k: string): string | undefined; set(k: string, v: string): void };
  build: { os: string };
}

/**
 * On Linux, restricts wgpu to Vulkan unless `DENO_WEBGPU_BACKEND` already names backends
 * (`DENO_WEBGPU_BACKEND=gl` still selects the GL adapter). Returns the backend list in force, or
 * null where Deno's default applies (other systems, a browser, no permission to set variables).
 */
export function preferVulkan(deno = (globalThis as { Deno?: DenoEnv }).Deno): string | null {
  if (!deno) return null;
  let forced: string | undefined;
  try {
    forced = deno.env.get(BACKEND_VAR);
    if (forced) return forced;
    if (deno.build.os !== "linux") return null;
    deno.env.set(BACKEND_VAR, "vulkan");
    return "vulkan";
  } catch (e) {
    // Without --allow-env Deno's default (Vulkan and GL) stays; the kernels still run correctly.
    if (e instanceof Error && e.name === "NotCapable") return null;
    throw e;
  }
}
