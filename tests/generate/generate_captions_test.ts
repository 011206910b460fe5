/**
 * Caption sources through the generate job: odd lines (blank, carriage returns, control
 * characters, invalid UTF-8) are refused by file and line before anything is written, and a source
 * with a byte order mark, CRLF line ends and non-ASCII captions survives generate -> resume ->
 * data2lmdb -> the training data set with every caption at its pair.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { getConfig } from "../../configs/generate.ts";
import { runGenerate } from "../../core/generate/generate.ts";
import { buildCaptionList, readCaptions } from "../../core/data/captions.ts";
import { data2lmdb } from "../../core/data/data2lmdb.ts";
import { openPairDataset } from "../../core/data/dataset.ts";

const TINY = fileURLToPath(new URL("../fixtures/tiny_pipeline", import.meta.url));
const quiet = { log: () => {}, progress: false as const };

function config(dir: string) {
  const c = getConfig();
  c.model_dir = TINY;
  c.captions_file = join(dir, "caps.txt");
  c.save_dir = join(dir, "out");
  c.total_nums = 3;
  c.infer_steps = 2;
  c.bs = 3;
  c.seed = 5;
  return c;
}

Deno.test("generate: odd caption lines are refused by file and line, nothing written", async () => {
  const dir = await Deno.makeTempDir({ prefix: "reflow-gen-caps-" });
  try {
    const enc = new TextEncoder();
    const cases: [Uint8Array, RegExp][] = [
      // The cases: blank lines (8 pairs made, 7 read back) and "\r\r\n" (resume refused).
      [enc.encode("a red circle\n\n\n\n"), /caps\.txt:2: the caption is empty/],
      [enc.encode("a blue square\r\r\na red circle\n"), /caps\.txt:1: .*U\+000D/],
      [enc.encode("one\ntwo\tcolumns\n"), /caps\.txt:2: .*U\+0009 \(tab\)/],
      [
        Uint8Array.from([...enc.encode("ok\nno"), 0xff, 0xfe, ...enc.encode("l\n")]),
        /caps\.txt:2: not valid UTF-8 text/,
      ],
    ];
    for (const [bytes, re] of cases) {
      await Deno.writeFile(join(dir, "caps.txt"), bytes);
      await assert.rejects(runGenerate(config(dir), quiet), re);
      assert.ok(!existsSync(join(dir, "out")), "nothing is written before the captions are read");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "generate: BOM + CRLF + non-ASCII captions survive generate, resume, data2lmdb, dataset",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "reflow-gen-caps-" });
    try {
      const source = ["  a caf\u00e9 au lait  ", "\u4e00\u53ea\u732b \u{1F431}", 'quotes " and \\'];
      await Deno.writeFile(
        join(dir, "caps.txt"),
        new TextEncoder().encode("\uFEFF" + source.join("\r\n") + "\r\n"),
      );
      const c = config(dir);
      const r1 = await runGenerate(c, quiet);
      assert.equal(r1.generated, 3);
      const captionsPath = join(r1.root, "content", "captions.txt");
      const want = buildCaptionList(source, 3, 5);
      assert.deepEqual(await readCaptions(captionsPath), want);
      // The same command resumes to nothing (it used to refuse on "\r\r\n" captions).
      const r2 = await runGenerate(c, quiet);
      assert.equal(r2.generated, 0);
      assert.equal(r2.skipped, 3);
      // Every later job sees the same captions at the same pairs.
      await data2lmdb({ dpath: join(r1.root, "content", "images") });
      for (const source of ["npy", "lmdb"] as const) {
        const ds = await openPairDataset(r1.root, { source });
        try {
          assert.equal(ds.length, 3);
          for (let i = 0; i < 3; i++) assert.equal((await ds.get(i)).caption, want[i], source);
        } finally {
          await ds.close();
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
