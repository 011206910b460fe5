/**
 * `deno task export-student --teacher <folder> --student <score_model_s{step}.safetensors>
 *  --out <folder> [--sampler euler|rk45] [--sample_N 1] [--ode_tol 1e-5]`: a flow-teacher folder
 * that `generate` uses as its teacher (iterated reflow).
 */
import { parseCommand } from "../core/config/cli.ts";
import { exportFlowTeacher } from "../core/generate/export_student.ts";

const o = parseCommand<
  {
    teacher: string;
    student: string;
    out: string;
    sampler: string;
    sample_N: string;
    ode_tol: string;
  }
>(Deno.args, {
  name: "export-student",
  usage: "deno task export-student --teacher <dir> --student <file> --out <dir> [options]",
  options: [
    { flags: "--teacher <dir>", description: "the teacher's diffusers folder", required: true },
    {
      flags: "--student <file>",
      description: "the student's score_model_s{step}.safetensors",
      required: true,
    },
    { flags: "--out <dir>", description: "the flow-teacher folder to create", required: true },
    { flags: "--sampler <name>", description: "euler or rk45", default: "euler" },
    { flags: "--sample_N <n>", description: "Euler steps", default: "1" },
    { flags: "--ode_tol <x>", description: "RK45 tolerance", default: "1e-5" },
  ],
});
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
