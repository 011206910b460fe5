/**
 * The error the file readers (pickle, zip, torch, safetensors, npy, LMDB) throw for a file whose
 * contents are malformed, truncated, hostile or beyond a size limit. Its message names the file
 * (and key or field) and what is wrong; callers can tell it apart from a failing disk or a bug.
 *
 * @module
 */

/** A file's contents are malformed, truncated, hostile, or exceed a limit. */
export class FormatError extends Error {
  override name = "FormatError";
}

/**
 * A short, non-recursive description of a decoded value for an error message: deeply nested or
 * huge values (which a hostile file can make) would overflow the stack in `String()` or
 * `JSON.stringify`, or give a message of megabytes.
 */
export function describeValue(v: unknown, maxChars = 60): string {
  if (v === null) return "None";
  if (v === undefined) return "undefined";
  if (typeof v === "string") return JSON.stringify(clip(v, maxChars));
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  if (typeof v === "bigint") return `an integer of ${v.toString(16).length * 4} bits`;
  if (v instanceof Uint8Array) return `bytes of length ${v.length}`;
  if (Array.isArray(v)) {
    const scalars = v.length > 0 && v.length <= 8 && v.every((x) => typeof x === "number");
    if (scalars) return `[${v.join(", ")}]`;
    return `a ${Object.isFrozen(v) ? "tuple" : "list"} of ${v.length} items`;
  }
  if (v instanceof Map) return `a dict of ${v.size} items`;
  if (v instanceof Set) return `a set of ${v.size} items`;
  if (typeof v === "object") {
    const name = (v as { constructor?: { name?: string } }).constructor?.name ?? "object";
    const cls = (v as { cls?: unknown; fullName?: unknown }).cls ??
      (v as { fullName?: unknown }).fullName;
    return typeof cls === "string" ? `${name} ${clip(cls, maxChars)}` : `a ${name}`;
  }
  return typeof v;
}

/** `s` cut to at most `max` characters (an ellipsis and the full length mark a cut). */
export function clip(s: string, max = 80): string {
  return s.length <= max ? s : `${s.slice(0, max)}... (${s.length} chars)`;
}
