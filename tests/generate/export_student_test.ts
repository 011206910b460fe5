import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { exportFlowTeacher } from "../../core/generate/export_student.ts";
import { inspectTeacher } from "../../core/generate/teacher_info.ts";
import { writeSafetensors } from "../../core/io/safetensors.ts";

const TINY = fileURLToPath(new URL("../fixtures/tiny_pipeline", import.meta.url));

Deno.test("export-student makes a flow-teacher folder that generate recognises", async () => {
  const tmp = await Deno.makeTempDir();
  try {
    const student = join(tmp, "score_model_s7.safetensors");
    const w = new Float32Array([1, 2, 3]);
    await writeSafetensors(student, [{ name: "x", dtype: "F32", shape: [3], data: w }], {
      step: "7",
      timestep_orientation: "pretrained",
    });
    const out = join(tmp, "flow");
    const spec = await exportFlowTeacher({
      teacherDir: TINY,
      studentWeights: student,
      outDir: out,
      sampleN: 2,
    });
    assert.equal(spec.timestep_orientation, "pretrained");
    const info = await inspectTeacher(out);
    assert.equal(info.kind, "flow");
    assert.equal(info.flow?.sample_N, 2);
    assert.deepEqual(
      await Deno.readFile(join(out, "unet", "diffusion_pytorch_model.safetensors")),
      await Deno.readFile(student),
    );
    assert.deepEqual(
      await Deno.readTextFile(join(out, "tokenizer", "vocab.json")),
      await Deno.readTextFile(join(TINY, "tokenizer", "vocab.json")),
    );
    await assert.rejects(
      () => exportFlowTeacher({ teacherDir: TINY, studentWeights: student, outDir: out }),
      /exists already/,
    );
    await assert.rejects(
      () => exportFlowTeacher({ teacherDir: tmp, studentWeights: student, outDir: join(tmp, "b") }),
      /not a diffusers folder/,
    );
    await assert.rejects(
      () =>
        exportFlowTeacher({
          teacherDir: TINY,
          studentWeights: student,
          outDir: join(tmp, "c"),
          sampleN: 0,
        }),
      /sample_N/,
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
