/**
 * sentencepiece encoding for unigram models: the normalizer (precompiled charsmap, dummy prefix,
 * whitespace collapsing, U+2581 escaping) followed by the Viterbi best segmentation, following the
 * C++ library's `Normalizer::Normalize` and `unigram::Model::EncodeOptimized` semantics.
 *
 * @module
 */

import { PrecompiledCharsmap } from "./charsmap.ts";
import { PieceType, type SentencePieceModel } from "./sentencepiece_model.ts";

/** U+2581 LOWER ONE EIGHTH BLOCK, sentencepiece's visible space. */
export const SPACE_SYMBOL = "\u2581";
const SPACE_BYTES = new TextEncoder().encode(SPACE_SYMBOL);
/** sentencepiece penalises unknown characters by this much below the worst piece score. */
const UNK_PENALTY = 10;
/** FLT_MIN: sentencepiece starts its max-score search from it, so user symbols score ~ -0.1. */
const FLT_MIN = 1.1754943508222875e-38;

/** Growable byte buffer. */
class Bytes {
  buf = new Uint8Array(64);
  length = 0;
  push(data: Uint8Array | number): void {
    const n = typeof data === "number" ? 1 : data.length;
    if (this.length + n > this.buf.length) {
      const next = new Uint8Array(Math.max(this.buf.length * 2, this.length + n));
      next.set(this.buf.subarray(0, this.length));
      this.buf = next;
    }
    if (typeof data === "number") this.buf[this.length] = data;
    else this.buf.set(data, this.length);
    this.length += n;
  }
  endsWith(tail: Uint8Array): boolean {
    if (this.length < tail.length) return false;
    for (let i = 0; i < tail.length; i++) {
      if (this.buf[this.length - tail.length + i] !== tail[i]) return false;
    }
    return true;
  }
  view(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}

/** Byte length of the UTF-8 sequence starting with `lead` (input here is always valid UTF-8). */
function utf8Len(lead: number): number {
  if (lead < 0x80) return 1;
  if (lead >= 0xf0) return 4;
  if (lead >= 0xe0) return 3;
  return 2;
}

function startsWithAt(bytes: Uint8Array, pos: number, key: Uint8Array): boolean {
  if (pos + key.length > bytes.length) return false;
  for (let i = 0; i < key.length; i++) if (bytes[pos + i] !== key[i]) return false;
  return true;
}

/** Result of {@link SentencePieceProcessor.encode}. */
export interface SpmEncoding {
  /** Piece strings; a run of unknown characters is one piece (its surface text). */
  pieces: string[];
  /** sentencepiece ids (unknown runs get `unkId`). */
  ids: number[];
}

/**
 * Encoder for a unigram sentencepiece model, equivalent to
 * `SentencePieceProcessor.encode(text)` of the reference library.
 *
 * Not supported (rejected with an Error naming the file): BPE/word/char model types,
 * `byte_fallback`, `treat_whitespace_as_suffix`.
 */
export class SentencePieceProcessor {
  /** The decoded model. */
  readonly model: SentencePieceModel;
  readonly #charsmap: PrecompiledCharsmap | null;
  /** User-defined symbols, matched verbatim before normalization. */
  readonly #userSymbols: Uint8Array[];
  /** Piece string -> id for pieces the Viterbi search may use. */
  readonly #vocab = new Map<string, number>();
  readonly #maxPieceChars: number;
  readonly #unkScore: number;
  readonly #userScorePerByte: number;
  /** Id of the unknown piece. */
  readonly unkId: number;

  /**
   * @param model a parsed model (see `parseSentencePieceModel`)
   * @param source file name for error messages
   */
  constructor(model: SentencePieceModel, source: string) {
    this.model = model;
    const { trainer, normalizer } = model;
    if (trainer.modelType !== 1) {
      throw new Error(
        `${source}: sentencepiece model type ${trainer.modelType} is not unigram (1)`,
      );
    }
    if (trainer.byteFallback) throw new Error(`${source}: byte_fallback models are not supported`);
    if (trainer.treatWhitespaceAsSuffix) {
      throw new Error(`${source}: treat_whitespace_as_suffix models are not supported`);
    }
    this.#charsmap = normalizer.precompiledCharsmap.length > 0
      ? new PrecompiledCharsmap(normalizer.precompiledCharsmap, source)
      : null;
    const enc = new TextEncoder();
    this.#userSymbols = [];
    let minScore = Infinity;
    let maxScore = FLT_MIN;
    let maxChars = 1;
    let unkId = -1;
    model.pieces.forEach((p, id) => {
      if (p.type === PieceType.Unknown) unkId = id;
      if (p.type === PieceType.Normal) {
        minScore = Math.min(minScore, p.score);
        maxScore = Math.max(maxScore, p.score);
      }
      if (p.type === PieceType.Normal || p.type === PieceType.UserDefined) {
        this.#vocab.set(p.piece, id);
        maxChars = Math.max(maxChars, [...p.piece].length);
      }
      if (p.type === PieceType.UserDefined) this.#userSymbols.push(enc.encode(p.piece));
    });
    if (unkId < 0) throw new Error(`${source}: sentencepiece model has no unknown piece`);
    this.unkId = unkId;
    this.#maxPieceChars = maxChars;
    this.#unkScore = Math.fround(minScore - UNK_PENALTY);
    this.#userScorePerByte = maxScore;
  }

