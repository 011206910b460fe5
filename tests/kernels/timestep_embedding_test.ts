import assert from "node:assert/strict";
import { testGpu } from "../helpers/gpu.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { timestepEmbedding } from "../../core/kernels/timestep_embedding.ts";

/** diffusers' get_timestep_embedding with PyTorch's float32 rounding, sin/cos in float64. */
function reference(
  ts: Float32Array,
  dim: number,
  flip: boolean,
  shift: number,
  scale: number,
  maxPeriod: number,
): Float64Array {
  const f = Math.fround;
  const half = Math.floor(dim / 2);
  const out = new Float64Array(ts.length * dim);
  for (let b = 0; b < ts.length; b++) {
    for (let k = 0; k < half; k++) {
      const freq = f(Math.exp(f(f(f(-Math.log(maxPeriod)) * k) / f(half - shift))));
      const arg = f(f(scale) * f(ts[b] * freq));
      const s = Math.sin(arg), c = Math.cos(arg);
      out[b * dim + k] = flip ? c : s;
      out[b * dim + half + k] = flip ? s : c;
    }
  }
  return out;
}

const CASES = [
  { dim: 320, flip: true, shift: 0, scale: 1, maxPeriod: 10000 }, // SD 1.x UNet
  { dim: 64, flip: false, shift: 1, scale: 1, maxPeriod: 10000 }, // the function's defaults
  { dim: 33, flip: true, shift: 1, scale: 2.5, maxPeriod: 1000 }, // odd: zero pad
  { dim: 1, flip: false, shift: 1, scale: 1, maxPeriod: 10000 }, // all padding
];

for (const c of CASES) {
  Deno.test(`timestepEmbedding dim ${c.dim} flip ${c.flip} shift ${c.shift}`, async () => {
    const gpu = await testGpu();
    // Integer timesteps up to 999 (the UNet's range) and fractional ones.
    const ts = Float32Array.from([0, 1, 17, 500, 998, 999, 0.5, 123.456, 999.75, 3.25]);
    const t = Tensor.from(gpu, ts, [ts.length]);
    const y = timestepEmbedding(t, c.dim, {
      flipSinToCos: c.flip,
      downscaleFreqShift: c.shift,
      scale: c.scale,
      maxPeriod: c.maxPeriod,
    });
    assert.deepEqual(y.shape, [ts.length, c.dim]);
    const got = await y.toF32();
    const want = reference(ts, c.dim, c.flip, c.shift, c.scale, c.maxPeriod);
    let worst = 0;
    for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
    // f32 rounding of the result alone is up to 6e-8.
    assert.ok(worst <= 3e-7, `max abs error ${worst}`);
    t.dispose();
    y.dispose();
  });
}

Deno.test("timestepEmbedding: f16 output and errors", async () => {
  const gpu = await testGpu();
  const ts = Float32Array.from([0, 999, 250]);
  const t = Tensor.from(gpu, ts, [3]);
  if (gpu.hasF16) {
    const y = timestepEmbedding(t, 16, { flipSinToCos: true, downscaleFreqShift: 0, dtype: "f16" });
    assert.equal(y.dtype, "f16");
    const got = await y.toF32();
    const want = reference(ts, 16, true, 0, 1, 10000);
    for (let i = 0; i < got.length; i++) assert.ok(Math.abs(got[i] - want[i]) < 1e-3);
    y.dispose();
  }
  assert.throws(() => timestepEmbedding(t.alias([3, 1]), 8), /timestep_embedding.*1-D/);
  assert.throws(() => timestepEmbedding(t, 2, { downscaleFreqShift: 1 }), /timestep_embedding/);
  t.dispose();
  assert.throws(() => timestepEmbedding(t, 8), /used after release/);
});
