/**
 * Choosing a tokenizer implementation for a tokenizer folder's files, wherever they live (see
 * files.ts); `loadTokenizer(dir)` in load.ts is the same for a folder on disk.
 *
 * @module
 */

import { ClipTokenizer } from "./clip.ts";
import type { TokenizerFiles } from "./files.ts";
import { JsonTokenizer } from "./hf_json.ts";
import type { TextTokenizer } from "./types.ts";
import { XlmRobertaTokenizer } from "./xlmr.ts";

/** Options for {@link loadTokenizerFrom}. */
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

/** Each file read once: probing for a file and then loading it costs one read (one fetch). */
function readOnce(files: TokenizerFiles): TokenizerFiles {
  const seen = new Map<string, Promise<Uint8Array | null>>();
  return {
    where: files.where,
    path: (name) => files.path(name),
    read: (name) => {
      let p = seen.get(name);
      if (!p) seen.set(name, p = files.read(name));
      return p;
    },
  };
}

/**
 * Load the tokenizer of a folder's files: `tokenizer.json` via `@huggingface/tokenizers`, or the
 * slow XLM-R (`sentencepiece.bpe.model`) or CLIP (`vocab.json` + `merges.txt`) files.
 *
 * @throws Error naming the folder when it holds none of these
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { memoryFiles } from "./files.ts";
 *
 * // files fetched from anywhere (a web server, a zip); here read from the demo teacher's folder
 * const dir = "models/tiny_teacher/tokenizer";
 * const names = ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"];
 * const contents: Record<string, Uint8Array> = {};
 * for (const name of names) contents[name] = await Deno.readFile(`${dir}/${name}`);
 * const tok = await loadTokenizerFrom(memoryFiles(dir, contents));
 * const { ids, mask, length } = tok.encode(["a red circle"]);
 * assert.equal(tok.kind, "clip");
 * assert.equal(length, 8);
 * assert.deepEqual([...mask], [1, 1, 1, 1, 1, 0, 0, 0]);
 * assert.equal(ids[0], 73); // <|startoftext|> in this vocab.json
 * ```
 */
export async function loadTokenizerFrom(
  source: TokenizerFiles,
  options: LoadTokenizerOptions = {},
): Promise<TextTokenizer> {
  const files = readOnce(source);
  const opts = { maxLength: options.maxLength };
  const exists = async (name: string) => (await files.read(name)) !== null;
  const hasJson = await exists("tokenizer.json");
  if (hasJson && options.prefer === "json") return await JsonTokenizer.fromFiles(files, opts);
  if (await exists("sentencepiece.bpe.model")) {
    return await XlmRobertaTokenizer.fromFiles(files, opts);
  }
  if (await exists("vocab.json") && await exists("merges.txt")) {
    return await ClipTokenizer.fromFiles(files, opts);
  }
  if (hasJson) return await JsonTokenizer.fromFiles(files, opts);
  throw new Error(
    `${files.where}: no tokenizer found (need tokenizer.json, sentencepiece.bpe.model, ` +
      `or vocab.json + merges.txt)`,
  );
}
