/**
 * One worker process of the `generate` job (the original's `produce`): it owns its own WebGPU
 * device, loads the teacher, and makes the pairs of one contiguous group of the caption list,
 * skipping those already complete on disk. The parent sends the job as one JSON line on stdin
 * and reads progress lines (`@@reflow {...}`) from stdout; the worker exits when stdin closes,
 * so it never outlives its parent.
 *
 * Run by {@link runGenerate}: `deno run -A core/generate/generate_worker.ts` (not by hand).
 *
 * @module
 */

import { Gpu } from "../gpu/device.ts";
import { checkBoundAdapter } from "../gpu/adapter_binding.ts";
import { pairNpyPath, writePairNpy } from "../data/pair_store.ts";
import { f32ToF16Bits } from "../io/half.ts";
import { loadTeacher } from "./load_teacher.ts";
import { batchNoise } from "./noise.ts";
import { isCompletePair, pairFileLayout } from "./pair_files.ts";
import { MESSAGE_PREFIX, type WorkerJob, type WorkerMessage } from "./worker_protocol.ts";

function isFiniteAll(a: Float32Array): number {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return i;
  return -1;
}

/** Runs a worker's job in this process, reporting through `emit`. */
export async function runWorkerJob(
  job: WorkerJob,
  emit: (m: WorkerMessage) => void,
): Promise<void> {
  const shape = job.latentShape;
  const n = shape[0] * shape[1] * shape[2];
  const layout = pairFileLayout(shape);
  const missing: number[] = [];
  for (let k = 0; k < job.captions.length; k++) {
    const i = job.start + k;
    if (!(await isCompletePair(pairNpyPath(job.imagesDir, i), layout))) missing.push(i);
  }
  emit({ type: "scan", present: job.captions.length - missing.length, missing: missing.length });
  if (missing.length === 0) return;

  const gpu = await Gpu.open();
  try {
    // The adapter this worker got, checked against its binding.
    emit({ type: "adapter", text: `adapter ${checkBoundAdapter(gpu.info)}` });
    const teacher = await loadTeacher(gpu, job.modelDir, {
      inferSteps: job.inferSteps,
      guidanceScale: job.guidanceScale,
      negativePrompt: job.negativePrompt,
      dtype: job.dtype,
      dpmSolver: job.dpmSolver,
    });
    try {
      const ts = teacher.latentShape;
      if (ts[0] !== shape[0] || ts[1] !== shape[1] || ts[2] !== shape[2]) {
        throw new Error(
          `${job.modelDir}: teacher latents [${ts}] differ from the run's [${shape}]`,
        );
      }
      for (let b = 0; b < missing.length; b += job.bs) {
        const indices = missing.slice(b, b + job.bs);
        const captions = indices.map((i) => job.captions[i - job.start]);
        const z0 = batchNoise(job.seed, indices, n);
        const z1 = await teacher.sample(captions, z0.values);
        const bad = isFiniteAll(z1);
        if (bad >= 0) {
          const i = indices[Math.floor(bad / n)];
          throw new Error(
            `the teacher produced a non-finite latent (${z1[bad]}) for pair ${i} ` +
              `(caption ${JSON.stringify(job.captions[i - job.start])})`,
          );
        }
        const z1bits = f32ToF16Bits(z1);
        for (let k = 0; k < indices.length; k++) {
          await writePairNpy(
            job.imagesDir,
            indices[k],
            shape,
            z0.bits[k],
            z1bits.subarray(k * n, (k + 1) * n),
          );
        }
        emit({ type: "done", count: indices.length, indices });
      }
    } finally {
      teacher.dispose();
    }
  } finally {
    gpu.destroy();
  }
}

async function readJobAndWatch(): Promise<WorkerJob> {
  const reader = Deno.stdin.readable.getReader();
  const decoder = new TextDecoder();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("generate worker: stdin closed before the job arrived");
    text += decoder.decode(value, { stream: true });
  }
  // The parent holds stdin open while it runs; end of input means it is gone.
  (async () => {
    try {
      while (!(await reader.read()).done) { /* ignore */ }
    } catch { /* closed */ }
    Deno.exit(3);
  })();
  return JSON.parse(text.slice(0, text.indexOf("\n"))) as WorkerJob;
}

async function main(): Promise<void> {
  const encoder = new TextEncoder();
  const emit = (m: WorkerMessage) => {
    Deno.stdout.writeSync(encoder.encode(MESSAGE_PREFIX + JSON.stringify(m) + "\n"));
  };
  let job: WorkerJob | null = null;
  try {
    job = await readJobAndWatch();
    await runWorkerJob(job, emit);
  } catch (e) {
    const message = (e as Error).message ?? String(e);
    emit({ type: "error", message });
    console.error(`generate worker ${job?.worker ?? "?"}: ${(e as Error).stack ?? message}`);
    Deno.exit(1);
  }
  Deno.exit(0);
}

if (import.meta.main) await main();
