import assert from "node:assert/strict";
import * as ops from "../../core/ops.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { rand, testGpu } from "../helpers/gpu.ts";

const gpu = await testGpu();

Deno.test({
  name: "profiling: one timing per launched kernel name, counted, non-negative",
  ignore: !gpu.hasTimestamps,
  async fn() {
    const a = Tensor.from(gpu, rand(64 * 64, 3), [64, 64]);
    const b = Tensor.from(gpu, rand(64 * 64, 4), [64, 64]);
    gpu.startProfiling();
    const outs = [ops.add(a, b), ops.add(b, a), ops.matmul(a, b)];
    const times = await gpu.stopProfiling();
    const counts = [...times.values()].reduce((n, t) => n + t.count, 0);
    assert.equal(counts, 3, `three launches, got ${JSON.stringify([...times])}`);
    for (const [name, t] of times) {
      assert.ok(Number.isFinite(t.ms) && t.ms >= 0, `${name}: ${t.ms} ms`);
    }
    await assert.rejects(gpu.stopProfiling(), /not started/);
    for (const t of [a, b, ...outs]) t.dispose();
  },
});
