/**
 * Loading a teacher (see teacher_info.ts for the folder layouts) onto a GPU.
 *
 * @module
 */

import type { Gpu } from "../gpu/device.ts";
import { loadDiffusersPipeline } from "../models/diffusers_folder.ts";
import { DiffusionTeacher, type Teacher } from "./teacher.ts";
import { FlowTeacher } from "./flow_teacher.ts";
import { inspectTeacher, teacherSchedulerConfig, type TeacherSettings } from "./teacher_info.ts";

/** Loads the teacher of a model folder onto `gpu` (no VAE: generation does not decode). */
export async function loadTeacher(
  gpu: Gpu,
  modelDir: string,
  settings: TeacherSettings,
): Promise<Teacher> {
  const info = await inspectTeacher(modelDir);
  const schedulerConfig = teacherSchedulerConfig(modelDir, info, settings.dpmSolver);
  const pipe = await loadDiffusersPipeline(gpu, modelDir, { vae: false });
  pipe.unet.requiresGrad(false);
  if (settings.dtype === "fp16" && gpu.hasF16) pipe.unet.toDtype("f16");
  const owned = [pipe.unet, pipe.textEncoder];
  if (info.kind === "flow") {
    const f = info.flow!;
    return new FlowTeacher({
      gpu,
      tokenizer: pipe.tokenizer,
      textEncoder: pipe.textEncoder,
      unet: pipe.unet,
      sampler: f.sampler,
      sampleN: f.sample_N,
      odeTol: f.ode_tol,
      timestepOrientation: f.timestep_orientation,
      latentShape: info.latentShape,
      owned,
    });
  }
  return new DiffusionTeacher({
    gpu,
    tokenizer: pipe.tokenizer,
    textEncoder: pipe.textEncoder,
    unet: pipe.unet,
    schedulerConfig: schedulerConfig!,
    inferSteps: settings.inferSteps,
    guidanceScale: settings.guidanceScale,
    negativePrompt: settings.negativePrompt,
    latentShape: info.latentShape,
    owned,
  });
}
