import assert from "node:assert/strict";
import {
  allCaptions,
  captionOf,
  IMAGE_SIZE,
  parseCaption,
  shapeSample,
} from "../../core/demo/shapes.ts";
import { writeShapesPairs } from "../../core/demo/tiny_teacher.ts";
import { readCaptions } from "../../core/data/captions.ts";
import { pairPaths } from "../../core/data/pair_store.ts";

Deno.test("shapes: the same seed and index give the same picture and caption", () => {
  for (let i = 0; i < 50; i++) {
    const a = shapeSample(11, i);
    const b = shapeSample(11, i);
    assert.deepStrictEqual(a.caption, b.caption);
    assert.deepStrictEqual(a.pixels, b.pixels);
    assert.deepStrictEqual(a.pixels.length, 3 * IMAGE_SIZE * IMAGE_SIZE);
    assert(a.pixels.every((v) => v >= -1 && v <= 1));
  }
});

Deno.test("shapes: other seeds give other data, and every caption occurs", () => {
  const a = Array.from({ length: 40 }, (_, i) => shapeSample(1, i).caption);
  const b = Array.from({ length: 40 }, (_, i) => shapeSample(2, i).caption);
  assert.notDeepStrictEqual(a, b);
  const seen = new Set(Array.from({ length: 3000 }, (_, i) => shapeSample(5, i).caption));
  assert.deepStrictEqual(seen.size, allCaptions().length);
});

Deno.test("shapes: captions parse back into what they say", () => {
  for (const c of allCaptions()) {
    const p = parseCaption(c);
    assert(p, c);
    assert.deepStrictEqual(captionOf(p!), c);
  }
  assert.deepStrictEqual(parseCaption("a purple circle"), null);
  assert.deepStrictEqual(parseCaption("a red hexagon"), null);
  assert.deepStrictEqual(parseCaption("a red circle on the moon"), null);
});

Deno.test("shapes: the pair folder written twice is byte-identical", async () => {
  const dirs = [await Deno.makeTempDir(), await Deno.makeTempDir()];
  try {
    for (const d of dirs) await writeShapesPairs(d, 3, 5);
    const [p, q] = dirs.map((d) => pairPaths(d));
    assert.deepStrictEqual(await readCaptions(p.captions), await readCaptions(q.captions));
    for (let i = 0; i < 5; i++) {
      assert.deepStrictEqual(
        await Deno.readFile(`${p.images}/${i}.npy`),
        await Deno.readFile(`${q.images}/${i}.npy`),
      );
    }
    assert.deepStrictEqual(
      await readCaptions(p.captions),
      Array.from({ length: 5 }, (_, i) => shapeSample(3, i).caption),
    );
  } finally {
    for (const d of dirs) await Deno.remove(d, { recursive: true });
  }
});
