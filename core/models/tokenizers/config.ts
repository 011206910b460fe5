/**
 * Reading a tokenizer folder's `tokenizer_config.json` and `special_tokens_map.json` the way
 * transformers resolves them: the special-tokens map overrides the config, tokens may be plain
 * strings or `AddedToken` objects.
 *
 * @module
 */

import { readTextIfExists, type TokenizerFiles } from "./files.ts";

/** A special token's text and how it eats neighbouring whitespace. */
export interface SpecialToken {
  content: string;
  /** Strip whitespace on the token's left when splitting it out of text. */
  lstrip: boolean;
  /** Strip whitespace on its right. */
  rstrip: boolean;
}

/** The resolved settings of a tokenizer folder. */
export interface FolderConfig {
  /** `model_max_length`, when the config gives a usable one. */
  modelMaxLength?: number;
  /** Special tokens by role (`bos_token`, `eos_token`, `pad_token`, `unk_token`, `mask_token`...). */
  tokens: Record<string, SpecialToken>;
  /** The merged raw JSON (config then special-tokens map). */
  raw: Record<string, unknown>;
}

/** transformers writes 1e30 ("very large integer") when a checkpoint sets no limit. */
const UNSET_MAX_LENGTH = 1e12;

/** Read JSON file `name` of a tokenizer folder, or return undefined when it does not exist. */
export async function readJsonIfExists(
  files: TokenizerFiles,
  name: string,
): Promise<Record<string, unknown> | undefined> {
  const text = await readTextIfExists(files, name);
  if (text === null) return undefined;
  const path = files.path(name);
  try {
    const value = JSON.parse(text);
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw new Error("not a JSON object");
    }
    return value as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${path}: invalid JSON: ${(e as Error).message}`);
  }
}

function asToken(value: unknown, file: string, key: string): SpecialToken | undefined {
  if (value === null || value === undefined) return undefined;
  if (typeof value === "string") return { content: value, lstrip: false, rstrip: false };
  if (typeof value === "object" && typeof (value as { content?: unknown }).content === "string") {
    const v = value as { content: string; lstrip?: boolean; rstrip?: boolean };
    return { content: v.content, lstrip: !!v.lstrip, rstrip: !!v.rstrip };
  }
  throw new Error(`${file}: ${key} is neither a string nor an AddedToken object`);
}

/**
 * Read the optional `tokenizer_config.json` and `special_tokens_map.json` of a tokenizer folder.
 *
 * @param files the tokenizer folder's files
 * @param defaults tokens the tokenizer class would use when the files name none
 */
export async function readFolderConfig(
  files: TokenizerFiles,
  defaults: Record<string, SpecialToken> = {},
): Promise<FolderConfig> {
  const configPath = files.path("tokenizer_config.json");
  const mapPath = files.path("special_tokens_map.json");
  const config = (await readJsonIfExists(files, "tokenizer_config.json")) ?? {};
  const map = (await readJsonIfExists(files, "special_tokens_map.json")) ?? {};
  const tokens: Record<string, SpecialToken> = { ...defaults };
  for (const [file, obj] of [[configPath, config], [mapPath, map]] as const) {
    for (const [key, value] of Object.entries(obj)) {
      if (!key.endsWith("_token")) continue;
      const tok = asToken(value, file, key);
      if (tok) tokens[key] = { ...tok, lstrip: tok.lstrip || !!defaults[key]?.lstrip };
    }
  }
  let modelMaxLength: number | undefined;
  const m = config.model_max_length;
  if (m !== undefined) {
    if (typeof m !== "number" || !(m > 0)) {
      throw new Error(`${configPath}: model_max_length must be a positive number`);
    }
    if (m < UNSET_MAX_LENGTH) modelMaxLength = Math.floor(m);
  }
  return { modelMaxLength, tokens, raw: { ...config, ...map } };
}
