/**
 * Sampling benchmark: images per second of the sample job's integration (UNet passes and their
 * read-backs; decoding and PNG writing excluded) on a tiny UNet (two levels, 8x8 latents, random
 * weights, random caption states), for one and four Euler steps and for RK45 (one timed batch; its
 * tolerance defaults to 1e-3 rather than the original's 1e-5, since a random-weight UNet's field is
 * far more curved than a trained flow's and would need hundreds of evaluations). A warm-up batch
 * compiles the pipelines first.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * // `deno task bench` runs the defaults; one small timed batch each here
 * const r = await benchSample({ batch: 1, repeats: 1, odeTol: 0.1 });
 * console.log(r.euler1ImagesPerSec, r.euler4ImagesPerSec, r.rk45ImagesPerSec, r.rk45Nfe);
 * assert.ok([r.euler1ImagesPerSec, r.euler4ImagesPerSec, r.rk45ImagesPerSec].every((v) => v > 0));
 * assert.ok(r.rk45Nfe >= 6); // at least one Dormand-Prince step
 * ```
 *
 * @module
 */

import { TINY_BENCH_UNET } from "./tiny_setup.ts";
import { Gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { UNet2DConditionModel } from "../models/unet2d_condition.ts";
import { philoxNormal } from "../tensor/philox.ts";
import { type BatchSamplerOptions, sampleBatch } from "../flow/sample_batch.ts";

/** Options of {@link benchSample}. */
export interface BenchSampleOptions {
  /** Samples per batch (default 4). */
  batch?: number;
  /** Timed batches per sampler (default 3). */
  repeats?: number;
  /** RK45 tolerance (default 1e-3). */
  odeTol?: number;
  /** A GPU to use (default: opened here and closed after). */
  gpu?: Gpu;
}

/** What {@link benchSample} measured. */
export interface BenchSampleResult {
  adapter: string;
  batch: number;
  euler1ImagesPerSec: number;
  euler4ImagesPerSec: number;
  rk45ImagesPerSec: number;
  /** Velocity evaluations of one RK45 batch. */
  rk45Nfe: number;
  /** Seconds per UNet evaluation of a batch (from the 4-step Euler runs). */
  secondsPerEvaluation: number;
}

/** Runs the benchmark (see the module note). */
export async function benchSample(opts: BenchSampleOptions = {}): Promise<BenchSampleResult> {
  const B = opts.batch ?? 4;
  const repeats = opts.repeats ?? 3;
  const gpu = opts.gpu ?? (await Gpu.open());
  const unet = UNet2DConditionModel.create(gpu, TINY_BENCH_UNET, 1);
  unet.requiresGrad(false);
  const shape: [number, number, number] = [4, 8, 8];
  const n = 256;
  const context = Tensor.from(gpu, philoxNormal(2, 0, B * 8 * 32), [B, 8, 32]);
  const z0 = philoxNormal(3, 0, B * n);
  const base: BatchSamplerOptions = {
    sampler: "euler",
    sampleN: 1,
    odeTol: opts.odeTol ?? 1e-3,
    sigmaVar: 0,
    noiseScale: 1,
    orientation: "original",
    returnTrajectory: false,
  };
  const timeIt = async (o: BatchSamplerOptions, times = repeats) => {
    let seconds = 0;
    let nfe = 0;
    for (let r = 0; r < times; r++) {
      const res = await sampleBatch(gpu, unet, context, z0, shape, o);
      seconds += res.seconds;
      nfe = res.nfe;
    }
    return { imagesPerSec: (B * times) / seconds, seconds: seconds / times, nfe };
  };
  try {
    await sampleBatch(gpu, unet, context, z0, shape, base); // compile the pipelines
    const e1 = await timeIt(base);
    const e4 = await timeIt({ ...base, sampleN: 4 });
    const rk = await timeIt({ ...base, sampler: "rk45" }, 1);
    return {
      adapter: gpu.describe().description,
      batch: B,
      euler1ImagesPerSec: e1.imagesPerSec,
      euler4ImagesPerSec: e4.imagesPerSec,
      rk45ImagesPerSec: rk.imagesPerSec,
      rk45Nfe: rk.nfe,
      secondsPerEvaluation: e4.seconds / 4,
    };
  } finally {
    context.dispose();
    unet.dispose();
    if (!opts.gpu) gpu.destroy();
  }
}

if (import.meta.main) console.log(JSON.stringify(await benchSample(), null, 2));
