/**
 * Captions: loading COCO annotation files or plain caption lists, building the seeded caption
 * list of a generation run exactly as the original tool does, and `captions.txt` files.
 *
 * @module
 */

import { writeFileAtomic } from "./atomic_write.ts";
import { PythonRandom } from "./python_random.ts";

/** Cleans a COCO caption like the original: newlines removed, surrounding spaces stripped. */
export function cleanCocoCaption(caption: string): string {
  return caption.replaceAll("\n", "").replace(/^ +| +$/g, "");
}

/**
 * Loads the captions of a COCO `captions_{split}2014.json` file (`annotations[*].caption`),
 * cleaned with {@link cleanCocoCaption}, in file order.
 */
export async function loadCocoCaptions(path: string): Promise<string[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new Error(`cannot read COCO annotation file ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
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
    return cleanCocoCaption(caption);
  });
}

/**
 * Splits caption text into lines on `\n` only (a `\r` before it is dropped, so CRLF files work);
 * a final empty line (text ending in `\n`) is not a caption. Other line separators such as
 * `\u2028` stay inside their caption, so line i is always caption i.
 */
export function splitCaptionLines(text: string): string[] {
  if (text === "") return [];
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  return lines.map((l) => (l.endsWith("\r") ? l.slice(0, -1) : l));
}

/** Reads a `captions.txt` (line i = caption of pair i). */
export async function readCaptions(path: string): Promise<string[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new Error(`cannot read captions file ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return splitCaptionLines(text);
}

/**
 * Loads a caption source: a COCO annotation `.json` file or a plain text file with one caption
 * per line. Errors if it holds no caption.
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
 * A caption containing `\n` is refused since it would shift every later line.
 */
export async function writeCaptions(path: string, captions: readonly string[]): Promise<void> {
  captions.forEach((c, i) => {
    if (c.includes("\n")) throw new Error(`${path}: caption ${i} contains a newline`);
  });
  await writeFileAtomic(path, new TextEncoder().encode(captions.join("\n")));
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
 * const list = buildCaptionList(["a", "b", "c"], 5, 2333); // 5 captions, seeded order
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
