import assert from "node:assert/strict";
import { join } from "node:path";
import {
  buildBpeVocab,
  captionWords,
  MAX_TOKENS,
  writeTeacherTokenizer,
} from "../../core/demo/tiny_teacher.ts";
import { loadTokenizer } from "../../core/models/tokenizers/load.ts";
import { allCaptions } from "../../core/demo/shapes.ts";
import { flowPathStraightness } from "../../core/demo/teacher_paths.ts";
import { parseLossLog } from "../../core/demo/run_demo.ts";

Deno.test("tiny teacher tokenizer: one token per caption word, captions fit", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeTeacherTokenizer(dir);
    const tok = await loadTokenizer(join(dir, "tokenizer"));
    assert.deepStrictEqual(tok.modelMaxLength, MAX_TOKENS);
    const { vocab } = buildBpeVocab(captionWords());
    const ids = new Set<number>();
    for (const w of captionWords()) {
      const { ids: row, mask } = tok.encode([w]);
      assert.deepStrictEqual(mask.reduce((a, b) => a + b, 0), 3, w); // bos, word, eos
      assert.deepStrictEqual(row[1], vocab[w + "</w>"], w);
      ids.add(row[1]);
    }
    assert.deepStrictEqual(ids.size, captionWords().length);
    const enc = tok.encode(allCaptions());
    assert.deepStrictEqual(enc.length, MAX_TOKENS);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("straightness of flow paths: 0 for a straight constant-speed path, > 0 bent", () => {
  const a = Float32Array.from([0, 1]);
  const b = Float32Array.from([2, -1]);
  const times = [0, 0.25, 0.5, 1];
  const straight = times.map((t) => a.map((v, j) => v + t * (b[j] - v)));
  assert(flowPathStraightness(straight, times, 1)[0] < 1e-12);
  const bent = straight.map((s, k) => (k === 1 || k === 2 ? s.map((v) => v + 0.5) : s));
  assert(flowPathStraightness(bent, times, 1)[0] > 0.1);
  // Batch rows are independent.
  const two = straight.map((s, k) => Float32Array.from([...s, ...bent[k]]));
  const r = flowPathStraightness(two, times, 2);
  assert(r[0] < 1e-12 && r[1] > 0.1);
});

Deno.test("demo: loss lines of exp.log parse", () => {
  const text = "x | INFO  | step 1 | training_loss 0.50000\nx | INFO  | step 5 | eval_loss 1e-3\n" +
    "x | INFO  | step 10 | training_loss 0.25\n";
  assert.deepStrictEqual(parseLossLog(text, "training_loss"), [[1, 0.5], [10, 0.25]]);
  assert.deepStrictEqual(parseLossLog(text, "eval_loss"), [[5, 0.001]]);
});
