/**
 * What one recorded step costs: wall time per step, host time spent recording it (the JavaScript
 * that builds the command buffers) and host time blocked in queue.submit, dispatches and queue
 * submits per step, the GPU time of its kernels (timestamp queries, one profiled extra step) and
 * the peak of pooled GPU memory.
 */
import type { Gpu } from "../gpu/device.ts";

/** Figures of {@link measureSteps}; times in ms, memory in MiB. */
export interface StepStats {
  ms: number;
  /** Host time per step spent recording (before waiting for the GPU), submits excluded. */
  record_ms: number;
  /**
   * Host time per step inside queue.submit. Small on a GPU; on lavapipe a submit executes much of
   * the work before it returns, which is why it is not counted as recording.
   */
  submit_ms: number;
  /** GPU time per step: the sum of its kernels' timestamp intervals (null: no timestamp queries). */
  gpu_ms: number | null;
  dispatches: number;
  submits: number;
  /** Peak of the bytes live tensors held (weights included). */
  peak_mb: number;
  /** What the buffer pool holds afterwards, live and kept for reuse: the device memory it uses. */
  pool_mb: number;
}

/**
 * Runs `step` once to warm up (pipeline compilation), then `reps` times, each followed by a flush
 * (so every step's work is submitted by the step itself and submits count per step), then waits.
 * A last, profiled step gives the GPU time where the adapter has timestamp queries.
 */
export async function measureSteps(
  gpu: Gpu,
  step: () => void,
  reps: number,
  opts: { profile?: boolean } = {},
): Promise<StepStats> {
  step();
  await gpu.sync();
  gpu.pool.resetPeak();
  const d0 = gpu.dispatchCount, s0 = gpu.submitCount, sm0 = gpu.submitMs;
  let record = 0;
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) {
    const r0 = performance.now();
    step();
    gpu.flush();
    record += performance.now() - r0;
  }
  const submitMs = (gpu.submitMs - sm0) / reps;
  await gpu.sync();
  const ms = (performance.now() - t0) / reps;
  const dispatches = (gpu.dispatchCount - d0) / reps;
  // The sync's own fence copy is one more submit, not the step's.
  const submits = (gpu.submitCount - s0 - 1) / reps;
  const peak = gpu.pool.peakBytes / 2 ** 20;
  const pool = (gpu.pool.liveBytes + gpu.pool.reservedBytes) / 2 ** 20;
  let gpuMs: number | null = null;
  if ((opts.profile ?? true) && gpu.hasTimestamps) {
    gpu.startProfiling();
    step();
    const prof = await gpu.stopProfiling();
    gpuMs = [...prof.values()].reduce((s, e) => s + e.ms, 0);
  }
  return {
    ms,
    record_ms: record / reps - submitMs,
    submit_ms: submitMs,
    gpu_ms: gpuMs,
    dispatches,
    submits,
    peak_mb: peak,
    pool_mb: pool,
  };
}
