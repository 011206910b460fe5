/**
 * Captions: loading COCO annotation files or plain caption lists, building the seeded caption
 * list of a generation run exactly as the original tool does, and `captions.txt` files.
 *
 * The rule for a caption, everywhere (source files, `captions.txt`, the writer): a caption is a
 * non-empty line of UTF-8 text that is not only whitespace and holds no control character
 * (U+0000-U+001F, U+007F-U+009F), no line or paragraph separator (U+2028, U+2029: Python's
 * `splitlines`, which the original tool reads `captions.txt` with, breaks lines there), no byte
 * order mark (U+FEFF) and no lone surrogate. Anything else is refused with the file and line (or
 * annotation) that holds it, so that line i of `captions.txt` is always pair i, for this project
 * and for the original. A file's leading UTF-8 byte order mark is dropped; a `\r` before each `\n`
 * (CRLF files) is dropped; a final `\n` ends the last line rather than starting an empty one.
 *
 * @module
 */

import { writeFileAtomic } from "./atomic_write.ts";
import { PythonRandom } from "./python_random.ts";

/** Cleans a COCO caption like the original: newlines removed, surrounding spaces stripped. */
export function cleanCocoCaption(caption: string): string {
  return caption.replaceAll("\n", "").replace(/^ +| +$/g, "");
}

const CONTROL_NAMES: Record<number, string> = {
  0x09: "tab",
  0x0a: "line feed",
  0x0b: "vertical tab",
  0x0c: "form feed",
  0x0d: "carriage return",
  0x85: "next line",
  0x2028: "line separator",
  0x2029: "paragraph separator",
  0xfeff: "byte order mark",
};

function describeChar(code: number): string {
  const hex = `U+${code.toString(16).toUpperCase().padStart(4, "0")}`;
  const name = CONTROL_NAMES[code];
  return name ? `${hex} (${name})` : hex;
}

/**
 * Why `caption` breaks the caption rule (see the module documentation), or null when it is a
 * valid caption.
 */
export function captionProblem(caption: string): string | null {
  if (caption.length === 0) return "is empty";
  if (/^\s*$/u.test(caption)) return "holds only whitespace";
  for (let i = 0; i < caption.length; i++) {
    const c = caption.charCodeAt(i);
    if (c < 0x20 || (c >= 0x7f && c <= 0x9f) || c === 0x2028 || c === 0x2029 || c === 0xfeff) {
      return `contains the control character ${describeChar(c)} at column ${i + 1}`;
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      const pair = c <= 0xdbff && i + 1 < caption.length &&
        caption.charCodeAt(i + 1) >= 0xdc00 && caption.charCodeAt(i + 1) <= 0xdfff;
      if (!pair) return `contains a lone surrogate ${describeChar(c)} at column ${i + 1}`;
      i++;
    }
  }
  return null;
}

/**
 * Loads the captions of a COCO `captions_{split}2014.json` file (`annotations[*].caption`),
 * cleaned with {@link cleanCocoCaption}, in file order. A caption that breaks the caption rule
 * after cleaning is an error naming its annotation.
 */
export async function loadCocoCaptions(path: string): Promise<string[]> {
  const text = decodeUtf8(await readBytes(path, "COCO annotation file"), path);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`${path}: not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  const annotations = (json as { annotations?: unknown })?.annotations;
  if (!Array.isArray(annotations)) {
    throw new Error(`${path}: no "annotations" array (expected a COCO captions file)`);
  }
  return annotations.map((a, i) => {
    const caption = (a as { caption?: unknown })?.caption;
    if (typeof caption !== "string") {
      throw new Error(`${path}: annotations[${i}].caption is missing or not a string`);
    }
    const clean = cleanCocoCaption(caption);
    const why = captionProblem(clean);
    if (why) {
      throw new Error(
        `${path}: annotations[${i}].caption ${JSON.stringify(caption)} ${why} after cleaning ` +
          `(newlines removed, spaces stripped); fix or remove that annotation`,
      );
    }
    return clean;
  });
}

async function readBytes(path: string, what: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (err) {
    throw new Error(`cannot read ${what} ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Strict UTF-8 decoding (a leading byte order mark is dropped); invalid bytes are an error naming
 * the file and the line that holds them, never replaced.
 */
function decodeUtf8(bytes: Uint8Array, path: string): string {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    // Find the line: 0x0A never occurs inside a multi-byte UTF-8 sequence.
    let line = 1;
    let start = 0;
    for (let i = 0; i <= bytes.length; i++) {
      if (i === bytes.length || bytes[i] === 0x0a) {
        try {
          new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(start, i));
        } catch {
          throw new Error(`${path}:${line}: not valid UTF-8 text`);
        }
        line++;
        start = i + 1;
      }
    }
    throw new Error(`${path}: not valid UTF-8 text`);
  }
}

