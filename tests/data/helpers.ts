/** Shared helpers of the data-layer tests. */
import { writeCaptions } from "../../core/data/captions.ts";
import { pairPaths, writePairNpy } from "../../core/data/pair_store.ts";

/** Root of the committed fixture made by make_fixtures.py in the original tool's LMDB format. */
export const ORIGINAL_ROOT = new URL("../fixtures/data/original_root", import.meta.url).pathname;
export const ORIGINAL_CAPTIONS = ["a cat on a mat", "two dogs", "a red bus", "sunset over the sea"];

/** Element j of pair i of the original fixture (z0 then z1, flattened), as make_fixtures.py. */
export function originalValue(i: number, j: number): number {
  return ((j * (i + 1)) % 97) / 16 - 3;
}

/** Float32 -> float16 bits for values exactly representable in half precision. */
export function toHalfBits(x: number): number {
  if (x === 0) return Object.is(x, -0) ? 0x8000 : 0;
  const sign = x < 0 ? 0x8000 : 0;
  const a = Math.abs(x);
  const e = Math.floor(Math.log2(a));
  if (e < -14) return sign | Math.round(a / 2 ** -24);
  const frac = Math.round((a / 2 ** e - 1) * 1024);
  return sign | ((e + 15) << 10) | frac;
}

/** Value j of pair i in the synthetic folders these tests build. */
export function synthValue(tag: number, i: number, j: number): number {
  return (((j + 3 * i + 11 * tag) % 64) - 32) / 8;
}

/** Makes a pair folder root with `n` pairs of shape [C, H, W] and captions `cap{tag}_{i}`. */
export async function makePairRoot(
  root: string,
  n: number,
  shape: [number, number, number] = [4, 2, 3],
  tag = 0,
): Promise<void> {
  const paths = pairPaths(root);
  await Deno.mkdir(paths.images, { recursive: true });
  await Deno.writeTextFile(paths.index, JSON.stringify({ total_nums: n, tag }));
  await writeCaptions(paths.captions, Array.from({ length: n }, (_, i) => `cap${tag}_${i}`));
  const size = shape[0] * shape[1] * shape[2];
  for (let i = 0; i < n; i++) {
    const z0 = Uint16Array.from({ length: size }, (_, j) => toHalfBits(synthValue(tag, i, j)));
    const z1 = Uint16Array.from(
      { length: size },
      (_, j) => toHalfBits(synthValue(tag, i, j + size)),
    );
    await writePairNpy(paths.images, i, shape, z0, z1);
  }
}
