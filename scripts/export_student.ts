/**
 * `deno task export-student --teacher <folder> --student <score_model_s{step}.safetensors>
 *  --out <folder> [--sampler euler|rk45] [--sample_N 1] [--ode_tol 1e-5]`: a flow-teacher folder
 * that `generate` uses as its teacher (iterated reflow).
 */
import { Command } from "commander";
import { exportFlowTeacher } from "../core/generate/export_student.ts";

const cmd = new Command("export-student")
  .requiredOption("--teacher <dir>", "the teacher's diffusers folder")
  .requiredOption("--student <file>", "the student's score_model_s{step}.safetensors")
  .requiredOption("--out <dir>", "the flow-teacher folder to create")
  .option("--sampler <name>", "euler or rk45", "euler")
  .option("--sample_N <n>", "Euler steps", "1")
  .option("--ode_tol <x>", "RK45 tolerance", "1e-5")
  .parse(["deno", "export-student", ...Deno.args]);
const o = cmd.opts();
if (o.sampler !== "euler" && o.sampler !== "rk45") {
  console.error(`--sampler must be euler or rk45, got "${o.sampler}"`);
  Deno.exit(2);
}
try {
  const spec = await exportFlowTeacher({
    teacherDir: o.teacher,
    studentWeights: o.student,
    outDir: o.out,
    sampler: o.sampler,
    sampleN: Number(o.sample_N),
    odeTol: Number(o.ode_tol),
  });
  console.log(`wrote ${o.out} (flow teacher: ${JSON.stringify(spec)})`);
} catch (e) {
  console.error(`export-student: ${(e as Error).message}`);
  Deno.exit(1);
}
