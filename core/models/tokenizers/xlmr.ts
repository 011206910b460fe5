/**
 * XLM-RoBERTa's slow tokenizer as AltDiffusion uses it (`XLMRobertaTokenizer` over
 * `sentencepiece.bpe.model`): sentencepiece unigram pieces shifted into fairseq's id layout.
 *
 * fairseq layout: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, sentencepiece id k (k >= 1) -> k + 1,
 * sentencepiece's unknown (id 0) -> 3, `<mask>` = number of spm pieces + 1.
 *
 * @module
 */

import { join } from "node:path";
import { type FolderConfig, readFolderConfig, type SpecialToken } from "./config.ts";
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
   * Load `sentencepiece.bpe.model` and the optional config files from a tokenizer folder.
   *
   * @example
   * ```ts
   * const tok = await XlmRobertaTokenizer.fromFolder("models/AltDiffusion/tokenizer");
   * const { ids, mask } = tok.encode(["一只可爱的猫"]); // ids: [0, ..., 2, 1, 1, ...]
   * ```
   */
  static async fromFolder(folder: string, options: XlmrOptions = {}): Promise<XlmRobertaTokenizer> {
    const path = join(folder, "sentencepiece.bpe.model");
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(path);
    } catch (e) {
      throw new Error(`${path}: cannot read sentencepiece model: ${(e as Error).message}`);
    }
    const spm = new SentencePieceProcessor(parseSentencePieceModel(bytes, path), path);
    const config = await readFolderConfig(folder, {
      bos_token: tok("<s>"),
      eos_token: tok("</s>"),
      sep_token: tok("</s>"),
      cls_token: tok("<s>"),
      unk_token: tok("<unk>"),
      pad_token: tok("<pad>"),
      // XLMRobertaTokenizer makes <mask> eat the whitespace before it.
      mask_token: tok("<mask>", true),
    });
    return new XlmRobertaTokenizer(spm, config, folder, options.maxLength);
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
