/**
 * {@link TokenizerFiles} over a directory on disk (Deno).
 *
 * @module
 */

import { join } from "node:path";
import type { TokenizerFiles } from "./files.ts";

/** The files of tokenizer folder `folder`; a missing file reads as null. */
export function folderFiles(folder: string): TokenizerFiles {
  return {
    where: folder,
    path: (name) => join(folder, name),
    read: async (name) => {
      const path = join(folder, name);
      try {
        return await Deno.readFile(path);
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return null;
        throw new Error(`${path}: cannot read: ${(e as Error).message}`);
      }
    },
  };
}
