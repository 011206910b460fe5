/**
 * Choosing a tokenizer implementation for a diffusers `tokenizer/` folder.
 *
 * @module
 */

import { join } from "node:path";
import { ClipTokenizer } from "./clip.ts";
import { JsonTokenizer } from "./hf_json.ts";
import type { TextTokenizer } from "./types.ts";
import { XlmRobertaTokenizer } from "./xlmr.ts";

/** Options for {@link loadTokenizer}. */
export interface LoadTokenizerOptions {
  /**
   * `"slow"` (default) prefers the slow files (`sentencepiece.bpe.model` / `vocab.json` +
   * `merges.txt`), which is what diffusers pipelines that name `CLIPTokenizer` /
   * `XLMRobertaTokenizer` in `model_index.json` run (fast and slow disagree on rare text);
   * `"json"` uses `tokenizer.json` when present. A folder with only one kind uses that one.
   */
  prefer?: "json" | "slow";
  /** Override the row length (default: `model_max_length` from the config, else 77). */
  maxLength?: number;
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw new Error(`${path}: cannot stat: ${(e as Error).message}`);
  }
}

/**
 * Load the tokenizer in `folder`: `tokenizer.json` via `@huggingface/tokenizers`, or the slow
 * XLM-R (`sentencepiece.bpe.model`) or CLIP (`vocab.json` + `merges.txt`) files.
 *
 * @throws Error naming the folder when it holds none of these
 * @example
 * ```ts
 * const tok = await loadTokenizer("models/sd15/tokenizer");
 * const { ids, mask, length } = tok.encode(["a photo of a cat", "一只猫"]); // length 77
 * ```
 */
export async function loadTokenizer(
  folder: string,
  options: LoadTokenizerOptions = {},
): Promise<TextTokenizer> {
  const opts = { maxLength: options.maxLength };
  const hasJson = await exists(join(folder, "tokenizer.json"));
  if (hasJson && options.prefer === "json") return await JsonTokenizer.fromFolder(folder, opts);
  if (await exists(join(folder, "sentencepiece.bpe.model"))) {
    return await XlmRobertaTokenizer.fromFolder(folder, opts);
  }
  if (await exists(join(folder, "vocab.json")) && await exists(join(folder, "merges.txt"))) {
    return await ClipTokenizer.fromFolder(folder, opts);
  }
  if (hasJson) return await JsonTokenizer.fromFolder(folder, opts);
  throw new Error(
    `${folder}: no tokenizer found (need tokenizer.json, sentencepiece.bpe.model, ` +
      `or vocab.json + merges.txt)`,
  );
}
