/**
 * Tokenizers stored as a single `tokenizer.json`, run by `@huggingface/tokenizers` (pure JS), with
 * transformers' `padding="max_length", truncation=True` applied here because that library has no
 * padding or truncation of its own.
 *
 * The library approximates the `Precompiled` (sentencepiece charsmap) normalizer with
 * `String.normalize("NFKC")`; this wrapper swaps in the exact charsmap lookup.
 *
 * @module
 */

import { Tokenizer } from "@huggingface/tokenizers";
import { decodeBase64 } from "./base64.ts";
import { applyCharsmap, PrecompiledCharsmap } from "./charsmap.ts";
import { readJsonIfExists } from "./config.ts";
import type { TokenizerFiles } from "./files.ts";
import { packRows, type TextTokenizer, type TokenBatch } from "./types.ts";

const DEFAULT_MAX_LENGTH = 77;

/** Options for {@link JsonTokenizer.fromFolder}. */
export interface JsonTokenizerOptions {
  /** Override the row length (default: `model_max_length`, else tokenizer.json's, else 77). */
  maxLength?: number;
}

interface NormalizerLike {
  config?: { type?: string; precompiled_charsmap?: string };
  normalizers?: (NormalizerLike | null)[];
  normalize?: (text: string) => string;
}

/** Replace every `Precompiled` normalizer in the (possibly nested) sequence with the exact one. */
function patchPrecompiled(n: NormalizerLike | null | undefined, source: string): void {
  if (!n) return;
  if (n.config?.type === "Precompiled" && typeof n.config.precompiled_charsmap === "string") {
    const map = new PrecompiledCharsmap(decodeBase64(n.config.precompiled_charsmap), source);
    n.normalize = (text: string) => applyCharsmap(text, map);
  }
  for (const child of n.normalizers ?? []) patchPrecompiled(child, source);
}

function tokenContent(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") {
    return (v as { content: string }).content;
  }
  return undefined;
}

/** A `tokenizer.json` tokenizer producing fixed-length rows. */
export class JsonTokenizer implements TextTokenizer {
  /** Always `"tokenizer.json"`. */
  readonly kind = "tokenizer.json" as const;
  /** Row length. */
  readonly modelMaxLength: number;
  /** Padding id. */
  readonly padId: number;
  /** The underlying `@huggingface/tokenizers` instance. */
  readonly tokenizer: Tokenizer;
  readonly #specialIds: Set<number>;

  /**
   * @param tokenizer a constructed library tokenizer
   * @param padId padding id
   * @param maxLength row length
   * @param specialIds ids of special added tokens (to find the post-processor's template)
   */
  constructor(tokenizer: Tokenizer, padId: number, maxLength: number, specialIds: Set<number>) {
    this.tokenizer = tokenizer;
    this.padId = padId;
    this.modelMaxLength = maxLength;
    this.#specialIds = specialIds;
  }

  /**
   * Load `tokenizer.json` (and the optional `tokenizer_config.json`) of a tokenizer folder (on
   * disk: `folderFiles(dir)`).
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { folderFiles } from "./folder_files.ts";
   * import { XlmRobertaTokenizer } from "./xlmr.ts";
   *
   * // the same small XLM-R model as tokenizer.json (xlmr_fast) and as sentencepiece files (xlmr)
   * const fixtures = "tests/fixtures/tokenizers";
   * const tok = await JsonTokenizer.fromFiles(folderFiles(`${fixtures}/xlmr_fast`));
   * const slow = await XlmRobertaTokenizer.fromFiles(folderFiles(`${fixtures}/xlmr`));
   * const { ids } = tok.encode(["a horse standing by a castle"]);
   * assert.deepEqual(ids, slow.encode(["a horse standing by a castle"]).ids);
   * ```
   */
  static async fromFiles(files: TokenizerFiles, options: JsonTokenizerOptions = {}) {
    const path = files.path("tokenizer.json");
    const json = await readJsonIfExists(files, "tokenizer.json");
    if (!json) throw new Error(`${path}: not found`);
    const config = (await readJsonIfExists(files, "tokenizer_config.json")) ?? {};
    const map = (await readJsonIfExists(files, "special_tokens_map.json")) ?? {};
    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer(json, config);
    } catch (e) {
      throw new Error(`${path}: unsupported tokenizer.json: ${(e as Error).message}`);
    }
    patchPrecompiled(tokenizer.normalizer as unknown as NormalizerLike, path);
    const added = Array.isArray(json.added_tokens) ? json.added_tokens : [];
    const specialIds = new Set<number>(
      added.filter((t: { special?: boolean }) => t.special).map((t: { id: number }) => t.id),
    );
    const padding = json.padding as { pad_id?: number } | null | undefined;
    const padName = tokenContent(map.pad_token) ?? tokenContent(config.pad_token);
    const padId = padName !== undefined ? tokenizer.token_to_id(padName) : padding?.pad_id;
    if (padId === undefined) {
      throw new Error(`${path}: no pad token (set pad_token in tokenizer_config.json)`);
    }
    const truncation = json.truncation as { max_length?: number } | null | undefined;
    const configMax = typeof config.model_max_length === "number" &&
        config.model_max_length < 1e12
      ? config.model_max_length
      : undefined;
    const maxLength = options.maxLength ?? configMax ?? truncation?.max_length ??
      DEFAULT_MAX_LENGTH;
    return new JsonTokenizer(tokenizer, padId, maxLength, specialIds);
  }

  /** Split one caption's full encoding into post-processor prefix, content and suffix. */
  split(text: string): { prefix: number[]; content: number[]; suffix: number[] } {
    const full = this.tokenizer.encode(text).ids;
    const content = this.tokenizer.encode(text, { add_special_tokens: false }).ids;
    const extra = full.length - content.length;
    let fallback = -1;
    for (let k = 0; k <= extra; k++) {
      if (!content.every((id, i) => full[k + i] === id)) continue;
      const prefix = full.slice(0, k);
      const suffix = full.slice(k + content.length);
      if ([...prefix, ...suffix].every((id) => this.#specialIds.has(id))) {
        return { prefix, content, suffix };
      }
      if (fallback < 0) fallback = k;
    }
    if (fallback < 0) throw new Error("tokenizer.json post-processor does not wrap the content");
    return {
      prefix: full.slice(0, fallback),
      content,
      suffix: full.slice(fallback + content.length),
    };
  }

  /** Encode captions to `[B, modelMaxLength]` rows, truncating content so the specials survive. */
  encode(texts: string[]): TokenBatch {
    const rows = texts.map((t) => this.split(t));
    const ids = new Int32Array(texts.length * this.modelMaxLength);
    const mask = new Int32Array(texts.length * this.modelMaxLength);
    rows.forEach((r, i) => {
      const one = packRows([r.content], r.prefix, r.suffix, this.modelMaxLength, this.padId);
      ids.set(one.ids, i * this.modelMaxLength);
      mask.set(one.mask, i * this.modelMaxLength);
    });
    return { ids, mask, length: this.modelMaxLength };
  }
}
