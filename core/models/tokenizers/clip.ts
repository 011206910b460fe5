/**
 * CLIP's BPE tokenizer (Stable Diffusion 1.x/2.x `tokenizer/` folders with `vocab.json` and
 * `merges.txt`), following transformers' `CLIPTokenizer` as it behaves without `ftfy`: BERT-style
 * basic cleaning, lower-casing, CLIP's pre-tokenizer pattern, byte-to-unicode mapping and BPE with
 * a `</w>` end-of-word marker.
 *
 * @module
 */

import { bytesToUnicode } from "./byte_unicode.ts";
import { type FolderConfig, readFolderConfig, type SpecialToken } from "./config.ts";
import { readTextIfExists, type TokenizerFiles } from "./files.ts";
import { splitSpecialTokens } from "./special_split.ts";
import { packRows, type TextTokenizer, type TokenBatch } from "./types.ts";

/** CLIP's pre-tokenizer; transformers compiles it with IGNORECASE. */
const PATTERN =
  /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+/giu;
/** transformers reads at most this many merges (CLIP's 49152-token vocabulary minus bytes). */
const MAX_MERGES = 49152 - 256 - 2;
/** The model's context when no config says otherwise. */
const DEFAULT_MAX_LENGTH = 77;

const tok = (content: string): SpecialToken => ({ content, lstrip: false, rstrip: false });

/** CJK Unified Ideographs blocks that BERT's basic tokenizer isolates with spaces. */
function isCjk(cp: number): boolean {
  return (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) || (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) || (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0x2f800 && cp <= 0x2fa1f);
}

/**
 * transformers' `BasicTokenizer(strip_accents=False, do_split_on_punc=False)` followed by CLIP's
 * join and lower-casing: drop NUL/U+FFFD/control characters, map whitespace to spaces, isolate
 * CJK ideographs, NFC, collapse whitespace, lower-case. (With ftfy installed transformers uses
 * `ftfy.fix_text` instead; that path is not reproduced.)
 */
export function clipBasicClean(text: string): string {
  let out = "";
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (ch === " " || ch === "\t" || ch === "\n" || ch === "\r" || /\p{Zs}/u.test(ch)) out += " ";
    else if (cp === 0 || cp === 0xfffd || /\p{C}/u.test(ch)) continue;
    else if (isCjk(cp)) out += ` ${ch} `;
    else out += ch;
  }
  return out.normalize("NFC").split(/\s+/).filter((w) => w.length > 0)
    .map((w) => w.toLowerCase()).join(" ").toLowerCase();
}

/** Options for {@link ClipTokenizer.fromFolder}. */
export interface ClipOptions {
  /** Override the row length (default: the config's `model_max_length`, else 77). */
  maxLength?: number;
}

/** transformers-compatible slow CLIP tokenizer. */
export class ClipTokenizer implements TextTokenizer {
  /** Always `"clip"`. */
  readonly kind = "clip" as const;
  /** Row length. */
  readonly modelMaxLength: number;
  /** Padding id: `<|endoftext|>` for SD 1.x, `!` (0) for SD 2.x. */
  readonly padId: number;
  /** `<|startoftext|>` id. */
  readonly bosId: number;
  /** `<|endoftext|>` id. */
  readonly eosId: number;
  readonly #vocab: Map<string, number>;
  readonly #ranks: Map<string, number>;
  readonly #unkId: number;
  readonly #specials: SpecialToken[];
  readonly #cache = new Map<string, string[]>();

  /**
   * @param vocab token -> id (vocab.json)
   * @param merges merge pairs in rank order (merges.txt without its header)
   * @param config resolved folder config (special tokens, max length)
   * @param source folder name for error messages
   * @param maxLength row length override
   */
  constructor(
    vocab: Map<string, number>,
    merges: [string, string][],
    config: FolderConfig,
    source: string,
    maxLength?: number,
  ) {
    this.#vocab = vocab;
    // Later duplicates win, like building a dict from the merge list.
    this.#ranks = new Map(merges.map(([a, b], i) => [`${a} ${b}`, i]));
    const id = (role: string): number => {
      const t = config.tokens[role];
      const v = t && vocab.get(t.content);
      if (v === undefined) throw new Error(`${source}: ${role} ${t?.content} is not in vocab.json`);
      return v;
    };
    this.bosId = id("bos_token");
    this.eosId = id("eos_token");
    this.#unkId = id("unk_token");
    this.padId = id("pad_token");
    this.modelMaxLength = maxLength ?? config.modelMaxLength ?? DEFAULT_MAX_LENGTH;
    // transformers splits every special token out of the text first (pad "!" included).
    this.#specials = ["bos_token", "eos_token", "unk_token", "pad_token"]
      .map((r) => config.tokens[r]).filter((t) => t !== undefined);
  }

