import assert from "node:assert/strict";
import { join } from "node:path";
import { decode } from "fast-png";
import {
  captionImage,
  GLYPH_H,
  glyphRows,
  type ImageTensor,
  makeGrid,
  saveImage,
  tensorToImage,
  wrapText,
  writePng,
} from "../../core/io/png.ts";

interface GridCase {
  n: number;
  c: number;
  h: number;
  w: number;
  nrow: number;
  padding: number;
  pad_value: number;
  input: string;
  grid_shape: [number, number, number];
  grid: string;
  u8: string;
}

const bytes = (b64: string) => Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
const floats = (b64: string) => new Float32Array(bytes(b64).buffer);

// Made by tests/fixtures/io/make_grid_fixture.py with torchvision 0.14.
const fixture = new URL("../fixtures/io/grid_cases.json", import.meta.url);
const cases: GridCase[] = JSON.parse(Deno.readTextFileSync(fixture));

function split(c: GridCase): ImageTensor[] {
  const size = c.c * c.h * c.w;
  const all = floats(c.input);
  return Array.from({ length: c.n }, (_, i) => ({
    data: all.slice(i * size, (i + 1) * size),
    channels: c.c,
    height: c.h,
    width: c.w,
  }));
}

Deno.test("makeGrid + tensorToImage match torchvision make_grid/save_image", () => {
  assert.ok(cases.length >= 5);
  for (const c of cases) {
    const g = makeGrid(split(c), c.nrow, c.padding, c.pad_value);
    assert.deepEqual([g.channels, g.height, g.width], c.grid_shape, `shape n=${c.n}`);
    assert.deepEqual(g.data, floats(c.grid), `grid n=${c.n}`);
    const u8 = tensorToImage(g.data, g.channels, g.height, g.width);
    assert.deepEqual(u8, bytes(c.u8), `bytes n=${c.n}`);
  }
});

Deno.test("tensorToImage rounds and clamps like save_image", () => {
  const x = Float32Array.from([-1, 0, 0.5, 1, 2, NaN, 0.001, 0.999]);
  assert.deepEqual(Array.from(tensorToImage(x, 1, 1, 8)), [0, 0, 128, 255, 255, 0, 0, 255]);
  // CHW -> HWC interleaving
  const chw = Float32Array.from([0, 1, 0, 1, 1, 0]); // C=3, H=1, W=2
  assert.deepEqual(Array.from(tensorToImage(chw, 3, 1, 2)), [0, 0, 255, 255, 255, 0]);
  assert.throws(() => tensorToImage(chw, 3, 2, 2), /3x2x2/);
});

Deno.test("writePng writes a decodable PNG atomically, errors name the file", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const w = 5, h = 3;
    const rgb = Uint8Array.from({ length: w * h * 3 }, (_, i) => (i * 37) % 256);
    const p = join(dir, "a.png");
    writePng(p, rgb, w, h);
    const d = decode(Deno.readFileSync(p));
    assert.equal(d.width, w);
    assert.equal(d.height, h);
    assert.equal(d.channels, 3);
    assert.deepEqual(Array.from(d.data), Array.from(rgb));
    const rgba = Uint8Array.from({ length: w * h * 4 }, (_, i) => (i * 11) % 256);
    writePng(p, rgba, w, h); // replaces the file
    const d2 = decode(Deno.readFileSync(p));
    assert.equal(d2.channels, 4);
    assert.deepEqual(Array.from(d2.data), Array.from(rgba));
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["a.png"]); // no temp left
    assert.throws(() => writePng(join(dir, "b.png"), rgb, 4, 4), /b\.png/);
    assert.throws(() => writePng(join(dir, "nodir", "c.png"), rgb, w, h), /c\.png/);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["a.png"]);

    saveImage(join(dir, "s.png"), {
      data: new Float32Array(3 * 2 * 2).fill(0.5),
      channels: 3,
      height: 2,
      width: 2,
    });
    assert.deepEqual(
      Array.from(decode(Deno.readFileSync(join(dir, "s.png"))).data),
      new Array(12).fill(128),
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("font: glyphs drawn, distinct, non-ASCII becomes ?", () => {
  const seen = new Set<string>();
  for (let c = 33; c < 127; c++) {
    const rows = glyphRows(String.fromCharCode(c));
    assert.ok(rows.some((r) => r !== 0), `glyph ${c} empty`);
    assert.ok(rows.every((r) => r < 32));
    const key = rows.join(",");
    assert.ok(!seen.has(key), `glyph ${String.fromCharCode(c)} duplicates another`);
    seen.add(key);
  }
  assert.deepEqual(glyphRows(" "), [0, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(glyphRows("é"), glyphRows("?"));
  assert.deepEqual(glyphRows("猫"), glyphRows("?"));
  // 'H': two verticals and a bar in row 3
  assert.deepEqual(glyphRows("H"), [17, 17, 17, 31, 17, 17, 17]);
});

Deno.test("wrapText wraps at spaces and splits long words", () => {
  assert.deepEqual(wrapText("a cat on a mat", 6), ["a cat", "on a", "mat"]);
  assert.deepEqual(wrapText("abcdefghij", 4), ["abcd", "efgh", "ij"]);
  assert.deepEqual(wrapText("x\ny", 10), ["x", "y"]);
});

Deno.test("captionImage adds a band with the text's pixels", () => {
  const w = 20, h = 4;
  const img = { data: new Uint8Array(w * h * 3).fill(7), width: w, height: h, channels: 3 };
  const out = captionImage(img, "H", { margin: 2 });
  assert.equal(out.width, w);
  assert.equal(out.height, h + GLYPH_H + 4 - 1);
  assert.deepEqual(Array.from(out.data.subarray(0, w * h * 3)), Array.from(img.data));
  // Row r, column col of 'H' lands at (2 + col, h + 2 + r)
  const H = glyphRows("H");
  for (let r = 0; r < 7; r++) {
    for (let col = 0; col < 5; col++) {
      const on = (H[r] & (0x10 >> col)) !== 0;
      const i = ((h + 2 + r) * w + 2 + col) * 3;
      assert.deepEqual(Array.from(out.data.subarray(i, i + 3)), on ? [255, 255, 255] : [0, 0, 0]);
    }
  }
  // Two lines when the text is wider than the image; scale doubles the band.
  // width 20, margin 2: two characters a line
  const two = captionImage(img, "abcd", { margin: 2 });
  assert.equal(two.height, h + 2 * GLYPH_H + 3);
  const wide = { data: new Uint8Array(30 * h * 3), width: 30, height: h, channels: 3 };
  assert.equal(captionImage(wide, "abc def", { margin: 2 }).height, h + 2 * GLYPH_H + 3);
  assert.equal(captionImage(wide, "abc def", { margin: 2, maxLines: 1 }).height, h + GLYPH_H + 3);
  const big = captionImage(img, "H", { margin: 2, scale: 2 });
  assert.equal(big.height, h + 2 * GLYPH_H + 4 - 2);
});
