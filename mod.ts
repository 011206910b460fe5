/**
 * reflow: rectified-flow distillation of text-to-image diffusion models on Deno + WebGPU.
 *
 * The public library API. Open a device, build or load models, run them from host arrays:
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Gpu, loadUNet, noGrad, Tensor, tidy } from "./mod.ts";
 *
 * const gpu = await Gpu.open();
 * // the demo's one-step student: 3x12x12 pixels, caption states [B, 8, 32]
 * const unet = await loadUNet(gpu, "models/tiny_student/unet");
 * const x = Tensor.from(gpu, new Float32Array(1 * 3 * 12 * 12), [1, 3, 12, 12]);
 * const t = Tensor.from(gpu, [999], [1]);
 * const ctx = Tensor.from(gpu, new Float32Array(1 * 8 * 32), [1, 8, 32]);
 * const out = tidy(() => noGrad(() => unet.forward(x, t, ctx)));
 * const v = await out.toF32(); // the velocity, on the host
 * assert.equal(v.length, 3 * 12 * 12);
 * assert.ok(v.every(Number.isFinite));
 * ```
 * @module
 */

// Compute core
export { Gpu, GpuError } from "./core/gpu/device.ts";
export { type DType, Tensor } from "./core/tensor/tensor.ts";
export { keep, tidy, tidyAsync } from "./core/tensor/scope.ts";
export { backward, noGrad, noGradAsync } from "./core/tensor/autograd.ts";
export { checkpoint } from "./core/tensor/checkpoint.ts";
export { readMany } from "./core/tensor/readback.ts";
export * as ops from "./core/ops.ts";

// Models and weights
export { UNet2DConditionModel } from "./core/models/unet2d_condition.ts";
export { AutoencoderKL } from "./core/models/autoencoder_kl.ts";
export {
  CLIPTextModel,
  RobertaSeriesModelWithTransformation,
  type TextEncoder,
} from "./core/models/text_encoders.ts";
export {
  loadDiffusersPipeline,
  loadTextEncoder,
  loadUNet,
  loadVae,
} from "./core/models/diffusers_folder.ts";
export {
  loadModule,
  loadModuleFile,
  saveModule,
  saveUNetFolder,
  stateDict,
} from "./core/models/load.ts";
export { openWeights, type WeightReader } from "./core/io/weights.ts";
export { writeSafetensors } from "./core/io/safetensors.ts";
export { FormatError } from "./core/io/format_error.ts";

// Schedulers and samplers
export { DPMSolverMultistepScheduler } from "./core/schedulers/dpm_solver_multistep.ts";
export { eulerSample, rk45Sample, straightness } from "./core/schedulers/flow_samplers.ts";

// Rectified flow: time mapping, caption states, the UNet as a velocity, batch sampling, images
export { FLOW_EPS, type TimestepOrientation, unetTimestep } from "./core/flow/time.ts";
export { encodeCaptions } from "./core/flow/captions.ts";
export { unetVelocity, type VelocityNet } from "./core/flow/velocity.ts";
export { sampleBatch } from "./core/flow/sample_batch.ts";
export { PathStats } from "./core/flow/straightness.ts";
export { decodeToImages } from "./core/flow/images.ts";

// Training pieces
export { AdamW } from "./core/train/adamw.ts";
export { Ema } from "./core/train/ema.ts";
export { lrLambda } from "./core/train/lr_schedule.ts";

// Data
export { decodeNpy, encodeNpy, readNpy, writeNpy } from "./core/data/npy.ts";
export { openPairDataset } from "./core/data/dataset.ts";

// Streaming weights into a model (a web page, or any HTTP source)
export { loadModuleFromStream } from "./core/web/stream_loader.ts";
export { loadWebStudent } from "./core/web/student.ts";
