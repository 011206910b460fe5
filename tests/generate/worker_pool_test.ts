import assert from "node:assert/strict";
import { awaitWorkers } from "../../core/generate/worker_pool.ts";

Deno.test("awaitWorkers: no workers (a rank given no pairs) is done at once", async () => {
  await awaitWorkers([], []);
});

Deno.test("awaitWorkers: waits for every job; the first failure is the error", async () => {
  let done = 0;
  const later = (ms: number) =>
    new Promise<void>((r) =>
      setTimeout(() => {
        done++;
        r();
      }, ms)
    );
  await awaitWorkers([], [later(5), later(15)]);
  assert.equal(done, 2);
  await assert.rejects(
    awaitWorkers([], [later(5), Promise.reject(new Error("worker 1: boom"))]),
    /boom/,
  );
});
