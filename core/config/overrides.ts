/**
 * Config files and command-line overrides, with the semantics of ml_collections' config flags:
 * a job takes `--config <file>` (a module exporting `getConfig()`), then any number of
 * `--config.group.key=value` overrides, each parsed to the type the setting already has.
 * Unknown keys and ill-typed values are errors that name the setting. The command line itself is
 * parsed by `parseJobArgs` of ./cli.ts.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import type { TrainConfig } from "../../configs/train.ts";
 * import { parseJobArgs } from "./cli.ts";
 *
 * // Deno.args of `deno task train --workdir logs/run1 --config.training.batch_size=4 ...`
 * const argv = ["--workdir", "logs/run1", "--config.training.batch_size=4"];
 * argv.push("--config.optim.betas=(0.9,0.99)");
 * const args = parseJobArgs(argv, {
 *   name: "train",
 *   defaultConfig: "configs/train.ts",
 *   options: [{ flags: "--workdir <dir>", description: "log folder", required: true }],
 * });
 * const config = await loadJobConfig<TrainConfig>(args);
 * assert.equal(args.options.workdir, "logs/run1");
 * assert.equal(config.training.batch_size, 4);
 * assert.deepEqual(config.optim.betas, [0.9, 0.99]);
 * args.overrides.push({ key: "training.batch_sise", value: "4" }); // a typo is an error naming it
 * await assert.rejects(loadJobConfig<TrainConfig>(args), /training\.batch_sise/);
 * ```
 *
 * @module
 */

import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { JobArgs } from "./cli.ts";

/** What plain values cannot tell about a config's settings. */
export interface ConfigSchema {
  /** Dotted keys whose numbers must be integers (for lists: every element). */
  integers?: readonly string[];
  /** Dotted keys restricted to a set of values. */
  choices?: Readonly<Record<string, readonly (string | number)[]>>;
  /** Keys that may be null, with the type their non-null value has (null defaults are strings otherwise). */
  nullable?: Readonly<Record<string, "string" | "number" | "boolean">>;
  /** Dotted keys holding a fixed number of items (tuples such as `optim.betas`). */
  lengths?: Readonly<Record<string, number>>;
  /** Dotted keys whose numbers must lie in a range (for lists: every element). */
  ranges?: Readonly<Record<string, NumberRange>>;
}

/**
 * The valid values of a numeric setting: finite numbers (unless `allowInfinite`) between `min`
 * and `max`, each bound inclusive unless marked exclusive. NaN is never valid.
 */
export interface NumberRange {
  min?: number;
  max?: number;
  minExclusive?: boolean;
  maxExclusive?: boolean;
  /** Accept +-Infinity within the bounds (e.g. "no limit"). */
  allowInfinite?: boolean;
}

/** The range in words: ">= 0", "> 0", "in [0, 1)", "a finite number". */
export function describeRange(r: NumberRange): string {
  const lo = r.min !== undefined;
  const hi = r.max !== undefined;
  if (lo && hi) {
    return `in ${r.minExclusive ? "(" : "["}${r.min}, ${r.max}${r.maxExclusive ? ")" : "]"}`;
  }
  if (lo) return `${r.minExclusive ? ">" : ">="} ${r.min}`;
  if (hi) return `${r.maxExclusive ? "<" : "<="} ${r.max}`;
  return "a finite number";
}

/** Whether `v` lies in `r`. */
export function inRange(v: number, r: NumberRange): boolean {
  if (Number.isNaN(v) || (!r.allowInfinite && !Number.isFinite(v))) return false;
  if (r.min !== undefined && (r.minExclusive ? !(v > r.min) : !(v >= r.min))) return false;
  if (r.max !== undefined && (r.maxExclusive ? !(v < r.max) : !(v <= r.max))) return false;
  return true;
}

/**
 * Why `value` (the setting `key`) breaks its schema's length or range, or null when it does not.
 * Values of other types (strings, null, booleans) are left to the type and choice checks.
 */
export function schemaProblem(key: string, value: unknown, schema: ConfigSchema): string | null {
  const length = schema.lengths?.[key];
  if (length !== undefined && Array.isArray(value) && value.length !== length) {
    return `must hold exactly ${length} items, got ${value.length} (${JSON.stringify(value)})`;
  }
  const range = schema.ranges?.[key];
  if (range) {
    const all = Array.isArray(value) ? value : [value];
    for (let i = 0; i < all.length; i++) {
      const x = all[i];
      if (typeof x !== "number") continue;
      if (!inRange(x, range)) {
        const which = Array.isArray(value) ? `item ${i} (${x})` : String(x);
        return `${which} is out of range: it must be ${describeRange(range)}`;
      }
    }
  }
  return null;
}

