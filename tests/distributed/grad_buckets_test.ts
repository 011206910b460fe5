/**
 * The bucketed exchange on the tiny UNet with a fake partner (an exchange whose "mean" halves the
 * values, as averaging with a worker whose gradients are zero would): every gradient comes back
 * halved, buckets respect their size, are launched and exchanged from inside backward with
 * overlap (while later segments of backward are still to be submitted to the GPU) and after it
 * without, are rebuilt after the first step in the order gradients became final, and extras (the
 * loss, a flag) are averaged too.
 */
import assert from "node:assert/strict";
import { testGpu } from "../helpers/gpu.ts";
import type { Gpu } from "../../core/gpu/device.ts";
import { tinyModels } from "../train/_tiny.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { keep, tidy } from "../../core/tensor/scope.ts";
import { backward } from "../../core/tensor/autograd.ts";
import { mean } from "../../core/kernels/reduce.ts";
import { mul } from "../../core/kernels/binary.ts";
import { readMany } from "../../core/tensor/readback.ts";
import { philoxNormal } from "../../core/tensor/philox.ts";
import { GradientBuckets } from "../../core/distributed/grad_buckets.ts";
import type { GradientExchange, ReduceOptions } from "../../core/distributed/allreduce.ts";

class HalvingExchange implements GradientExchange {
  readonly rank = 0;
  readonly worldSize = 2;
  calls: { length: number; transport: string; submits: number }[] = [];
  constructor(private readonly gpu: Gpu) {}
  allReduceMean(flat: Float32Array, opts: ReduceOptions = {}): Promise<Float32Array> {
    const submits = this.gpu.submitCount;
    this.calls.push({ length: flat.length, transport: opts.transport ?? "f32", submits });
    return Promise.resolve(flat.map((v) => v / 2));
  }
  broadcast(flat: Float32Array): Promise<Float32Array> {
    return Promise.resolve(flat);
  }
  close(): void {}
}

for (const overlap of [true, false]) {
  Deno.test(`gradient buckets (overlap ${overlap}): halved gradients, sizes, order, extras`, async () => {
    const gpu = await testGpu();
    const { unet, textEncoder } = tinyModels(gpu, 5);
    textEncoder.dispose();
    unet.requiresGrad(true);
    const params = unet.namedParameters().map(([, p]) => p);
    const [B, C, H, W] = [2, 4, 8, 8];
    const x = keep(Tensor.from(gpu, philoxNormal(3, 0, B * C * H * W), [B, C, H, W]));
    const t = keep(Tensor.from(gpu, [500, 20], [B]));
    const cross = unet.config.cross_attention_dim as number;
    const ctx = keep(Tensor.from(gpu, philoxNormal(4, 0, B * 77 * cross), [B, 77, cross]));
    const one = keep(Tensor.from(gpu, [1], [1]));
    const step = () => {
      const loss = tidy(() => {
        const y = unet.forward(x, t, ctx);
        return mean(mul(y, y));
      });
      return loss;
    };
    // Reference gradients without the exchange.
    const l0 = step();
    backward([l0], [one]);
    l0.dispose();
    const ref = await readMany(params.map((p) => p.grad!));
    for (const p of params) {
      p.grad!.dispose();
      p.grad = null;
    }
    const ex = new HalvingExchange(gpu);
    const bucketBytes = 48 * 1024;
    const buckets = new GradientBuckets(gpu, params, ex, {
      bucketBytes,
      overlap,
      transport: "f16",
    });
    for (let s = 0; s < 2; s++) {
      const loss = step();
      await buckets.backward([loss], [one]);
      const submitsAfterBackward = gpu.submitCount;
      const lossValue = (await loss.toF32())[0];
      const extras = await buckets.finish([loss], [7]);
      assert.equal(extras.length, 2);
      assert.ok(Math.abs(extras[0] - lossValue / 2) < 1e-6 * Math.abs(lossValue), "loss averaged");
      assert.equal(extras[1], 3.5, "plain values averaged");
      const got = await readMany(params.map((p) => p.grad!));
      got.forEach((g, i) => {
        for (let j = 0; j < g.length; j++) {
          const e = ref[i][j] / 2;
          assert.ok(
            Math.abs(g[j] - e) <= 1e-6 + 1e-5 * Math.abs(e),
            `param ${i}[${j}]: ${g[j]} vs ${e}`,
          );
        }
      });
      const tm = buckets.lastTimings;
      assert.ok(tm.buckets > 3, "several buckets");
      if (!overlap) {
        assert.equal(tm.launchedDuringBackward, 0);
        assert.equal(tm.exchangedDuringBackward, 0);
        assert.ok(ex.calls.every((c) => c.submits >= submitsAfterBackward), "all after backward");
      } else if (s === 0) {
        assert.ok(tm.launchedDuringBackward > 0, "buckets launched inside backward");
      } else {
        // From the second step on the buckets follow the order gradients became final: each one
        // is complete, and launched, before backward returns; the exchange of a bucket starts
        // two pauses after its launch at the earliest (so never the last two's), and the first
        // starts while backward has segments still to submit (which the GPU then runs during
        // the exchange). Backward's 50 segments, each waiting for the GPU, take far longer than
        // the 10 ms that Deno takes to resolve a read-back, so some start inside it.
        assert.equal(tm.launchedDuringBackward, tm.buckets);
        assert.ok(
          tm.exchangedDuringBackward >= 1 && tm.exchangedDuringBackward <= tm.buckets - 2,
          `${tm.exchangedDuringBackward} of ${tm.buckets} exchanged during backward`,
        );
        assert.ok(
          ex.calls[0].submits < submitsAfterBackward - 1,
          `first exchange at submit ${ex.calls[0].submits} of ${submitsAfterBackward}`,
        );
      }
      // Every bucket but the extras travels with the chosen transport; extras in f32.
      assert.deepEqual(ex.calls.map((c) => c.transport), [
        ...new Array(tm.buckets).fill("f16"),
        "f32",
      ]);
      ex.calls = [];
      for (const p of params) {
        p.grad!.dispose();
        p.grad = null;
      }
      loss.dispose();
    }
    // Buckets hold every parameter once, within the size (a single larger tensor alone).
    const after = buckets.layout;
    assert.deepEqual(after.flat().sort((a, b) => a - b), params.map((_, i) => i));
    for (const b of after) {
      const bytes = b.reduce((s, i) => s + params[i].size * 4, 0);
      assert.ok(bytes <= bucketBytes || b.length === 1, `bucket of ${bytes} bytes`);
    }
    for (const tns of [x, t, ctx, one]) tns.dispose();
    unet.dispose();
  });
}
