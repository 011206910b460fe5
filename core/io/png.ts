/**
 * PNG output for sample grids: torchvision's `make_grid` / `save_image` semantics on CHW float
 * images, PNG encoding via fast-png with atomic writes, and a tiny 5x7 bitmap font to put a
 * caption under an image.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decode } from "fast-png";
 * import { shapeSample } from "../demo/shapes.ts";
 *
 * // four 3x12x12 pictures of the demo's data set, mapped from [-1, 1] to [0, 1]
 * const images = [0, 1, 2, 3].map((i) => ({
 *   data: shapeSample(2333, i).pixels.map((v) => v / 2 + 0.5),
 *   channels: 3,
 *   height: 12,
 *   width: 12,
 * }));
 * const grid = makeGrid(images, Math.floor(Math.sqrt(images.length)), 2);
 * const bytes = tensorToImage(grid.data, grid.channels, grid.height, grid.width);
 * const samples = await Deno.makeTempDir(); // e.g. logs/run1/samples
 * writePng(`${samples}/sample_s2000.png`, bytes, grid.width, grid.height);
 * const png = decode(await Deno.readFile(`${samples}/sample_s2000.png`));
 * assert.deepEqual([png.width, png.height, png.channels], [30, 30, 3]); // 2 * (12 + 2) + 2
 * await Deno.remove(samples, { recursive: true });
 * ```
 *
 * @module
 */

import { renameSync, rmSync, writeFileSync } from "node:fs";
import { encode } from "fast-png";

/** A float image, channels-first (C, H, W), values nominally in [0, 1]. */
export interface ImageTensor {
  data: Float32Array;
  channels: number;
  height: number;
  width: number;
}

/** An 8-bit image, interleaved (H, W, C). */
export interface RasterImage {
  data: Uint8Array;
  width: number;
  height: number;
  channels: number;
}

/**
 * Write `data` (H*W*C bytes, C = 1 gray, 2 gray+alpha, 3 RGB or 4 RGBA) as a PNG file,
 * atomically (a temporary file renamed over `path`).
 */
