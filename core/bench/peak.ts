/**
 * Measures the adapter's register-only FMA throughput: every invocation runs long chains of
 * independent vec4 FMAs on registers (no memory traffic in the loop), over enough workgroups to fill
 * the device. The figure is the ceiling the kernel benchmarks are compared against.
 */
import type { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { packUniforms } from "../kernels/common.ts";

/** Independent accumulator chains per invocation (enough to hide FMA latency). */
const CHAINS = 8;
const WG = 64;

/** FLOPs one invocation performs for `iters` loop trips (2 per FMA lane). */
function flopsPerInvocation(iters: number): number {
  return iters * CHAINS * 4 * 2;
}

/** Returns the measured peak in GFLOP/s. */
export async function measurePeak(
  gpu: Gpu,
  opts: { iters?: number; groups?: number; reps?: number } = {},
): Promise<number> {
  const iters = opts.iters ?? 4096;
  const groups = opts.groups ?? 256;
  const reps = opts.reps ?? 3;
  const k = gpu.kernel("bench_fma_peak", `${CHAINS}|${WG}`, () => {
    const init = Array.from(
      { length: CHAINS },
      (_, i) => `  var r${i} = vec4<f32>(f32(lid) * 1e-3 + ${i}.0);`,
    ).join("\n");
    const step = Array.from({ length: CHAINS }, (_, i) => `    r${i} = fma(r${i}, m, c);`).join(
      "\n",
    );
    const sum = Array.from({ length: CHAINS }, (_, i) => `r${i}`).join(" + ");
    return `
struct U { iters: u32, p0: u32, p1: u32, p2: u32 };
@group(0) @binding(0) var<uniform> u: U;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
${init}
  let m = vec4<f32>(0.999999);
  let c = vec4<f32>(1e-6);
  for (var i = 0u; i < u.iters; i++) {
${step}
  }
  let s = ${sum};
  // A data-dependent store keeps the compiler from removing the loop.
  if (s.x == 12345.678) { out[gid.x] = s.y + s.z + s.w; }
}`;
  });
  const sink = Tensor.empty(gpu, [groups * WG], "f32");
  const u = packUniforms([iters, 0, 0, 0]);
  gpu.dispatch(k, [sink.buffer], u, [groups]);
  await gpu.sync();
  let best = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    gpu.dispatch(k, [sink.buffer], u, [groups]);
    await gpu.sync();
    best = Math.min(best, performance.now() - t0);
  }
  sink.dispose();
  return (flopsPerInvocation(iters) * groups * WG) / (best * 1e6);
}
