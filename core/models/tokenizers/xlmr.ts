/**
 * XLM-RoBERTa's slow tokenizer as AltDiffusion uses it (`XLMRobertaTokenizer` over
 * `sentencepiece.bpe.model`): sentencepiece unigram pieces shifted into fairseq's id layout.
 *
 * fairseq layout: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, sentencepiece id k (k >= 1) -> k + 1,
 * sentencepiece's unknown (id 0) -> 3, `<mask>` = number of spm pieces + 1.
 *
 * @module
 */

import { type FolderConfig, readFolderConfig, type SpecialToken } from "./config.ts";
import type { TokenizerFiles } from "./files.ts";
import { SentencePieceProcessor } from "./sentencepiece.ts";
import { parseSentencePieceModel } from "./sentencepiece_model.ts";
import { splitSpecialTokens } from "./special_split.ts";
import { packRows, type TextTokenizer, type TokenBatch } from "./types.ts";

/** fairseq's fixed ids for the first four tokens. */
const FAIRSEQ_IDS: Record<string, number> = { "<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3 };
/** fairseq reserves one extra slot at the front, so spm ids move up by one. */
const FAIRSEQ_OFFSET = 1;
const DEFAULT_MAX_LENGTH = 77;

const tok = (content: string, lstrip = false): SpecialToken => ({ content, lstrip, rstrip: false });

/** Options for {@link XlmRobertaTokenizer.fromFolder}. */
export interface XlmrOptions {
  /** Override the row length (default: the config's `model_max_length`, else 77). */
  maxLength?: number;
}

/** transformers-compatible slow XLM-R tokenizer. */
export class XlmRobertaTokenizer implements TextTokenizer {
  /** Always `"xlm-roberta"`. */
  readonly kind = "xlm-roberta" as const;
  /** Row length. */
  readonly modelMaxLength: number;
  /** `<pad>` id (1). */
  readonly padId: number;
  /** `<s>` id (0). */
  readonly bosId: number;
  /** `</s>` id (2). */
  readonly eosId: number;
  /** The sentencepiece encoder underneath. */
  readonly spm: SentencePieceProcessor;
  readonly #specialIds = new Map<string, number>();
  readonly #specials: SpecialToken[];

  /**
   * @param spm sentencepiece encoder for the model file
   * @param config resolved folder config
   * @param source folder for error messages
   * @param maxLength row length override
   */
  constructor(
    spm: SentencePieceProcessor,
    config: FolderConfig,
    source: string,
    maxLength?: number,
  ) {
    this.spm = spm;
    const maskId = spm.model.pieces.length + FAIRSEQ_OFFSET;
    const roles = ["bos_token", "eos_token", "unk_token", "sep_token", "cls_token", "pad_token"];
    this.#specials = [...roles, "mask_token"].map((r) => config.tokens[r])
      .filter((t) => t !== undefined);
    for (const t of this.#specials) this.#specialIds.set(t.content, this.#tokenToId(t.content));
    this.#specialIds.set("<mask>", maskId);
    const id = (role: string): number => {
      const t = config.tokens[role];
      if (!t) throw new Error(`${source}: no ${role} configured`);
      return this.#specialIds.get(t.content)!;
    };
    this.bosId = id("cls_token");
    this.eosId = id("sep_token");
    this.padId = id("pad_token");
    this.modelMaxLength = maxLength ?? config.modelMaxLength ?? DEFAULT_MAX_LENGTH;
  }

  /** transformers' `_convert_token_to_id`: fairseq specials, then spm id + 1, unknown -> 3. */
  #tokenToId(token: string): number {
    if (token in FAIRSEQ_IDS) return FAIRSEQ_IDS[token];
    if (token === "<mask>") return this.spm.model.pieces.length + FAIRSEQ_OFFSET;
    const spmId = this.spm.model.pieces.findIndex((p) => p.piece === token);
    return spmId > 0 ? spmId + FAIRSEQ_OFFSET : FAIRSEQ_IDS["<unk>"];
  }

  /**
   * Load `sentencepiece.bpe.model` and the optional config files of a tokenizer folder (on disk:
   * `folderFiles(dir)`).
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { folderFiles } from "./folder_files.ts";
   *
   * // a small sentencepiece model laid out as AltDiffusion's tokenizer folder (77 ids per row)
   * const tok = await XlmRobertaTokenizer.fromFiles(folderFiles("tests/fixtures/tokenizers/xlmr"));
   * const { ids, mask } = tok.encode(["一只可爱的小猫在草地上玩耍"]); // <s>=0 ... </s>=2 <pad>=1 ...
   * // what sentencepiece + transformers' XLMRobertaTokenizer give for this model
   * const want = [0, 401, 180, 144, 126, 84, 109, 193, 110, 82, 118, 127, 149, 2];
   * assert.deepEqual([...ids], [...want, ...Array(77 - want.length).fill(1)]);
   * assert.equal(mask.reduce((a, b) => a + b), want.length);
   * ```
   */
  static async fromFiles(
    files: TokenizerFiles,
    options: XlmrOptions = {},
  ): Promise<XlmRobertaTokenizer> {
    const path = files.path("sentencepiece.bpe.model");
    let bytes: Uint8Array | null;
    try {
      bytes = await files.read("sentencepiece.bpe.model");
      if (bytes === null) throw new Error("no such file");
    } catch (e) {
      throw new Error(`${path}: cannot read sentencepiece model: ${(e as Error).message}`);
    }
    const spm = new SentencePieceProcessor(parseSentencePieceModel(bytes, path), path);
    const config = await readFolderConfig(files, {
      bos_token: tok("<s>"),
      eos_token: tok("</s>"),
      sep_token: tok("</s>"),
      cls_token: tok("<s>"),
      unk_token: tok("<unk>"),
      pad_token: tok("<pad>"),
      // XLMRobertaTokenizer makes <mask> eat the whitespace before it.
      mask_token: tok("<mask>", true),
    });
    return new XlmRobertaTokenizer(spm, config, files.where, options.maxLength);
  }

  /** Content ids of one caption (fairseq layout), without `<s>`/`</s>` and not truncated. */
  tokenize(text: string): number[] {
    const ids: number[] = [];
    for (const chunk of splitSpecialTokens(text, this.#specials)) {
      if (chunk.special) {
        ids.push(this.#specialIds.get(chunk.token)!);
        continue;
      }
      for (const id of this.spm.encode(chunk.text).ids) {
        ids.push(id > 0 ? id + FAIRSEQ_OFFSET : FAIRSEQ_IDS["<unk>"]);
      }
    }
    return ids;
  }

  /** Encode captions to `[B, modelMaxLength]` rows: `<s>`, content (truncated), `</s>`, `<pad>`. */
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