  /**
   * Load `vocab.json`, `merges.txt` and the optional config files of a tokenizer folder (on disk:
   * `folderFiles(dir)`; `loadTokenizer(dir)` picks the class).
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { folderFiles } from "./folder_files.ts";
   *
   * // the demo teacher's CLIP tokenizer: a 75-token vocabulary, rows of 8 ids
   * const dir = "models/tiny_teacher/tokenizer";
   * const tok = await ClipTokenizer.fromFiles(folderFiles(dir));
   * const { ids, mask } = tok.encode(["a red circle"]); // [bos, a, red, circle, eos, eos, ...]
   * const vocab = JSON.parse(await Deno.readTextFile(`${dir}/vocab.json`));
   * const [bos, eos] = [vocab["<|startoftext|>"], vocab["<|endoftext|>"]];
   * const words = ["a</w>", "red</w>", "circle</w>"].map((w) => vocab[w]);
   * assert.deepEqual([...ids], [bos, ...words, eos, eos, eos, eos]); // padded with eos (SD 1.x)
   * assert.deepEqual([...mask], [1, 1, 1, 1, 1, 0, 0, 0]);
   * ```
   */
  static async fromFiles(files: TokenizerFiles, options: ClipOptions = {}): Promise<ClipTokenizer> {
    const vocabPath = files.path("vocab.json");
    const mergesPath = files.path("merges.txt");
    let vocabJson: unknown;
    try {
      const text = await readTextIfExists(files, "vocab.json");
      if (text === null) throw new Error("no such file");
      vocabJson = JSON.parse(text);
    } catch (e) {
      throw new Error(`${vocabPath}: cannot read vocabulary: ${(e as Error).message}`);
    }
    if (typeof vocabJson !== "object" || vocabJson === null || Array.isArray(vocabJson)) {
      throw new Error(`${vocabPath}: expected an object mapping tokens to ids`);
    }
    const vocab = new Map<string, number>();
    for (const [k, v] of Object.entries(vocabJson)) {
      if (!Number.isInteger(v)) throw new Error(`${vocabPath}: id of ${k} is not an integer`);
      vocab.set(k, v as number);
    }
    let mergesText: string;
    try {
      const text = await readTextIfExists(files, "merges.txt");
      if (text === null) throw new Error("no such file");
      mergesText = text;
    } catch (e) {
      throw new Error(`${mergesPath}: cannot read merges: ${(e as Error).message}`);
    }
    // Like transformers: strip, drop the "#version" header line, keep at most MAX_MERGES.
    const lines = mergesText.trim().split("\n").slice(1, MAX_MERGES + 1);
    const merges = lines.map((line, i): [string, string] => {
      const parts = line.trim().split(/\s+/);
      if (parts.length !== 2) throw new Error(`${mergesPath}: line ${i + 2} is not a merge pair`);
      return [parts[0], parts[1]];
    });
    const config = await readFolderConfig(files, {
      bos_token: tok("<|startoftext|>"),
      eos_token: tok("<|endoftext|>"),
      unk_token: tok("<|endoftext|>"),
      pad_token: tok("<|endoftext|>"),
    });
    return new ClipTokenizer(vocab, merges, config, files.where, options.maxLength);
  }

  /** BPE of one pre-token (already byte-mapped), with `</w>` on its last symbol. */
  bpe(token: string): string[] {
    const cached = this.#cache.get(token);
    if (cached) return cached;
    const chars = [...token];
    let word = [...chars.slice(0, -1), chars[chars.length - 1] + "</w>"];
    while (word.length > 1) {
      let best = Infinity;
      let bestPair = "";
      for (let i = 0; i + 1 < word.length; i++) {
        const r = this.#ranks.get(`${word[i]} ${word[i + 1]}`);
        if (r !== undefined && r < best) {
          best = r;
          bestPair = `${word[i]} ${word[i + 1]}`;
        }
      }
      if (best === Infinity) break;
      const [a, b] = bestPair.split(" ");
      const next: string[] = [];
      for (let i = 0; i < word.length; i++) {
        if (i + 1 < word.length && word[i] === a && word[i + 1] === b) {
          next.push(a + b);
          i++;
        } else next.push(word[i]);
      }
      word = next;
    }
    this.#cache.set(token, word);
    return word;
  }

  /** Content ids of one caption, without bos/eos and without truncation. */
  tokenize(text: string): number[] {
    const ids: number[] = [];
    for (const chunk of splitSpecialTokens(text, this.#specials)) {
      if (chunk.special) {
        ids.push(this.#vocab.get(chunk.token) ?? this.#unkId);
        continue;
      }
      for (const m of clipBasicClean(chunk.text).matchAll(PATTERN)) {
        for (const piece of this.bpe(bytesToUnicode(m[0]))) {
          ids.push(this.#vocab.get(piece) ?? this.#unkId);
        }
      }
    }
    return ids;
  }

  /** Encode captions to `[B, modelMaxLength]` rows: bos, content (truncated), eos, padding. */
  encode(texts: string[]): TokenBatch {
    return packRows(
      texts.map((t) => this.tokenize(t)),
      [this.bosId],
      [this.eosId],
      this.modelMaxLength,
      this.padId,
    );
  }
}
