import assert from "node:assert/strict";
import { BACKEND_VAR, preferVulkan } from "../../core/gpu/native_backend.ts";
import { testGpu } from "../helpers/gpu.ts";

function fakeDeno(os: string, vars: Record<string, string>, canSet = true) {
  return {
    build: { os },
    env: {
      get: (k: string) => vars[k],
      set: (k: string, v: string) => {
        if (!canSet) throw Object.assign(new Error("Requires env access"), { name: "NotCapable" });
        vars[k] = v;
      },
    },
  };
}

Deno.test("preferVulkan: Linux gets Vulkan only; a chosen backend and other systems are kept", () => {
  const linux: Record<string, string> = {};
  assert.equal(preferVulkan(fakeDeno("linux", linux)), "vulkan");
  assert.equal(linux[BACKEND_VAR], "vulkan");
  const gl: Record<string, string> = { [BACKEND_VAR]: "gl" };
  assert.equal(preferVulkan(fakeDeno("linux", gl)), "gl");
  assert.equal(gl[BACKEND_VAR], "gl");
  const mac: Record<string, string> = {};
  assert.equal(preferVulkan(fakeDeno("darwin", mac)), null);
  assert.equal(mac[BACKEND_VAR], undefined);
  assert.equal(preferVulkan(fakeDeno("linux", {}, false)), null);
});

Deno.test({
  name: "an opened GPU leaves wgpu's GL backend (EGL, libglvnd) unloaded: no abort at exit",
  ignore: Deno.build.os !== "linux" || Deno.env.get(BACKEND_VAR) !== undefined &&
      Deno.env.get(BACKEND_VAR) !== "vulkan",
  async fn() {
    const gpu = await testGpu();
    assert.equal(Deno.env.get(BACKEND_VAR), "vulkan");
    assert.match(gpu.summary(), /vulkan/);
    const maps = await Deno.readTextFile("/proc/self/maps");
    const gl = [...new Set(maps.match(/[^\s/]*(libEGL|libGLdispatch|swrast_dri)[^\s/]*/g) ?? [])];
    assert.deepEqual(gl, [], `GL libraries loaded into the test process: ${gl.join(", ")}`);
  },
});
