/** The loopback TCP gradient exchange: averaging in rank order, broadcast, length checks. */
import assert from "node:assert/strict";
import { connectWorker, listenHub } from "../../core/dist/allreduce.ts";

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
