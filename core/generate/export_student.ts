/**
 * Turning a trained student into a flow teacher folder, so that reflow can be iterated (2-rectified
 * flow -> 3-rectified flow): the teacher's folder with `unet/` holding the student's weights and a
 * `reflow.json` saying how to sample it (see teacher_info.ts). Files are hard-linked where the file
 * system allows (a text encoder is large), copied otherwise; the folder appears only when complete.
 */
import { basename, join } from "node:path";
import { openSafetensors } from "../io/safetensors.ts";
import { FLOW_TEACHER_FILE, type FlowTeacherSpec } from "./teacher_info.ts";

export interface ExportOptions {
  /** The teacher's diffusers folder (tokenizer, text encoder, scheduler, unet/config.json). */
  teacherDir: string;
  /** The student: `score_model_s{step}.safetensors` from the train job. */
  studentWeights: string;
  /** The new folder. */
  outDir: string;
  sampler?: "euler" | "rk45";
  sampleN?: number;
  odeTol?: number;
}

async function linkOrCopy(src: string, dst: string): Promise<void> {
  try {
    await Deno.link(src, dst);
  } catch {
    await Deno.copyFile(src, dst);
  }
}

async function copyTree(src: string, dst: string): Promise<void> {
  await Deno.mkdir(dst, { recursive: true });
  for await (const e of Deno.readDir(src)) {
    const s = join(src, e.name), d = join(dst, e.name);
    if (e.isDirectory) await copyTree(s, d);
    else if (e.isFile) await linkOrCopy(s, d);
  }
}

/** Writes the flow-teacher folder; returns the spec written to reflow.json. */
export async function exportFlowTeacher(o: ExportOptions): Promise<FlowTeacherSpec> {
  if (o.sampleN !== undefined && (!Number.isInteger(o.sampleN) || o.sampleN < 1)) {
    throw new Error(`sample_N must be a positive integer, got ${o.sampleN}`);
  }
  if (o.odeTol !== undefined && !(o.odeTol > 0)) {
    throw new Error(`ode_tol must be positive, got ${o.odeTol}`);
  }
  const unetConfig = join(o.teacherDir, "unet", "config.json");
  try {
    await Deno.stat(join(o.teacherDir, "model_index.json"));
    await Deno.stat(unetConfig);
  } catch {
    throw new Error(`${o.teacherDir}: not a diffusers folder (model_index.json, unet/config.json)`);
  }
  const st = await openSafetensors(o.studentWeights);
  const orientation = st.metadata?.timestep_orientation ?? "original";
  st.close();
  if (orientation !== "original" && orientation !== "pretrained") {
    throw new Error(`${o.studentWeights}: unknown timestep_orientation "${orientation}"`);
  }
  const spec: FlowTeacherSpec = {
    timestep_orientation: orientation,
    sampler: o.sampler ?? "euler",
    sample_N: o.sampleN ?? 1,
    ode_tol: o.odeTol ?? 1e-5,
  };
  try {
    await Deno.stat(o.outDir);
    throw new Error(`${o.outDir} exists already; choose a new folder`);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const tmp = `${o.outDir}.tmp-${Deno.pid}`;
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  try {
    for await (const e of Deno.readDir(o.teacherDir)) {
      const s = join(o.teacherDir, e.name), d = join(tmp, e.name);
      if (e.name === "unet" || e.name === FLOW_TEACHER_FILE) continue;
      if (e.isDirectory) await copyTree(s, d);
      else if (e.isFile) {
        await Deno.mkdir(tmp, { recursive: true });
        await linkOrCopy(s, d);
      }
    }
    await Deno.mkdir(join(tmp, "unet"), { recursive: true });
    await Deno.copyFile(unetConfig, join(tmp, "unet", "config.json"));
    await linkOrCopy(o.studentWeights, join(tmp, "unet", "diffusion_pytorch_model.safetensors"));
    await Deno.writeTextFile(
      join(tmp, FLOW_TEACHER_FILE),
      JSON.stringify({ ...spec, student: basename(o.studentWeights) }, null, 2) + "\n",
    );
    await Deno.rename(tmp, o.outDir);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  return spec;
}
