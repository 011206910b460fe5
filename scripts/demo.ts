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
import { parseArgs } from "node:util";
import { demoOptions, runDemo } from "../core/demo/run_demo.ts";

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      out: { type: "string" },
      pairs: { type: "string" },
      train_steps: { type: "string" },
      teacher: { type: "string" },
      student: { type: "string" },
      student_init: { type: "string" },
      batch_size: { type: "string" },
      lr: { type: "string" },
      save_student: { type: "string" },
      resume: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(
      "usage: deno task demo [--quick] [--out DIR] [--pairs N] [--train_steps N] " +
        "[--teacher DIR] [--student FILE] [--student_init fresh|teacher] [--batch_size N] [--lr LR]\n" +
        "  [--save_student DIR]   also save the trained student as a diffusers UNet folder\n" +
        "  [--resume]             keep the pairs an interrupted run with the same settings made",
    );
    return;
  }
  const o = demoOptions(
    values.quick!,
    values.out ?? (values.quick ? "out/demo_quick" : "out/demo"),
  );
  const int = (v: string, name: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be an integer >= 1`);
    return n;
  };
  if (values.pairs) o.pairs = int(values.pairs, "pairs");
  if (values.train_steps) o.trainSteps = int(values.train_steps, "train_steps");
  if (values.batch_size) o.batchSize = int(values.batch_size, "batch_size");
  if (values.lr) {
    o.lr = Number(values.lr);
    if (!(o.lr > 0)) throw new Error(`--lr must be a number > 0, got "${values.lr}"`);
  }
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
