/**
 * The compute core on weaker adapters: the kernel tests run again in child processes, once with
 * the texture and f16 paths switched off (REFLOW_GPU_PATHS) and, where Mesa's OpenGL driver is
 * installed, on wgpu's real GL adapter (DENO_WEBGPU_BACKEND=gl), which fails the texture probe.
 * Tests that need a missing path are reported as ignored there; every other one must pass.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

async function run(args: string[], env: Record<string, string>) {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    env: { ...env, NO_COLOR: "1" },
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { code: out.code, text };
}

/** Runs `files` under deno test with `env`; asserts they pass and returns the counts. */
async function kernelTests(files: string[], env: Record<string, string>) {
  const { code, text } = await run(["test", "-A", "--no-check=remote", ...files], env);
  // deno test's closing line: "ok | 253 passed | 0 failed | 110 ignored (35s)".
  const m = text.match(/(\d+) passed \| (\d+) failed(?: \| (\d+) ignored)?/);
  const failed = text.split("\n").filter((l) => / FAILED /.test(l)).slice(0, 20);
  assert.ok(m, `no test summary in the child's output:\n${text.slice(-3000)}`);
  if (env === GL && code === 134 && m[2] === "0" && EXIT_RACE.test(text.slice(m.index))) {
    // wgpu's GL backend (EGL + libglvnd) can abort at exit when a deno test worker thread ends
    // during the process's exit; the reason Gpu.open() keeps Deno processes on Vulkan. The
    // tests themselves all ran and passed, which is what this test is about.
    console.warn("GL child aborted at exit after all its tests passed (libglvnd exit race)");
  } else {
    assert.equal(code, 0, `tests failed under ${JSON.stringify(env)}:\n${failed.join("\n")}`);
  }
  return { passed: Number(m[1]), ignored: Number(m[3] ?? 0) };
}

const GL = { DENO_WEBGPU_BACKEND: "gl" };
/** glibc's messages for the heap corruption of the GL backend's exit race (core/gpu/native_backend.ts). */
const EXIT_RACE = /double free or corruption|corrupted size vs\. prev_size|free\(\): invalid/;
/** What the set-up's adapter check says of the GL adapter, or null where there is none. */
const glAdapter = await (async () => {
  const { code, text } = await run(["run", "-A", "scripts/check_adapter.ts", "--json"], GL);
  const line = text.split("\n").find((l) => l.startsWith("{"));
  return code === 3 || !line ? null : JSON.parse(line);
})();

Deno.test("downlevel: kernel tests pass with the texture and f16 paths switched off", async () => {
  const r = await kernelTests(["tests/kernels", "tests/gpu/capabilities_test.ts"], {
    REFLOW_GPU_PATHS: "no-texture,no-f16",
  });
  console.log(`storage-only paths: ${r.passed} passed, ${r.ignored} ignored`);
  assert.ok(r.passed >= 200, `only ${r.passed} kernel tests ran`);
  assert.ok(r.ignored > 0, "no test was ignored although two paths were off");
});

Deno.test({
  name: "downlevel: the GL adapter is recognised by what it can do and runs the storage kernels",
  ignore: glAdapter === null,
  async fn() {
    assert.equal(glAdapter.paths.texture, false, `GL adapter: ${JSON.stringify(glAdapter)}`);
    assert.match(glAdapter.missing.join(";"), /texture operands: /);
    // The set-up requires both paths: the GL adapter must fail that check.
    const strict = await run(["run", "-A", "scripts/check_adapter.ts", "--require", "texture"], GL);
    assert.equal(strict.code, 2, strict.text);
    // A cross-section of the kernels (the whole set takes many minutes on wgpu's GL backend) and
    // the golden UNet forward.
    const r = await kernelTests([
      "tests/kernels/matmul_test.ts",
      "tests/kernels/conv2d_test.ts",
      "tests/kernels/group_norm_test.ts",
      "tests/kernels/reduce_test.ts",
      "tests/kernels/softmax_test.ts",
      "tests/kernels/strided_copy_test.ts",
      "tests/gpu/capabilities_test.ts",
    ], GL);
    console.log(`GL adapter (${glAdapter.description}): ${r.passed} passed, ${r.ignored} ignored`);
    assert.ok(r.passed >= 60, `only ${r.passed} tests ran on the GL adapter`);
  },
});

if (glAdapter === null) {
  console.warn("downlevel: no GL adapter here (Mesa's libgl1-mesa-dri absent); GL test ignored");
}