  /** Length of the longest user-defined symbol at `pos`, or 0. */
  #userMatch(bytes: Uint8Array, pos: number): number {
    let best = 0;
    for (const s of this.#userSymbols) {
      if (s.length > best && startsWithAt(bytes, pos, s)) best = s.length;
    }
    return best;
  }

  /** One normalization step at `pos`: the replacement bytes and how many input bytes it eats. */
  #normalizePrefix(bytes: Uint8Array, pos: number): [Uint8Array, number] {
    const user = this.#userMatch(bytes, pos);
    if (user > 0) return [bytes.subarray(pos, pos + user), user];
    const hit = this.#charsmap?.match(bytes, pos);
    if (hit) return [hit.replacement, hit.length];
    const n = Math.min(utf8Len(bytes[pos]), bytes.length - pos);
    return [bytes.subarray(pos, pos + n), n];
  }

  /**
   * Normalize text as sentencepiece does before segmentation: charsmap, leading/trailing/repeated
   * whitespace removal, dummy `▁` prefix, spaces escaped to `▁`.
   */
  normalize(text: string): string {
    const { addDummyPrefix, removeExtraWhitespaces, escapeWhitespaces } = this.model.normalizer;
    // TextEncoder turns lone surrogates into U+FFFD, as sentencepiece does for malformed UTF-8.
    const input = new TextEncoder().encode(text);
    const out = new Bytes();
    let pos = 0;
    if (removeExtraWhitespaces) {
      while (pos < input.length) {
        const [piece, used] = this.#normalizePrefix(input, pos);
        if (!(piece.length === 1 && piece[0] === 0x20)) break;
        pos += used;
      }
    }
    if (pos >= input.length) return "";
    const space = escapeWhitespaces ? SPACE_BYTES : new Uint8Array([0x20]);
    if (addDummyPrefix) out.push(space);
    let prevSpace = removeExtraWhitespaces;
    while (pos < input.length) {
      const [piece, used] = this.#normalizePrefix(input, pos);
      let start = 0;
      if (prevSpace) { while (start < piece.length && piece[start] === 0x20) start++; }
      if (start < piece.length) {
        for (let i = start; i < piece.length; i++) {
          if (piece[i] === 0x20) out.push(space);
          else out.push(piece[i]);
        }
        prevSpace = piece[piece.length - 1] === 0x20;
      }
      pos += used;
      if (!removeExtraWhitespaces) prevSpace = false;
    }
    if (removeExtraWhitespaces) {
      while (out.endsWith(space)) out.length -= space.length;
    }
    return new TextDecoder().decode(out.view());
  }

  /**
   * Best segmentation of already-normalized text (Viterbi over code points). Scores accumulate in
   * float32 and ties keep the first candidate found, as in the C++ implementation.
   */
  segment(normalized: string): SpmEncoding {
    const chars = [...normalized];
    const n = chars.length;
    // Byte length per char: user-defined symbols score by byte length.
    const byteLen = chars.map((c) => new TextEncoder().encode(c).length);
    const score = new Float64Array(n + 1);
    const from = new Int32Array(n + 1).fill(-1);
    const ids = new Int32Array(n + 1);
    from[0] = 0;
    for (let s = 0; s < n; s++) {
      const base = score[s];
      let hasSingle = false;
      let piece = "";
      let bytes = 0;
      for (let e = s + 1; e <= n && e - s <= this.#maxPieceChars; e++) {
        piece += chars[e - 1];
        bytes += byteLen[e - 1];
        const id = this.#vocab.get(piece);
        if (id === undefined) continue;
        const p = this.model.pieces[id];
        const cand = p.type === PieceType.UserDefined
          ? bytes * this.#userScorePerByte - 0.1 + base
          : Math.fround(p.score + base);
        if (from[e] === -1 || cand > score[e]) {
          score[e] = Math.fround(cand);
          from[e] = s;
          ids[e] = id;
        }
        if (e === s + 1) hasSingle = true;
      }
      if (!hasSingle) {
        const cand = Math.fround(this.#unkScore + base);
        if (from[s + 1] === -1 || cand > score[s + 1]) {
          score[s + 1] = cand;
          from[s + 1] = s;
          ids[s + 1] = this.unkId;
        }
      }
    }
    const pieces: string[] = [];
    const out: number[] = [];
    for (let e = n; e > 0; e = from[e]) {
      pieces.push(chars.slice(from[e], e).join(""));
      out.push(ids[e]);
    }
    pieces.reverse();
    out.reverse();
    // sentencepiece reports a run of unknown pieces as one piece.
    const mergedPieces: string[] = [];
    const mergedIds: number[] = [];
    for (let i = 0; i < out.length; i++) {
      const last = mergedIds.length - 1;
      if (out[i] === this.unkId && last >= 0 && mergedIds[last] === this.unkId) {
        mergedPieces[last] += pieces[i];
      } else {
        mergedPieces.push(pieces[i]);
        mergedIds.push(out[i]);
      }
    }
    return { pieces: mergedPieces, ids: mergedIds };
  }

  /** Normalize and segment `text`, like `SentencePieceProcessor.encode`. */
  encode(text: string): SpmEncoding {
    return this.segment(this.normalize(text));
  }
}
