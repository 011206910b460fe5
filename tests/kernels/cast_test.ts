import assert from "node:assert/strict";
import { checkOp, NEEDS_F16, rand, testGpu } from "../helpers/gpu.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { backward } from "../../core/tensor/autograd.ts";
import { f16BitsToF32, f32ToF16Bits } from "../../core/io/half.ts";
import { cast } from "../../core/kernels/cast.ts";

const roundF16 = (v: number) => f16BitsToF32(f32ToF16Bits(Float32Array.of(v)))[0];

for (const shape of [[7], [3, 5, 17], [2, 300]]) {
  Deno.test(`cast f32 -> f16 -> f32 [${shape}]`, NEEDS_F16, async () => {
    const gpu = await testGpu();
    await checkOp({
      shapes: [shape],
      gpu: ([x]) => {
        const h = cast(x, "f16");
        assert.equal(h.dtype, "f16");
        return cast(h, "f32");
      },
      // Nearest-even rounding like the host's converter; any rounding is within one f16 ulp.
      ref: ([x]) => x.map(roundF16),
      init: (_, n) => rand(n, 5, -70000 / 2, 70000 / 2).map((v, i) => (i % 3 ? v * 1e-4 : v)),
      tol: 1e-7,
      // The reference rounds, so finite differences say nothing: the gradient is checked below.
      gradTol: 0,
    });
    // Backward is a straight-through cast back: the f32 gradient rounds once through f16.
    const n = shape.reduce((a, b) => a * b, 1);
    const x = Tensor.from(gpu, Float32Array.from(rand(n, 3)), shape);
    x.requiresGrad = true;
    const h = cast(x, "f16");
    const y = cast(h, "f32");
    const gv = Float32Array.from(rand(n, 4));
    const g = Tensor.from(gpu, gv, shape);
    backward([y], [g]);
    assert.equal(x.grad!.dtype, "f32");
    assert.deepEqual([...await x.grad!.toF32()], [...gv.map(roundF16)]);
    for (const t of [x, x.grad!, h, y, g]) t.dispose();
  });
}

Deno.test("cast: f16 -> f32 exact, gradient dtypes, i32 -> f32, same dtype", async () => {
  const gpu = await testGpu();
  if (gpu.hasF16) {
    const vals = Float32Array.from([0, 1, -2.5, 65504, 6.1e-5, 3.0517578125e-5, 0.333251953125]);
    const h = Tensor.from(gpu, vals.map(roundF16), [vals.length], "f16");
    h.requiresGrad = true;
    const y = cast(h, "f32");
    assert.deepEqual([...await y.toF32()], [...vals.map(roundF16)]);
    const g = Tensor.from(gpu, new Float32Array(vals.length).fill(0.5), [vals.length]);
    backward([y], [g]);
    assert.equal(h.grad!.dtype, "f16");
    assert.deepEqual([...await h.grad!.toF32()], new Array(vals.length).fill(0.5));
    for (const t of [h, h.grad!, y, g]) t.dispose();
  }
  const ids = Tensor.from(gpu, [0, -3, 70000, 2 ** 24], [4], "i32");
  const f = cast(ids, "f32");
  assert.equal(f.requiresGrad, false);
  assert.deepEqual([...await f.toF32()], [0, -3, 70000, 2 ** 24]);
  const same = cast(f, "f32");
  assert.equal(same.buffer, f.buffer);
  assert.throws(() => cast(f, "i32"), /cast: f32 -> i32 is not supported/);
  for (const t of [ids, f, same]) t.dispose();
  assert.throws(() => cast(f, "f16"), /used after release/);
});