/** One `--config.key=value` from the command line, value still text. */
export interface ConfigOverride {
  /** Dotted key below `config`, e.g. "training.batch_size". */
  key: string;
  /** The text after `=` (or the next argument); "" when none was given (see `bare`). */
  value: string;
  /** `--config.key` with no value: sets a boolean to true, an error for any other setting. */
  bare?: boolean;
}

/** A nested config: groups of settings. */
export type ConfigObject = { [key: string]: unknown };

/** A loaded config module. */
export interface ConfigModule<T = ConfigObject> {
  getConfig(): T;
  schema?: ConfigSchema;
}

function isGroup(v: unknown): v is ConfigObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Every leaf setting as [dotted key, value], in declaration order. */
export function flattenConfig(config: object, prefix = ""): Array<[string, unknown]> {
  const out: Array<[string, unknown]> = [];
  for (const [k, v] of Object.entries(config)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (isGroup(v) && Object.keys(v).length > 0) out.push(...flattenConfig(v, key));
    else out.push([key, v]);
  }
  return out;
}

function levenshtein(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length];
}

/** Up to `max` known keys that look like `key` (edit distance, or the same last name). */
export function closeMatches(key: string, known: readonly string[], max = 5): string[] {
  const last = key.split(".").pop()!.toLowerCase();
  const scored = known.map((k) => {
    let d = levenshtein(key.toLowerCase(), k.toLowerCase());
    const kl = k.split(".").pop()!.toLowerCase();
    if (kl === last || levenshtein(kl, last) <= 1) d = Math.min(d, 1);
    else if (kl.includes(last) || last.includes(kl)) d = Math.min(d, 2);
    return { k, d };
  });
  const limit = Math.max(2, Math.floor(key.length / 3));
  return scored.filter((s) => s.d <= limit).sort((a, b) => a.d - b.d).slice(0, max).map((s) => s.k);
}

function unknownKeyError(key: string, config: ConfigObject): Error {
  const known = flattenConfig(config).map(([k]) => k);
  const near = closeMatches(key, known);
  const hint = near.length > 0
    ? ` Did you mean: ${near.join(", ")}?`
    : ` Known keys: ${known.join(", ")}.`;
  return new Error(`Unknown config key "config.${key}".${hint}`);
}

function unquote(text: string): string {
  const t = text.trim();
  if (t.length >= 2 && (t[0] === "'" || t[0] === '"') && t[t.length - 1] === t[0]) {
    return t.slice(1, -1);
  }
  return text;
}

function parseNumber(text: string): number | undefined {
  const t = text.trim();
  // Python literals allow 1_000_000; Number() does not.
  const clean = /^[+-]?[\d.]/.test(t) ? t.replace(/(\d)_(?=\d)/g, "$1") : t;
  if (clean === "" || !/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(clean)) {
    if (/^[+-]?(inf|infinity)$/i.test(clean)) return clean.startsWith("-") ? -Infinity : Infinity;
    return undefined;
  }
  return Number(clean);
}

function parseBoolean(text: string): boolean | undefined {
  const t = text.trim().toLowerCase();
  if (t === "true" || t === "t" || t === "1") return true;
  if (t === "false" || t === "f" || t === "0") return false;
  return undefined;
}

type Kind = "string" | "number" | "boolean" | "list";

function kindOf(v: unknown): Kind {
  if (Array.isArray(v)) return "list";
  if (typeof v === "number") return "number";
  if (typeof v === "boolean") return "boolean";
  return "string";
}

/** Split a list literal's inside at top-level commas, keeping quoted commas. */
function splitList(inner: string): string[] {
  const parts: string[] = [];
  let cur = "";
  let quote = "";
  for (const ch of inner) {
    if (quote) {
      if (ch === quote) quote = "";
      cur += ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
      cur += ch;
    } else if (ch === ",") {
      parts.push(cur);
      cur = "";
    } else cur += ch;
  }
  parts.push(cur);
  // "(1,)" and "[1, 2,]" end with an empty item.
  if (parts.length > 0 && parts[parts.length - 1].trim() === "") parts.pop();
  return parts.map((p) => p.trim());
}