/** Lines of caption text: split on `\n`, a `\r` before it dropped, no empty line after a final `\n`. */
function splitLines(text: string): string[] {
  if (text === "") return [];
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  return lines.map((l) => (l.endsWith("\r") ? l.slice(0, -1) : l));
}

/**
 * Parses caption text (already decoded, byte order mark removed): one caption per line, every
 * line checked against the caption rule; `source` names the file in errors (`source:line: ...`).
 */
export function parseCaptionLines(text: string, source = "captions"): string[] {
  const lines = splitLines(text);
  lines.forEach((line, i) => {
    const why = captionProblem(line);
    if (why) throw new Error(`${source}:${i + 1}: the caption ${why} (${JSON.stringify(line)})`);
  });
  return lines;
}

/**
 * Reads a caption file (line i = caption i): strict UTF-8, a leading byte order mark dropped,
 * CRLF accepted, every line checked against the caption rule.
 */
export async function readCaptions(path: string): Promise<string[]> {
  return parseCaptionLines(decodeUtf8(await readBytes(path, "captions file"), path), path);
}

/**
 * Loads a caption source: a COCO annotation `.json` file or a plain text file with one caption
 * per line. Errors if it holds no caption or a caption that breaks the caption rule.
 */
export async function loadCaptions(path: string): Promise<string[]> {
  const captions = path.toLowerCase().endsWith(".json")
    ? await loadCocoCaptions(path)
    : await readCaptions(path);
  if (captions.length === 0) throw new Error(`${path}: no captions found`);
  return captions;
}

/**
 * Writes captions one per line joined by `\n` (as the original: no trailing newline), atomically.
 * A caption that breaks the caption rule is refused, and the bytes are checked to read back as
 * exactly `captions` before anything is written.
 */
export async function writeCaptions(path: string, captions: readonly string[]): Promise<void> {
  captions.forEach((c, i) => {
    const why = captionProblem(c);
    if (why) throw new Error(`${path}: caption ${i} ${why} (${JSON.stringify(c)})`);
  });
  const bytes = new TextEncoder().encode(captions.join("\n"));
  const back = splitLines(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  if (back.length !== captions.length || back.some((c, i) => c !== captions[i])) {
    // Unreachable while captionProblem holds; a guard against the two drifting apart.
    throw new Error(`${path}: internal error: the captions would not read back as written`);
  }
  await writeFileAtomic(path, bytes);
}

/** Repeats `seq` whole until it has at least `limit` items (the original's `repeat_over_limit`). */
export function repeatOverLimit<T>(seq: readonly T[], limit: number): T[] {
  if (seq.length === 0) throw new Error("cannot repeat an empty caption list");
  const repeat = Math.ceil(limit / seq.length);
  const out: T[] = [];
  for (let r = 0; r < repeat; r++) for (const item of seq) out.push(item);
  return out;
}

/**
 * The caption list of a generation run, equal to the original tool's: `captions` repeated to
 * cover `totalNums`, shuffled with Python's `random.Random(seed).shuffle`, cut to `totalNums`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * const list = buildCaptionList(["a", "b", "c"], 5, 2333); // 5 captions, seeded order
 * // what Python gives: l = ["a", "b", "c"] * 2; random.Random(2333).shuffle(l); l[:5]
 * assert.deepEqual(list, ["c", "a", "b", "b", "c"]);
 * ```
 */
export function buildCaptionList(
  captions: readonly string[],
  totalNums: number,
  seed: number | bigint,
): string[] {
  if (!Number.isSafeInteger(totalNums) || totalNums <= 0) {
    throw new Error(`total_nums must be a positive integer, got ${totalNums}`);
  }
  if (captions.length === 0) throw new Error("the caption list is empty");
  const extended = repeatOverLimit(captions, totalNums);
  new PythonRandom(seed).shuffle(extended);
  return extended.slice(0, totalNums);
}