export function writePng(path: string, data: Uint8Array, width: number, height: number): void {
  if (!(Number.isInteger(width) && width > 0 && Number.isInteger(height) && height > 0)) {
    throw new Error(`writePng ${path}: bad size ${width}x${height}`);
  }
  const channels = data.length / (width * height);
  if (![1, 2, 3, 4].includes(channels)) {
    throw new Error(
      `writePng ${path}: ${data.length} bytes do not make a ${width}x${height} image of 1-4 channels`,
    );
  }
  const png = encode({ width, height, data, channels, depth: 8 });
  const tmp = `${path}.${Deno.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  try {
    writeFileSync(tmp, png);
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new Error(`writePng ${path}: ${(e as Error).message}`);
  }
}

/**
 * CHW floats in [0, 1] to HWC bytes, rounding as torchvision's `save_image`:
 * floor(clamp(x * 255 + 0.5, 0, 255)) computed in float32 (NaN becomes 0).
 */
export function tensorToImage(chw: Float32Array, C: number, H: number, W: number): Uint8Array {
  if (chw.length !== C * H * W) {
    throw new Error(`tensorToImage: ${chw.length} values do not make a ${C}x${H}x${W} image`);
  }
  const out = new Uint8Array(C * H * W);
  const plane = H * W;
  for (let c = 0; c < C; c++) {
    for (let p = 0; p < plane; p++) {
      // float32 arithmetic as torch does, so that boundary values round the same way
      const v = Math.fround(Math.fround(chw[c * plane + p] * 255) + 0.5);
      out[p * C + c] = v >= 255 ? 255 : v > 0 ? Math.floor(v) : 0;
    }
  }
  return out;
}

/**
 * Tile images into a grid as torchvision's `make_grid`: `nrow` images per row, `padding` pixels
 * of `padValue` around each; one-channel images become three-channel; a single image is returned
 * as is (no padding), as torchvision does.
 */
export function makeGrid(
  images: readonly ImageTensor[],
  nrow = 8,
  padding = 2,
  padValue = 0,
): ImageTensor {
  if (images.length === 0) throw new Error("makeGrid: no images");
  const { height: H, width: W } = images[0];
  let C = images[0].channels;
  for (const im of images) {
    if (im.height !== H || im.width !== W || im.channels !== C) {
      throw new Error("makeGrid: images differ in shape");
    }
    if (im.data.length !== im.channels * H * W) throw new Error("makeGrid: data length ≠ C*H*W");
  }
  const gray = C === 1;
  if (gray) C = 3;
  if (images.length === 1) {
    const im = images[0];
    if (!gray) return { ...im, data: im.data.slice() };
    const data = new Float32Array(3 * H * W);
    for (let c = 0; c < 3; c++) data.set(im.data, c * H * W);
    return { data, channels: 3, height: H, width: W };
  }
  const xmaps = Math.min(nrow, images.length);
  const ymaps = Math.ceil(images.length / xmaps);
  const cellH = H + padding, cellW = W + padding;
  const GH = cellH * ymaps + padding, GW = cellW * xmaps + padding;
  const data = new Float32Array(C * GH * GW).fill(padValue);
  images.forEach((im, k) => {
    const y0 = Math.floor(k / xmaps) * cellH + padding;
    const x0 = (k % xmaps) * cellW + padding;
    for (let c = 0; c < C; c++) {
      const src = gray ? 0 : c;
      for (let y = 0; y < H; y++) {
        const from = (src * H + y) * W;
        data.set(im.data.subarray(from, from + W), (c * GH + y0 + y) * GW + x0);
      }
    }
  });
  return { data, channels: C, height: GH, width: GW };
}

/** torchvision's `save_image` for one image (use {@link makeGrid} first for a batch). */
export function saveImage(path: string, image: ImageTensor): void {
  const bytes = tensorToImage(image.data, image.channels, image.height, image.width);
  writePng(path, bytes, image.width, image.height);
}

// 5x7 glyphs for ASCII 32..126: 7 rows of 5 bits (bit 4 = leftmost column), 14 hex digits each.
const FONT_HEX = "00000000000000" + "04040404040004" + "0a0a0a00000000" + "0a0a1f0a1f0a0a" +
  "040f140e051e04" + "18190204081303" +
  "0c12140815120d" + "0c040800000000" + "02040808080402" + "08040202020408" + "0004150e150400" +
  "0004041f040400" +
  "000000000c0408" + "0000001f000000" + "00000000000c0c" + "00010204081000" + "0e11131519110e" +
  "040c040404040e" +
  "0e11010204081f" + "1f02040201110e" + "02060a121f0202" + "1f101e0101110e" + "0608101e11110e" +
  "1f010204080808" +
  "0e11110e11110e" + "0e11110f01020c" + "000c0c000c0c00" + "000c0c000c0408" + "02040810080402" +
  "00001f001f0000" +
  "08040201020408" + "0e110102040004" + "0e11010d15150e" + "0e1111111f1111" + "1e11111e11111e" +
  "0e11101010110e" +
  "1c12111111121c" + "1f10101e10101f" + "1f10101e101010" + "0e11101711110f" + "1111111f111111" +
  "0e04040404040e" +
  "0702020202120c" + "11121418141211" + "1010101010101f" + "111b1515111111" + "11111915131111" +
  "0e11111111110e" +
  "1e11111e101010" + "0e11111115120d" + "1e11111e141211" + "0f10100e01011e" + "1f040404040404" +
  "1111111111110e" +
  "11111111110a04" + "1111111515150a" + "11110a040a1111" + "1111110a040404" + "1f01020408101f" +
  "0e08080808080e" +
  "00100804020100" + "0e02020202020e" + "040a1100000000" + "0000000000001f" + "08040200000000" +
  "00000e010f110f" +
  "1010161911111e" + "00000e1010110e" + "01010d1311110f" + "00000e111f100e" + "0609081c080808" +
  "000f11110f010e" +
  "10101619111111" + "04000c0404040e" + "0200060202120c" + "10101214181412" + "0c04040404040e" +
  "00001a15151111" +
  "00001619111111" + "00000e1111110e" + "00001e111e1010" + "00000d130f0101" + "00001619101010" +
  "00000e100e011e" +
  "08081c08080906" + "0000111111130d" + "00001111110a04" + "0000111115150a" + "0000110a040a11" +
  "000011110f010e" +
  "00001f0204081f" + "02040408040402" + "04040404040404" + "08040402040408" + "00000815020000";

/** Glyph cell: 5x7 pixels plus one column and one row of spacing. */
export const GLYPH_W = 6, GLYPH_H = 8;

/** The 7 row bit masks of a character's glyph; characters outside printable ASCII draw '?'. */
export function glyphRows(ch: string): number[] {
  let code = ch.codePointAt(0) ?? 63;
  if (code < 32 || code > 126) code = 63;
  const at = (code - 32) * 14;
  const rows: number[] = [];
  for (let r = 0; r < 7; r++) rows.push(parseInt(FONT_HEX.slice(at + 2 * r, at + 2 * r + 2), 16));
  return rows;
}

/** Break text into lines of at most `perLine` characters, at spaces where possible. */
export function wrapText(text: string, perLine: number): string[] {
  const lines: string[] = [];
  for (const para of text.split("\n")) {
    let line = "";
    for (const word of para.split(" ")) {
      let w = word;
      while ([...w].length > perLine) {
        if (line) lines.push(line), line = "";
        const chars = [...w];
        lines.push(chars.slice(0, perLine).join(""));
        w = chars.slice(perLine).join("");
      }
      const cand = line ? `${line} ${w}` : w;
      if ([...cand].length <= perLine) line = cand;
      else lines.push(line), line = w;
    }
    lines.push(line);
  }
  return lines;
}

/** Options of {@link captionImage}. */
export interface CaptionOptions {
  /** Pixel size of one font pixel (default 1). */
  scale?: number;
  /** Text value for every channel (default 255). */
  foreground?: number;
  /** Band value for every channel (default 0, the grid padding colour). */
  background?: number;
  /** Pixels around the text (default 2). */
  margin?: number;
  /** Cut the caption after this many lines (default unlimited). */
  maxLines?: number;
}

/** Draw `text` onto `img` at (x, y) in the 5x7 font, one line, clipped to the image. */
export function drawText(
  img: RasterImage,
  text: string,
  x: number,
  y: number,
  scale = 1,
  value = 255,
): void {
  let cx = x;
  for (const ch of text) {
    const rows = glyphRows(ch);
    for (let r = 0; r < 7; r++) {
      for (let col = 0; col < 5; col++) {
        if (!(rows[r] & (0x10 >> col))) continue;
        for (let dy = 0; dy < scale; dy++) {
          for (let dx = 0; dx < scale; dx++) {
            const px = cx + col * scale + dx, py = y + r * scale + dy;
            if (px < 0 || py < 0 || px >= img.width || py >= img.height) continue;
            img.data.fill(
              value,
              (py * img.width + px) * img.channels,
              (py * img.width + px + 1) * img.channels,
            );
          }
        }
      }
    }
    cx += GLYPH_W * scale;
  }
}

/**
 * A copy of `image` with a band below it holding `text` (word-wrapped to the image width,
 * non-ASCII shown as '?').
 */
export function captionImage(
  image: RasterImage,
  text: string,
  opts: CaptionOptions = {},
): RasterImage {
  const scale = opts.scale ?? 1, margin = opts.margin ?? 2;
  const { width, height, channels } = image;
  if (image.data.length !== width * height * channels) {
    throw new Error("captionImage: data length ≠ width*height*channels");
  }
  const perLine = Math.max(1, Math.floor((width - 2 * margin + scale) / (GLYPH_W * scale)));
  let lines = wrapText(text, perLine);
  if (opts.maxLines !== undefined) lines = lines.slice(0, opts.maxLines);
  const band = lines.length * GLYPH_H * scale + 2 * margin - scale;
  const out: RasterImage = {
    data: new Uint8Array(width * (height + band) * channels).fill(opts.background ?? 0),
    width,
    height: height + band,
    channels,
  };
  out.data.set(image.data);
  lines.forEach((line, i) => {
    drawText(
      out,
      line,
      margin,
      height + margin + i * GLYPH_H * scale,
      scale,
      opts.foreground ?? 255,
    );
  });
  return out;
}
