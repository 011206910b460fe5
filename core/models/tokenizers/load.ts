/**
 * Choosing a tokenizer implementation for a diffusers `tokenizer/` folder on disk.
 *
 * @module
 */

import { folderFiles } from "./folder_files.ts";
import { loadTokenizerFrom, type LoadTokenizerOptions } from "./from_files.ts";
import type { TextTokenizer } from "./types.ts";

export type { LoadTokenizerOptions } from "./from_files.ts";

/**
 * Load the tokenizer in `folder`: `tokenizer.json` via `@huggingface/tokenizers`, or the slow
 * XLM-R (`sentencepiece.bpe.model`) or CLIP (`vocab.json` + `merges.txt`) files (see
 * {@link loadTokenizerFrom}, which does the same for files elsewhere, e.g. on a web server).
 *
 * @throws Error naming the folder when it holds none of these
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * const tok = await loadTokenizer("models/tiny_teacher/tokenizer"); // vocab.json + merges.txt
 * assert.equal(tok.kind, "clip");
 * const { ids, mask, length } = tok.encode(["a red circle", "a blue square on the left"]);
 * assert.equal(length, 8); // model_max_length of its tokenizer_config.json (SD: 77)
 * assert.equal(ids.length, 2 * length);
 * assert.deepEqual([...mask.subarray(length)], [1, 1, 1, 1, 1, 1, 1, 1]); // bos + 6 words + eos
 * ```
 */
export function loadTokenizer(
  folder: string,
  options: LoadTokenizerOptions = {},
): Promise<TextTokenizer> {
  return loadTokenizerFrom(folderFiles(folder), options);
}
