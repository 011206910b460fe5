/**
 * Reader for sentencepiece `ModelProto` files (`sentencepiece.bpe.model`, `spiece.model`, ...).
 * Only the fields that encoding needs are decoded; the rest are skipped.
 *
 * @module
 */

import {
  fieldBool,
  fieldFloat,
  fieldInt32,
  fieldString,
  type ProtoField,
  readFields,
  WireType,
} from "./protobuf.ts";

/** `ModelProto.SentencePiece.Type`. */
export const PieceType = {
  Normal: 1,
  Unknown: 2,
  Control: 3,
  UserDefined: 4,
  Unused: 5,
  Byte: 6,
} as const;

/** One vocabulary entry. */
export interface SentencePiece {
  piece: string;
  /** Log-probability for unigram models (float32 value). */
  score: number;
  /** One of {@link PieceType}. */
  type: number;
}

/** `NormalizerSpec`, with sentencepiece's defaults filled in. */
export interface NormalizerSpec {
  name: string;
  /** Darts trie + replacement strings; empty for the `identity` rule. */
  precompiledCharsmap: Uint8Array;
  addDummyPrefix: boolean;
  removeExtraWhitespaces: boolean;
  escapeWhitespaces: boolean;
}

/** The parts of `TrainerSpec` that change encoding. */
export interface TrainerSpec {
  /** 1 unigram, 2 bpe, 3 word, 4 char. */
  modelType: number;
  unkId: number;
  bosId: number;
  eosId: number;
  padId: number;
  treatWhitespaceAsSuffix: boolean;
  byteFallback: boolean;
  splitDigits: boolean;
}

/** A decoded sentencepiece model. */
export interface SentencePieceModel {
  pieces: SentencePiece[];
  trainer: TrainerSpec;
  normalizer: NormalizerSpec;
}

function expectWire(f: ProtoField, wire: number, source: string, what: string): void {
  if (f.wire !== wire) {
    throw new Error(`${source}: ${what} (field ${f.field}) has wire type ${f.wire}, want ${wire}`);
  }
}

function parsePiece(buf: Uint8Array, source: string): SentencePiece {
  const p: SentencePiece = { piece: "", score: 0, type: PieceType.Normal };
  for (const f of readFields(buf, source)) {
    if (f.field === 1) {
      expectWire(f, WireType.Bytes, source, "SentencePiece.piece");
      p.piece = fieldString(f);
    } else if (f.field === 2) {
      expectWire(f, WireType.Fixed32, source, "SentencePiece.score");
      p.score = fieldFloat(f);
    } else if (f.field === 3) {
      expectWire(f, WireType.Varint, source, "SentencePiece.type");
      p.type = fieldInt32(f);
    }
  }
  return p;
}

function parseTrainer(buf: Uint8Array, source: string): TrainerSpec {
  // Defaults from sentencepiece_model.proto.
  const t: TrainerSpec = {
    modelType: 1,
    unkId: 0,
    bosId: 1,
    eosId: 2,
    padId: -1,
    treatWhitespaceAsSuffix: false,
    byteFallback: false,
    splitDigits: false,
  };
  const ints: Record<number, keyof TrainerSpec> = {
    3: "modelType",
    40: "unkId",
    41: "bosId",
    42: "eosId",
    43: "padId",
  };
  const bools: Record<number, keyof TrainerSpec> = {
    24: "treatWhitespaceAsSuffix",
    25: "splitDigits",
    35: "byteFallback",
  };
  for (const f of readFields(buf, source)) {
    const ik = ints[f.field];
    const bk = bools[f.field];
    if (ik) {
      expectWire(f, WireType.Varint, source, `TrainerSpec.${ik}`);
      (t as unknown as Record<string, number>)[ik] = fieldInt32(f);
    } else if (bk) {
      expectWire(f, WireType.Varint, source, `TrainerSpec.${bk}`);
      (t as unknown as Record<string, boolean>)[bk] = fieldBool(f);
    }
  }
  return t;
}

function parseNormalizer(buf: Uint8Array, source: string): NormalizerSpec {
  const n: NormalizerSpec = {
    name: "",
    precompiledCharsmap: new Uint8Array(0),
    addDummyPrefix: true,
    removeExtraWhitespaces: true,
    escapeWhitespaces: true,
  };
  for (const f of readFields(buf, source)) {
    switch (f.field) {
      case 1:
        expectWire(f, WireType.Bytes, source, "NormalizerSpec.name");
        n.name = fieldString(f);
        break;
      case 2:
        expectWire(f, WireType.Bytes, source, "NormalizerSpec.precompiled_charsmap");
        n.precompiledCharsmap = f.bytes!;
        break;
      case 3:
        expectWire(f, WireType.Varint, source, "NormalizerSpec.add_dummy_prefix");
        n.addDummyPrefix = fieldBool(f);
        break;
      case 4:
        expectWire(f, WireType.Varint, source, "NormalizerSpec.remove_extra_whitespaces");
        n.removeExtraWhitespaces = fieldBool(f);
        break;
      case 5:
        expectWire(f, WireType.Varint, source, "NormalizerSpec.escape_whitespaces");
        n.escapeWhitespaces = fieldBool(f);
        break;
    }
  }
  return n;
}

/**
 * Decode a sentencepiece model file's bytes.
 *
 * @param buf the file's contents
 * @param source the file name, used in error messages
 * @throws Error naming `source` for malformed or empty models
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * const path = "tests/fixtures/tokenizers/xlmr/sentencepiece.bpe.model"; // a small XLM-R model
 * const model = parseSentencePieceModel(await Deno.readFile(path), path);
 * assert.equal(model.pieces.length, 1000);
 * assert.equal(model.normalizer.name, "nmt_nfkc");
 * assert.deepEqual(model.pieces.slice(0, 3).map((p) => p.piece), ["<unk>", "<s>", "</s>"]);
 * assert.throws(() => parseSentencePieceModel(new Uint8Array([0x0a]), "bad.model"), /bad\.model/);
 * ```
 */
export function parseSentencePieceModel(buf: Uint8Array, source: string): SentencePieceModel {
  const pieces: SentencePiece[] = [];
  let trainer: TrainerSpec | null = null;
  let normalizer: NormalizerSpec | null = null;
  for (const f of readFields(buf, source)) {
    if (f.field === 1) {
      expectWire(f, WireType.Bytes, source, "ModelProto.pieces");
      pieces.push(parsePiece(f.bytes!, source));
    } else if (f.field === 2) {
      expectWire(f, WireType.Bytes, source, "ModelProto.trainer_spec");
      trainer = parseTrainer(f.bytes!, source);
    } else if (f.field === 3) {
      expectWire(f, WireType.Bytes, source, "ModelProto.normalizer_spec");
      normalizer = parseNormalizer(f.bytes!, source);
    }
  }
  if (pieces.length === 0) throw new Error(`${source}: sentencepiece model has no pieces`);
  return {
    pieces,
    trainer: trainer ?? parseTrainer(new Uint8Array(0), source),
    normalizer: normalizer ?? parseNormalizer(new Uint8Array(0), source),
  };
}
