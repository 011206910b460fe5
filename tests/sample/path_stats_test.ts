/** Straightness and per-sample distance of sampled paths (host only, no GPU). */
import assert from "node:assert/strict";
import { PathStats, perSampleMse } from "../../core/flow/straightness.ts";
import { identityDecode, LATENT_SCALE } from "../../core/flow/images.ts";
import { seededNoise } from "../../core/sample/sample_setup.ts";
import { philoxNormal } from "../../core/tensor/philox.ts";
import { wrapperPrefixes } from "../../core/sample/score_model.ts";

function rand(n: number, seed: number): Float64Array {
  let s = seed >>> 0;
  return Float64Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  });
}

Deno.test("PathStats: straightness equals the direct mean over evaluations of |d - v|^2", () => {
  const B = 3, n = 5, K = 4;
  const vs = Array.from({ length: K }, (_, k) => rand(B * n, 10 + k));
  const x0 = rand(B * n, 1), x1 = rand(B * n, 2);
  const st = new PathStats(B, n);
  for (const v of vs) st.add(v);
  assert.equal(st.evaluations, K);
  const got = st.straightness(x0, x1);
  for (let b = 0; b < B; b++) {
    let want = 0;
    for (const v of vs) {
      let acc = 0;
      for (let j = b * n; j < (b + 1) * n; j++) acc += (x1[j] - x0[j] - v[j]) ** 2;
      want += acc / n;
    }
    want /= K;
    assert.ok(
      Math.abs(got[b] - want) < 1e-12 * Math.max(1, want),
      `sample ${b}: ${got[b]} vs ${want}`,
    );
  }
});

Deno.test("PathStats: a straight constant-speed path has straightness 0", () => {
  const B = 2, n = 6;
  const v = rand(B * n, 3);
  const x0 = rand(B * n, 4);
  const x1 = x0.map((x, j) => x + v[j]);
  const st = new PathStats(B, n);
  for (let k = 0; k < 5; k++) st.add(v);
  for (const s of st.straightness(x0, x1)) assert.ok(s < 1e-15, String(s));
  assert.throws(() => st.add(new Float32Array(3)), /expected 2 x 6/);
  assert.throws(() => new PathStats(1, 2).straightness([0, 0], [0, 0]), /no velocity/);
});

Deno.test("perSampleMse", () => {
  assert.deepEqual(perSampleMse([1, 2, 3, 4], [1, 0, 0, 4], 2, 2), [2, 4.5]);
  assert.throws(() => perSampleMse([1], [1, 2], 1, 2), /expected 1 x 2/);
});

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
