/**
 * `deno task demo [--quick] [--out out/demo] [--pairs N] [--train_steps N] [--teacher DIR]
 *  [--student FILE] [--student_init fresh|teacher] [--batch_size N] [--lr LR]
 *  [--save_student DIR] [--resume]`
 *
 * The whole reflow pipeline on the tiny teacher shipped in `models/tiny_teacher`, end to end on
 * any machine: generate -> data2lmdb -> train (reflow; the student starts fresh by default, or
 * from the teacher's weights with --student_init teacher) -> sample, then a
 * report (`<out>/index.html`, `<out>/report.json`) of the teacher at 25 and 1 steps against the
 * student at 1 and 4 Euler steps: pictures, the checker's accuracy, time per image, straightness
 * and the loss curve. `--quick` is the CI size (a few pairs and steps).
 */
import { intArg, numberArg, parseCommand } from "../core/config/cli.ts";
import { demoOptions, runDemo } from "../core/demo/run_demo.ts";

interface DemoArgs {
  quick: boolean;
  out?: string;
  pairs?: string;
  train_steps?: string;
  teacher?: string;
  student?: string;
  student_init?: string;
  batch_size?: string;
  lr?: string;
  save_student?: string;
  resume: boolean;
}

async function main(): Promise<void> {
  const values = parseCommand<DemoArgs>(Deno.args, {
    name: "demo",
    usage: "deno task demo [options]",
    description: "The whole reflow pipeline (generate -> data2lmdb -> train -> sample -> report) " +
      "on the tiny teacher of models/tiny_teacher.",
    options: [
      { flags: "--quick", description: "the CI size (a few pairs and steps)", default: false },
      { flags: "--out <dir>", description: "output folder (default out/demo, or out/demo_quick)" },
      { flags: "--pairs <n>", description: "pairs the teacher generates" },
      { flags: "--train_steps <n>", description: "reflow training steps" },
      { flags: "--teacher <dir>", description: "the teacher folder" },
      { flags: "--student <file>", description: "the shipped student to compare with" },
      { flags: "--student_init <fresh|teacher>", description: "the student's initial weights" },
      { flags: "--batch_size <n>", description: "training batch size" },
      { flags: "--lr <lr>", description: "learning rate" },
      {
        flags: "--save_student <dir>",
        description: "also save the trained student as a diffusers UNet folder",
      },
      {
        flags: "--resume",
        description: "keep the pairs an interrupted run with the same settings made",
        default: false,
      },
    ],
  });
  const o = demoOptions(values.quick, values.out ?? (values.quick ? "out/demo_quick" : "out/demo"));
  const positive = { min: 1 };
  if (values.pairs) o.pairs = intArg(values.pairs, "--pairs", positive);
  if (values.train_steps) o.trainSteps = intArg(values.train_steps, "--train_steps", positive);
  if (values.batch_size) o.batchSize = intArg(values.batch_size, "--batch_size", positive);
  if (values.lr) o.lr = numberArg(values.lr, "--lr", { min: 0, minExclusive: true });
  o.resume = values.resume;
  if (values.save_student) o.saveStudent = values.save_student;
  if (values.teacher) o.teacher = values.teacher;
  if (values.student) o.shippedStudent = values.student;
  if (values.student_init) {
    if (values.student_init !== "teacher" && values.student_init !== "fresh") {
      throw new Error(`--student_init must be "teacher" or "fresh", got "${values.student_init}"`);
    }
    o.studentInit = values.student_init;
  }
  await runDemo(o);
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`demo: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