function typeError(key: string, expected: string, text: string): Error {
  return new Error(`Config override "config.${key}": expected ${expected}, got "${text}".`);
}

function parseScalar(key: string, text: string, kind: Kind, integer: boolean): unknown {
  // A nullable boolean (null default) parses as a boolean, not as text.
  if (kind === "boolean") {
    const b = parseBoolean(text);
    if (b === undefined) throw typeError(key, "a boolean (true/false)", text);
    return b;
  }
  if (kind === "number") {
    const n = parseNumber(unquote(text));
    if (n === undefined) throw typeError(key, integer ? "an integer" : "a number", text);
    if (integer && !Number.isInteger(n)) throw typeError(key, "an integer", text);
    return n;
  }
  return unquote(text);
}

/** Guess an element's kind when the current list is empty. */
function guessKind(text: string): Kind {
  if (parseNumber(text) !== undefined) return "number";
  if (/^(true|false)$/i.test(text.trim())) return "boolean";
  return "string";
}

/**
 * Parse an override's text to the type of the setting's current value.
 *
 * @param key dotted key (for messages and the schema)
 * @param text the text given on the command line
 * @param current the setting's current value
 * @param schema integer / nullable hints
 */
export function parseOverrideValue(
  key: string,
  text: string,
  current: unknown,
  schema: ConfigSchema = {},
): unknown {
  const nullableAs = schema.nullable?.[key];
  const integer = schema.integers?.includes(key) ?? false;
  if ((current === null || current === undefined || nullableAs) && /^(none|null)$/i.test(text)) {
    return null;
  }
  const kind: Kind = current === null || current === undefined
    ? (nullableAs ?? "string")
    : kindOf(current);
  if (kind !== "list") return parseScalar(key, text, kind, integer);
  const t = text.trim();
  let inner = t;
  if (/^[[(]/.test(t)) {
    const close = t[0] === "[" ? "]" : ")";
    if (!t.endsWith(close)) throw typeError(key, `a list like [1, 2] or (1, 2)`, text);
    inner = t.slice(1, -1);
  }
  const items = inner.trim() === "" ? [] : splitList(inner);
  const list = current as unknown[];
  return items.map((item, i) => {
    const elemKind = list.length > 0 ? kindOf(list[0]) : guessKind(item);
    if (elemKind === "list") throw typeError(key, "a flat list", text);
    try {
      return parseScalar(`${key}[${i}]`, item, elemKind, integer);
    } catch {
      throw typeError(
        key,
        `a list of ${integer ? "integers" : elemKind === "number" ? "numbers" : elemKind + "s"}`,
        text,
      );
    }
  });
}

function checkChoice(key: string, value: unknown, schema: ConfigSchema, where: string): void {
  const choices = schema.choices?.[key];
  if (choices && value !== null && !choices.includes(value as string | number)) {
    throw new Error(
      `${where} "config.${key}": "${value}" is not one of ${
        choices.map((c) => `"${c}"`).join(", ")
      }.`,
    );
  }
}

/**
 * Apply overrides to `config` in place (and return it). Keys are checked against the config
 * (locked: no new keys), values parsed to the type of the value they replace.
 */
export function applyOverrides<T extends object>(
  config: T,
  overrides: readonly ConfigOverride[] | Readonly<Record<string, string>>,
  schema: ConfigSchema = {},
): T {
  const list: ConfigOverride[] = Array.isArray(overrides)
    ? [...overrides]
    : Object.entries(overrides).map(([key, value]) => ({ key, value }));
  const root = config as ConfigObject;
  for (const { key, value, bare } of list) {
    const path = key.split(".");
    if (path.some((p) => p === "")) throw new Error(`Config override "config.${key}": empty key.`);
    let group: ConfigObject = root;
    for (let i = 0; i < path.length - 1; i++) {
      const next = group[path[i]];
      if (!isGroup(next)) throw unknownKeyError(key, root);
      group = next;
    }
    const name = path[path.length - 1];
    if (!Object.hasOwn(group, name)) throw unknownKeyError(key, root);
    const current = group[name];
    if (isGroup(current)) {
      const inside = Object.keys(current).map((k) => `${key}.${k}`);
      throw new Error(
        `Config override "config.${key}" names a group of settings; set one of: ${
          inside.join(", ") || "(none)"
        }.`,
      );
    }
    if (bare) {
      if (kindOf(current) !== "boolean" && schema.nullable?.[key] !== "boolean") {
        const kind = current === null || current === undefined
          ? (schema.nullable?.[key] ?? "string")
          : kindOf(current);
        throw new Error(
          `Config override "config.${key}" has no value; write --config.${key}=<value> ` +
            `(${kind === "list" ? "a list like (1, 2)" : `a ${kind}`}).`,
        );
      }
    }
    const parsed = bare ? true : parseOverrideValue(key, value, current, schema);
    checkChoice(key, parsed, schema, "Config override");
    const why = schemaProblem(key, parsed, schema);
    if (why) throw new Error(`Config override "config.${key}": ${why}.`);
    group[name] = parsed;
  }
  return config;
}

/** Check a config's integers and choices against its schema (e.g. after a user's config file). */
export function validateConfig(config: object, schema: ConfigSchema, source = "config"): void {
  const values = new Map(flattenConfig(config));
  for (const key of schema.integers ?? []) {
    if (!values.has(key)) continue;
    const v = values.get(key);
    const all = Array.isArray(v) ? v : [v];
    for (const x of all) {
      if (x !== null && !(typeof x === "number" && Number.isInteger(x))) {
        throw new Error(`${source}: "config.${key}" must be an integer, got ${JSON.stringify(v)}.`);
      }
    }
  }
  for (const key of Object.keys(schema.choices ?? {})) {
    if (values.has(key)) checkChoice(key, values.get(key), schema, source + ":");
  }
  for (
    const key of new Set([
      ...Object.keys(schema.lengths ?? {}),
      ...Object.keys(schema.ranges ?? {}),
    ])
  ) {
    if (!values.has(key)) continue;
    const why = schemaProblem(key, values.get(key), schema);
    if (why) throw new Error(`${source}: "config.${key}" ${why}.`);
  }
}

/** Import a config module (a file exporting `getConfig()` and optionally `schema`). */
export async function importConfigModule<T = ConfigObject>(path: string): Promise<ConfigModule<T>> {
  const abs = resolve(path);
  if (!existsSync(abs)) throw new Error(`--config: config file not found: ${path}`);
  let mod: Record<string, unknown>;
  try {
    mod = await import(pathToFileURL(abs).href);
  } catch (e) {
    throw new Error(`--config: cannot import ${path}: ${(e as Error).message}`);
  }
  if (typeof mod.getConfig !== "function") {
    throw new Error(`--config: ${path} does not export a getConfig() function.`);
  }
  return { getConfig: mod.getConfig as () => T, schema: mod.schema as ConfigSchema | undefined };
}

/** Import a config file and return a fresh config from its `getConfig()`. */
export async function loadConfigModule<T = ConfigObject>(path: string): Promise<T> {
  const mod = await importConfigModule<T>(path);
  const config = mod.getConfig();
  if (!isGroup(config)) {
    throw new Error(`--config: getConfig() of ${path} did not return an object.`);
  }
  if (mod.schema) validateConfig(config, mod.schema, path);
  return config;
}

/** The config as indented JSON (for `index.json`-style records and logs). */
export function configToJson(config: object): string {
  return JSON.stringify(config, null, 2);
}

function formatScalar(v: unknown): string {
  if (v === null || v === undefined) return "null";
  if (typeof v === "string") return v === "" || /^\s|\s$|[:#\n]/.test(v) ? JSON.stringify(v) : v;
  if (Array.isArray(v)) return `[${v.map(formatScalar).join(", ")}]`;
  return String(v);
}

/** The config as YAML-like indented lines, as ml_collections prints a ConfigDict. */
export function formatConfig(config: object, indent = ""): string {
  const lines: string[] = [];
  for (const [k, v] of Object.entries(config)) {
    if (isGroup(v)) {
      if (Object.keys(v).length === 0) lines.push(`${indent}${k}: {}`);
      else lines.push(`${indent}${k}:`, formatConfig(v, indent + "  "));
    } else lines.push(`${indent}${k}: ${formatScalar(v)}`);
  }
  return lines.join("\n");
}

/** Load the job's config file, check it, and apply its command-line overrides. */
export async function loadJobConfig<T = ConfigObject>(args: JobArgs): Promise<T> {
  const mod = await importConfigModule<T>(args.config);
  const config = mod.getConfig();
  if (!isGroup(config)) {
    throw new Error(`--config: getConfig() of ${args.config} did not return an object.`);
  }
  const schema = mod.schema ?? {};
  validateConfig(config, schema, args.config);
  return applyOverrides(config, args.overrides, schema);
}
