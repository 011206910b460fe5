/**
 * The loopback TCP gradient exchange: averaging in rank order, broadcast, length checks, the f16
 * transport, and several exchanges in flight at once.
 */
import assert from "node:assert/strict";
import { connectWorker, listenHub } from "../../core/distributed/allreduce.ts";
import { f16BitsToF32, f32ToF16Bits } from "../../core/io/half.ts";

Deno.test("allreduce over loopback TCP averages in rank order", async () => {
  const hub = listenHub(3);
  const acc = hub.accept(10_000);
  const w1 = await connectWorker(hub.port, 1, 3);
  const w2 = await connectWorker(hub.port, 2, 3);
  const h = await acc;
  const big = 300_000;
  const mk = (k: number) => Float32Array.from({ length: big }, (_, i) => (i % 13) * k);
  const [a, b, c] = await Promise.all([
    h.allReduceMean(mk(1)),
    w1.allReduceMean(mk(2)),
    w2.allReduceMean(mk(6)),
  ]);
  for (const r of [a, b, c]) {
    assert.equal(r.length, big);
    assert.equal(r[5], 5 * 3);
    assert.equal(r[big - 1], ((big - 1) % 13) * 3);
  }
  const [x, y] = await Promise.all([
    h.broadcast(Float32Array.of(7, 8)),
    w1.broadcast(new Float32Array(2)),
  ]);
  assert.deepEqual([...x], [7, 8]);
  assert.deepEqual([...y], [7, 8]);
  await w2.broadcast(new Float32Array(2));
  // A worker that sends the wrong length is named.
  const bad = Promise.all([
    h.allReduceMean(new Float32Array(4)),
    w1.allReduceMean(new Float32Array(3)),
  ]);
  w2.allReduceMean(new Float32Array(4)).catch(() => {});
  await assert.rejects(bad, /worker 1 sent 3 values, expected 4/);
  for (const e of [h, w1, w2]) e.close();
});

Deno.test("allreduce over loopback TCP: f16 transport, and calls started without waiting", async () => {
  const hub = listenHub(3);
  const acc = hub.accept(10_000);
  const w1 = await connectWorker(hub.port, 1, 3);
  const w2 = await connectWorker(hub.port, 2, 3);
  const h = await acc;
  const n = 5000;
  const mk = (k: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + k) * 3);
  const [a, b, c] = await Promise.all([
    h.allReduceMean(mk(0), { transport: "f16" }),
    w1.allReduceMean(mk(1), { transport: "f16" }),
    w2.allReduceMean(mk(2), { transport: "f16" }),
  ]);
  // Workers send f16, rank 0 keeps f32; everyone gets the mean rounded to f16.
  const r16 = (x: Float32Array) => f16BitsToF32(f32ToF16Bits(x));
  const w = [mk(0), r16(mk(1)), r16(mk(2))];
  const expect = r16(Float32Array.from({ length: n }, (_, i) => (w[0][i] + w[1][i] + w[2][i]) / 3));
  assert.deepEqual(a, expect);
  assert.deepEqual(b, expect);
  assert.deepEqual(c, expect);
  // Several exchanges in flight at once (one per gradient bucket) complete in call order.
  const calls = (ex: typeof h, k: number) =>
    [1, 2, 3].map((len) => ex.allReduceMean(new Float32Array(len * 1000).fill(k * len)));
  const all = await Promise.all([calls(h, 1), calls(w1, 2), calls(w2, 6)].flat());
  for (const [j, len] of [1, 2, 3].entries()) {
    for (const r of [all[j], all[3 + j], all[6 + j]]) {
      assert.equal(r.length, len * 1000);
      assert.equal(r[0], 3 * len);
    }
  }
  for (const e of [h, w1, w2]) e.close();
});
