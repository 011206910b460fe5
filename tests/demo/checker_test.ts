import assert from "node:assert/strict";
import { checkAll, checkImage, unitToSigned } from "../../core/demo/checker.ts";
import {
  BACKGROUND,
  captionOf,
  COLOR_NAMES,
  IMAGE_SIZE,
  SHAPES,
  shapeSample,
} from "../../core/demo/shapes.ts";

const samples = Array.from({ length: 600 }, (_, i) => shapeSample(424242, i));

Deno.test("checker: right on generated pictures with their captions", () => {
  const { summary } = checkAll(samples.map((s) => s.pixels), samples.map((s) => s.caption));
  assert(summary.accuracy >= 0.99, `accuracy ${summary.accuracy}`);
  assert.deepStrictEqual(summary.count, samples.length);
});

Deno.test("checker: wrong on swapped captions (colour, shape or side)", () => {
  let wrong = 0;
  let total = 0;
  for (const s of samples.slice(0, 200)) {
    const { color, shape, position } = s.spec;
    const otherColor = COLOR_NAMES[(COLOR_NAMES.indexOf(color) + 1) % COLOR_NAMES.length];
    const otherShape = SHAPES[(SHAPES.indexOf(shape) + 1) % SHAPES.length];
    const swaps = [
      captionOf({ color: otherColor, shape, position }),
      captionOf({ color, shape: otherShape, position }),
    ];
    if (position) {
      swaps.push(captionOf({ color, shape, position: position === "left" ? "right" : "left" }));
    }
    for (const c of swaps) {
      total++;
      if (!checkImage(s.pixels, c).match) wrong++;
    }
  }
  assert(wrong / total >= 0.99, `${wrong} of ${total} swapped captions rejected`);
});

Deno.test("checker: a blank picture matches nothing; [0, 1] images convert", () => {
  const blank = new Float32Array(3 * IMAGE_SIZE * IMAGE_SIZE);
  for (let c = 0; c < 3; c++) blank.fill(BACKGROUND[c], c * 144, (c + 1) * 144);
  const r = checkImage(blank, "a red circle");
  assert.deepStrictEqual(r.match, false);
  assert.deepStrictEqual(r.seen.shape, null);
  const s = samples[0];
  const unit = s.pixels.map((v) => v / 2 + 0.5);
  assert(checkImage(unitToSigned(unit), s.caption).match);
});

Deno.test("checker: noise is no picture of anything", () => {
  let s = 12345;
  const next = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
  for (let k = 0; k < 20; k++) {
    const noise = Float32Array.from({ length: 3 * IMAGE_SIZE * IMAGE_SIZE }, next);
    assert.equal(checkImage(noise, samples[k].caption).match, false);
  }
});
