/** The sample job's host-side helpers: seeded noise, the identity codec, checkpoint key prefixes. */
import assert from "node:assert/strict";
import { identityDecode, LATENT_SCALE } from "../../core/flow/images.ts";
import { seededNoise } from "../../core/sample/sample_setup.ts";
import { philoxNormal } from "../../core/tensor/philox.ts";
import { wrapperPrefixes } from "../../core/sample/score_model.ts";

Deno.test("seededNoise: sample i draws philoxNormal(seed, i*n, n) * scale, whatever the batch", () => {
  const n = 16;
  const all = seededNoise(7, 0, 3, n, 2);
  const third = seededNoise(7, 2, 1, n, 2);
  assert.deepEqual(all.subarray(2 * n), third);
  const ref = philoxNormal(7, 2 * n, n);
  for (let j = 0; j < n; j++) assert.equal(third[j], Math.fround(ref[j] * 2));
});

Deno.test("identity codec: clamp(z / 0.18215 / 2 + 0.5), all of 1/3/4 channels kept", () => {
  const z = Float32Array.from([0, 0.1, -0.1, 1, 0.05, -0.05, 0.02, 0.3]);
  const [img] = identityDecode(z, 1, 4, 1, 2);
  assert.equal(img.channels, 4);
  const want = Array.from(z, (v) => Math.min(1, Math.max(0, v / LATENT_SCALE / 2 + 0.5)));
  want.forEach((w, j) => assert.ok(Math.abs(img.data[j] - w) < 1e-6));
  assert.equal(identityDecode(new Float32Array(5 * 4), 1, 5, 2, 2)[0].channels, 3);
});

Deno.test("wrapperPrefixes strips module./_orig_mod. only when no key matches as is", () => {
  const own = new Set(["conv_in.weight", "conv_in.bias"]);
  assert.deepEqual(wrapperPrefixes(["module.conv_in.weight", "module.conv_in.bias"], own), [
    "module.",
  ]);
  assert.deepEqual(
    wrapperPrefixes(["module._orig_mod.conv_in.weight"], own),
    ["module.", "_orig_mod."],
  );
  assert.deepEqual(wrapperPrefixes(["conv_in.weight", "module.x"], own), []);
  assert.deepEqual(wrapperPrefixes(["model.conv_in.weight"], own), []);
});
