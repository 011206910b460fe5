/**
 * Text tokenizers for the diffusion text encoders: CLIP (Stable Diffusion) and XLM-R
 * (AltDiffusion), giving transformers' ids padded/truncated to `model_max_length`.
 *
 * @module
 */

export type { TextTokenizer, TokenBatch, TokenizerKind } from "./types.ts";
export { packRows } from "./types.ts";
export { loadTokenizer, type LoadTokenizerOptions } from "./load.ts";
export { loadTokenizerFrom } from "./from_files.ts";
export { memoryFiles, type TokenizerFiles } from "./files.ts";
export { folderFiles } from "./folder_files.ts";
export { clipBasicClean, type ClipOptions, ClipTokenizer } from "./clip.ts";
export { XlmRobertaTokenizer, type XlmrOptions } from "./xlmr.ts";
export { JsonTokenizer, type JsonTokenizerOptions } from "./hf_json.ts";
export { SentencePieceProcessor, type SpmEncoding } from "./sentencepiece.ts";
export {
  parseSentencePieceModel,
  PieceType,
  type SentencePiece,
  type SentencePieceModel,
} from "./sentencepiece_model.ts";
export { applyCharsmap, PrecompiledCharsmap } from "./charsmap.ts";
export { readFields } from "./protobuf.ts";
