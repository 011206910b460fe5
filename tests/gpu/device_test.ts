import assert from "node:assert/strict";
import { testGpu } from "../helpers/gpu.ts";
import { Gpu, GpuError } from "../../core/gpu/device.ts";
import { BufferPool } from "../../core/gpu/pool.ts";
import { Tensor } from "../../core/tensor/tensor.ts";
import { tidy } from "../../core/tensor/scope.ts";
import * as ops from "../../core/ops.ts";

Deno.test("adapter is described and the device has the adapter's maxima", async () => {
  const gpu = await testGpu();
  const d = gpu.describe();
  assert.ok(d.description.length > 0);
  assert.equal(
    gpu.limits.maxStorageBufferBindingSize,
    gpu.adapter.limits.maxStorageBufferBindingSize,
  );
  assert.equal(gpu.hasF16, gpu.caps.f16);
  if (gpu.hasF16) assert.ok(gpu.adapter.features.has("shader-f16"));
});

Deno.test("work recorded before and after a copy in one batch is all kept, in order", async () => {
  const gpu = await testGpu();
  const a = Tensor.from(gpu, [1, 2, 3, 4], [4]);
  const b = Tensor.from(gpu, [10, 20, 30, 40], [4]);
  const r = tidy(() => {
    const s = ops.add(a, b); // dispatch
    const c = ops.clone(s); // copy
    const d = ops.scale(c, 2); // dispatch after the copy, same batch
    return ops.add(d, s);
  });
  assert.deepEqual([...await r.toF32()], [33, 66, 99, 132]);
  for (const t of [a, b, r]) t.dispose();
});

Deno.test("pipelines are compiled once per kernel and specialisation", async () => {
  const gpu = await testGpu();
  const x = Tensor.from(gpu, [1, 2, 3], [3]);
  tidy(() => ops.silu(x));
  tidy(() => ops.scale(x, 1));
  const n = gpu.pipelineCount;
  for (let i = 0; i < 5; i++) tidy(() => ops.silu(ops.scale(x, i)));
  assert.equal(gpu.pipelineCount, n, "same kernels for every shape and scalar");
  x.dispose();
});

Deno.test("a WGSL compile error names the kernel and the compiler's message", async () => {
  const gpu = await testGpu();
  gpu.kernel("broken_kernel", "test", () => "@compute @workgroup_size(1) fn main() { let x = ; }");
  await assert.rejects(() => gpu.sync(), (e: Error) => {
    assert.ok(e instanceof GpuError);
    assert.match(e.message, /broken_kernel/);
    return true;
  });
});

Deno.test("a buffer over the adapter's limit is refused with the limit and size", async () => {
  const gpu = await testGpu();
  const max = gpu.limits.maxStorageBufferBindingSize;
  assert.throws(
    () => Tensor.empty(gpu, [Math.ceil(max / 4) + 1024]),
    (e: Error) => e instanceof GpuError && e.message.includes(String(max)),
  );
});

Deno.test("use after release and shape/dtype mismatches are clear errors", async () => {
  const gpu = await testGpu();
  const a = Tensor.from(gpu, [1, 2, 3], [3]);
  const b = Tensor.from(gpu, [1, 2], [2]);
  assert.throws(() => ops.add(a, b), /add: shapes \[3\] and \[2\] do not broadcast/);
  const i = Tensor.from(gpu, [1, 2, 3], [3], "i32");
  assert.throws(() => ops.add(a, i), /add: dtype/);
  a.dispose();
  assert.throws(() => ops.silu(a), /used after release/);
  await assert.rejects(() => a.toF32(), /used after release/);
  b.dispose();
  i.dispose();
});

Deno.test("the pool reuses buffers and counts live and peak bytes", async () => {
  const gpu = await testGpu();
  const live0 = gpu.pool.liveBytes;
  gpu.pool.resetPeak();
  const t = Tensor.empty(gpu, [1000]);
  assert.equal(gpu.pool.liveBytes - live0, BufferPool.sizeClass(4000));
  const buf = t.buffer;
  t.dispose();
  assert.equal(gpu.pool.liveBytes, live0);
  const u = Tensor.empty(gpu, [1000]);
  assert.equal(u.buffer, buf, "a freed buffer of the same size class is reused");
  assert.ok(gpu.pool.peakBytes >= BufferPool.sizeClass(4000));
  u.dispose();
  for (const n of [1, 255, 256, 257, 1000, 4096, 5000, 1 << 20]) {
    const c = BufferPool.sizeClass(n);
    assert.ok(c >= n && c <= Math.max(256, n * 1.26), `size class of ${n}: ${c}`);
  }
});

Deno.test("a dispatch over maxComputeWorkgroupsPerDimension is refused", async () => {
  const gpu = await testGpu();
  const k = gpu.kernel("noop", "t", () => "@compute @workgroup_size(1) fn main() {}");
  assert.throws(
    () => gpu.dispatch(k, [], null, [gpu.limits.maxComputeWorkgroupsPerDimension + 1]),
    /noop.*maxComputeWorkgroupsPerDimension/,
  );
});

Deno.test("a closed device refuses further work by name; close and destroy twice are no-ops", async () => {
  const gpu = await Gpu.open();
  const a = Tensor.from(gpu, [1, 2, 3, 4], [4]);
  const b = tidy(() => ops.scale(ops.add(a, a), 3)); // work in flight when close() is called
  await gpu.close();
  await gpu.close();
  gpu.destroy();
  assert.throws(() => ops.add(a, b), /this Gpu was destroyed; open a new one/);
  await assert.rejects(() => a.toF32(), /this Gpu was destroyed/);
  a.dispose();
  b.dispose();
});
