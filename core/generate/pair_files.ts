/**
 * Checks on the pair files of a generation run: a pair `{i}.npy` counts as done only when it has
 * exactly the size and the header a [2, C, H, W] float16 array has, so a resumed run redoes
 * anything truncated or foreign and keeps everything complete.
 *
 * @module
 */

import { encodeNpy } from "../data/npy.ts";

/** The exact header bytes and total size of a pair file of latent shape [C, H, W]. */
export interface PairFileLayout {
  header: Uint8Array;
  bytes: number;
}

/** Layout of a pair file of latent shape `shape` (as numpy and our writer write it). */
export function pairFileLayout(shape: readonly [number, number, number]): PairFileLayout {
  const n = shape[0] * shape[1] * shape[2];
  const probe = encodeNpy({ dtype: "<f2", shape: [2, ...shape], data: new Uint16Array(2 * n) });
  const dataBytes = 2 * n * 2;
  return { header: probe.slice(0, probe.length - dataBytes), bytes: probe.length };
}

/** Whether `path` is a complete pair file with this layout (size and header checked). */
export async function isCompletePair(path: string, layout: PairFileLayout): Promise<boolean> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw new Error(`cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    const stat = await file.stat();
    if (!stat.isFile || stat.size !== layout.bytes) return false;
    const head = new Uint8Array(layout.header.length);
    let got = 0;
    while (got < head.length) {
      const r = await file.read(head.subarray(got));
      if (r === null) return false;
      got += r;
    }
    return head.every((b, k) => b === layout.header[k]);
  } finally {
    file.close();
  }
}
