/**
 * The tiny teacher's training data: a procedurally generated, seeded data set of captioned
 * pictures of one coloured shape ("a red circle", "a blue square on the left") on a grey ground,
 * 3x12x12 pixels in [-1, 1] (the UNet's pixel space; no VAE).
 *
 * Everything is a pure function of (seed, index): sample i of a seed is the same picture and
 * caption on every machine, whatever else was drawn before it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * const s = shapeSample(2333, 0); // { caption, pixels: [3, 12, 12] in [-1, 1], spec }
 * assert.equal(s.pixels.length, CHANNELS * IMAGE_SIZE * IMAGE_SIZE);
 * assert.equal(captionOf(s.spec), s.caption); // e.g. "a cyan triangle on the left"
 * assert.deepEqual(shapeSample(2333, 0), s); // a pure function of (seed, index)
 * ```
 *
 * @module
 */

import { CounterRng } from "../train/rng.ts";

/** Image side in pixels. */
export const IMAGE_SIZE = 12;
/** Colour channels. */
export const CHANNELS = 3;

/** Colour names and their RGB values in [-1, 1] (saturated, so any codec keeps them apart). */
export const COLORS: Readonly<Record<string, readonly [number, number, number]>> = {
  red: [1, -1, -1],
  green: [-1, 1, -1],
  blue: [-1, -1, 1],
  yellow: [1, 1, -1],
  magenta: [1, -1, 1],
  cyan: [-1, 1, 1],
};
/** The ground colour (mid grey). */
export const BACKGROUND: readonly [number, number, number] = [0, 0, 0];

export const COLOR_NAMES: readonly string[] = Object.keys(COLORS);
export const SHAPES = ["circle", "square", "triangle"] as const;
export type Shape = typeof SHAPES[number];
/** Where the caption puts the shape; null: the caption says nothing (centre region). */
export const POSITIONS = ["left", "right"] as const;
export type Position = typeof POSITIONS[number];

/** What a picture shows. */
export interface ShapeSpec {
  color: string;
  shape: Shape;
  position: Position | null;
  /** Centre (pixels, 0 = left/top edge). */
  cx: number;
  cy: number;
  /** Half size (pixels). */
  r: number;
}

/** A caption for a spec: "a red circle" or "a red circle on the left". */
export function captionOf(
  spec: Pick<ShapeSpec, "color" | "shape" | "position">,
): string {
  const base = `a ${spec.color} ${spec.shape}`;
  return spec.position ? `${base} on the ${spec.position}` : base;
}

/** Every caption the data set can hold, in a fixed order. */
export function allCaptions(): string[] {
  const out: string[] = [];
  for (const color of COLOR_NAMES) {
    for (const shape of SHAPES) {
      for (const position of [null, ...POSITIONS]) out.push(captionOf({ color, shape, position }));
    }
  }
  return out;
}

/** Parses a data-set caption back into what it asks for; null when it is not one. */
export function parseCaption(
  caption: string,
): { color: string; shape: Shape; position: Position | null } | null {
  const m = /^a (\w+) (\w+)(?: on the (\w+))?$/.exec(caption.trim().toLowerCase());
  if (!m) return null;
  const [, color, shape, position] = m;
  if (!COLOR_NAMES.includes(color)) return null;
  if (!(SHAPES as readonly string[]).includes(shape)) return null;
  if (position !== undefined && !(POSITIONS as readonly string[]).includes(position)) return null;
  return { color, shape: shape as Shape, position: (position as Position | undefined) ?? null };
}

/** Centre ranges (pixels) of each position. */
const CENTRE: Record<"left" | "right" | "middle", [number, number]> = {
  left: [3.3, 4.1],
  right: [7.9, 8.7],
  middle: [5, 7],
};

/** The spec of sample `i` of `seed`. */
export function shapeSpec(seed: number, i: number): ShapeSpec {
  const rng = new CounterRng(seed, 0x5a4e);
  const base = i * 8;
  const color = COLOR_NAMES[rng.intAt(base, COLOR_NAMES.length)];
  const shape = SHAPES[rng.intAt(base + 1, SHAPES.length)];
  const p = rng.intAt(base + 2, POSITIONS.length + 1);
  const position = p === 0 ? null : POSITIONS[p - 1];
  const range = (k: "left" | "right" | "middle", u: number) =>
    CENTRE[k][0] + u * (CENTRE[k][1] - CENTRE[k][0]);
  const cx = range(position ?? "middle", rng.uniformAt(base + 3));
  const cy = range("middle", rng.uniformAt(base + 4));
  const r = 2.5 + 0.7 * rng.uniformAt(base + 5);
  return { color, shape, position, cx, cy, r };
}

/** Whether point (x, y) lies inside the shape. */
function inside(spec: ShapeSpec, x: number, y: number): boolean {
  const dx = x - spec.cx;
  const dy = y - spec.cy;
  const r = spec.r;
  switch (spec.shape) {
    case "circle":
      return dx * dx + dy * dy <= r * r;
    case "square": {
      const h = r * 0.9;
      return Math.abs(dx) <= h && Math.abs(dy) <= h;
    }
    case "triangle": {
      // Apex up at (cx, cy - r), base at y = cy + r, half base r.
      const top = -r;
      const bottom = r;
      if (dy < top || dy > bottom) return false;
      const half = r * (dy - top) / (bottom - top);
      return Math.abs(dx) <= half;
    }
  }
}

/** Renders a spec as [3, 12, 12] pixels in [-1, 1] (4x4 supersampled edges). */
export function renderShape(spec: ShapeSpec, size = IMAGE_SIZE): Float32Array {
  const out = new Float32Array(CHANNELS * size * size);
  const col = COLORS[spec.color];
  const S = 4;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      let hit = 0;
      for (let sy = 0; sy < S; sy++) {
        for (let sx = 0; sx < S; sx++) {
          if (inside(spec, x + (sx + 0.5) / S, y + (sy + 0.5) / S)) hit++;
        }
      }
      const c = hit / (S * S);
      for (let ch = 0; ch < CHANNELS; ch++) {
        out[ch * size * size + y * size + x] = BACKGROUND[ch] * (1 - c) + col[ch] * c;
      }
    }
  }
  return out;
}

/** One data-set sample. */
export interface ShapeSample {
  caption: string;
  /** [3, 12, 12] in [-1, 1]. */
  pixels: Float32Array;
  spec: ShapeSpec;
}

/** Sample `i` of the data set of `seed`. */
export function shapeSample(seed: number, i: number): ShapeSample {
  const spec = shapeSpec(seed, i);
  return { caption: captionOf(spec), pixels: renderShape(spec), spec };
}
