/**
 * Does a picture match its caption? A checker from pixel statistics for the shapes data set
 * (shapes.ts): it finds the object as the pixels far from the grey ground, names its colour (the
 * palette colour nearest to the object's mean colour), its shape (how much of its bounding box it
 * fills, and whether its mass sits low as a triangle's does) and its position (the centroid's
 * column), and compares them with what the caption asks for.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { shapeSample } from "./shapes.ts";
 *
 * const s = shapeSample(1, 0);
 * assert.equal(checkImage(s.pixels, s.caption).match, true);
 * const other = s.caption.includes("circle") ? "a red square" : "a red circle";
 * assert.equal(checkImage(s.pixels, other).match, false); // another shape fails
 * ```
 *
 * @module
 */

import {
  BACKGROUND,
  CHANNELS,
  COLOR_NAMES,
  COLORS,
  IMAGE_SIZE,
  parseCaption,
  type Position,
  type Shape,
} from "./shapes.ts";

/** What the checker sees in a picture. */
export interface Seen {
  color: string | null;
  shape: Shape | null;
  /** "left" / "right" when the centroid is clearly on that side, else null (middle). */
  position: Position | null;
  /** Pixels counted as object (coverage-weighted). */
  area: number;
  fill: number;
  /** Vertical skewness of the object's mass (about -0.57 for a triangle, 0 for the others). */
  skew: number;
  cx: number;
  cy: number;
}

/** The verdict on one picture. */
export interface CheckResult {
  seen: Seen;
  colorOk: boolean;
  shapeOk: boolean;
  positionOk: boolean;
  /** All three. */
  match: boolean;
}

/** Minimum object size (coverage-weighted pixels) to count as a shape at all. */
const MIN_AREA = 6;
/** Largest share of the picture an object may cover (the data set's biggest square: ~30%). */
const MAX_AREA_FRACTION = 0.55;

/**
 * Reads the object in a [3, H, W] picture with values in [-1, 1]. Coverage of a pixel is its
 * distance from the ground relative to a saturated colour's (sqrt 3), clamped to [0, 1].
 */
export function analyse(pixels: ArrayLike<number>, size: number): Seen {
  const plane = size * size;
  if (pixels.length !== CHANNELS * plane) {
    throw new Error(`checker: expected ${CHANNELS}x${size}x${size} values, got ${pixels.length}`);
  }
  const cov = new Float64Array(plane);
  const mean = [0, 0, 0];
  let area = 0;
  let sx = 0;
  let sy = 0;
  for (let j = 0; j < plane; j++) {
    let d2 = 0;
    for (let c = 0; c < CHANNELS; c++) d2 += (pixels[c * plane + j] - BACKGROUND[c]) ** 2;
    const v = Math.min(1, Math.max(0, (Math.sqrt(d2) / Math.sqrt(3) - 0.15) / 0.7));
    cov[j] = v;
    if (v <= 0) continue;
    area += v;
    sx += v * (j % size);
    sy += v * Math.floor(j / size);
    for (let c = 0; c < CHANNELS; c++) mean[c] += v * pixels[c * plane + j];
  }
  const none: Seen = {
    color: null,
    shape: null,
    position: null,
    area,
    fill: 0,
    skew: 0,
    cx: NaN,
    cy: NaN,
  };
  // Nothing, or noise / a smear over most of the picture: no object to name.
  if (area < MIN_AREA || area > MAX_AREA_FRACTION * plane) return none;
  const cx = sx / area + 0.5;
  const cy = sy / area + 0.5;
  for (let c = 0; c < CHANNELS; c++) mean[c] /= area;
  // Colour: the nearest palette colour to the mean object colour, direction from the ground.
  let best = Infinity;
  let color: string | null = null;
  for (const name of COLOR_NAMES) {
    const col = COLORS[name];
    let d = 0;
    for (let c = 0; c < CHANNELS; c++) d += (mean[c] - col[c]) ** 2;
    if (d < best) {
      best = d;
      color = name;
    }
  }
  // Extent: per column (row) the largest coverage in it, summed: the width (height) of the object
  // with partly covered edge columns counted in part.
  let width = 0;
  let height = 0;
  for (let x = 0; x < size; x++) {
    let m = 0;
    for (let y = 0; y < size; y++) m = Math.max(m, cov[y * size + x]);
    width += m;
  }
  let m2 = 0;
  let m3 = 0;
  for (let y = 0; y < size; y++) {
    let m = 0;
    for (let x = 0; x < size; x++) {
      const v = cov[y * size + x];
      m = Math.max(m, v);
      const d = y + 0.5 - cy;
      m2 += v * d * d;
      m3 += v * d * d * d;
    }
    height += m;
  }
  const fill = area / Math.max(1e-6, width * height);
  // Vertical skewness: a triangle standing on its base has its mass low (negative skew).
  const skew = m3 / area / Math.max(1e-9, (m2 / area) ** 1.5);
  let shape: Shape;
  if (fill < 0.7 || (fill < 0.78 && skew < -0.25)) shape = "triangle";
  else if (fill > 0.92) shape = "square";
  else shape = "circle";
  const position: Position | null = cx < size * 0.42 ? "left" : cx > size * 0.58 ? "right" : null;
  return { color, shape, position, area, fill, skew, cx, cy };
}

/**
 * Scores a [3, H, W] picture in [-1, 1] against a data-set caption. A caption with a position
 * needs the object on that side; one without needs it away from both sides' extremes... only
 * colour and shape are checked then.
 */
export function checkImage(
  pixels: ArrayLike<number>,
  caption: string,
  size = IMAGE_SIZE,
): CheckResult {
  const want = parseCaption(caption);
  if (!want) throw new Error(`checker: "${caption}" is not a caption of the shapes data set`);
  const seen = analyse(pixels, size);
  const colorOk = seen.color === want.color;
  const shapeOk = seen.shape === want.shape;
  const positionOk = want.position === null ? seen.shape !== null : seen.position === want.position;
  return { seen, colorOk, shapeOk, positionOk, match: colorOk && shapeOk && positionOk };
}

/** Pixels in [0, 1] (an image file's scale) to [-1, 1]. */
export function unitToSigned(x: ArrayLike<number>): Float32Array {
  return Float32Array.from(x, (v) => v * 2 - 1);
}

/** Accuracy (fraction of full matches) and per-attribute rates over pictures. */
export interface CheckSummary {
  accuracy: number;
  color: number;
  shape: number;
  position: number;
  count: number;
}

/** Scores many pictures ([3, H, W] in [-1, 1] each) against their captions. */
export function checkAll(
  images: readonly ArrayLike<number>[],
  captions: readonly string[],
  size = IMAGE_SIZE,
): { results: CheckResult[]; summary: CheckSummary } {
  if (images.length !== captions.length) {
    throw new Error(`checker: ${images.length} images for ${captions.length} captions`);
  }
  const results = images.map((im, i) => checkImage(im, captions[i], size));
  const n = Math.max(1, results.length);
  const rate = (f: (r: CheckResult) => boolean) => results.filter(f).length / n;
  return {
    results,
    summary: {
      accuracy: rate((r) => r.match),
      color: rate((r) => r.colorOk),
      shape: rate((r) => r.shapeOk),
      position: rate((r) => r.positionOk),
      count: results.length,
    },
  };
}
