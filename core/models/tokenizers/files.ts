/**
 * A tokenizer folder's files wherever they live: a directory on disk (folder_files.ts, Deno) or a
 * web server (the browser page). The tokenizers read their files only through this, so they build
 * for the browser.
 *
 * @module
 */

/** Read access to the files of one tokenizer folder. */
export interface TokenizerFiles {
  /** The folder's name in messages (a path or a URL). */
  readonly where: string;
  /** The name of file `name` in messages (a path or a URL). */
  path(name: string): string;
  /** File `name`'s bytes, or null when the folder has no such file; other failures throw. */
  read(name: string): Promise<Uint8Array | null>;
}

/** File `name` as UTF-8 text, or null when absent. */
export async function readTextIfExists(
  files: TokenizerFiles,
  name: string,
): Promise<string | null> {
  const bytes = await files.read(name);
  return bytes === null ? null : new TextDecoder().decode(bytes);
}

/** Tokenizer files held in memory (name -> bytes or text), e.g. for tests. */
export function memoryFiles(
  where: string,
  contents: Readonly<Record<string, Uint8Array | string>>,
): TokenizerFiles {
  return {
    where,
    path: (name) => `${where}/${name}`,
    read: (name) => {
      const v = contents[name];
      if (v === undefined) return Promise.resolve(null);
      return Promise.resolve(typeof v === "string" ? new TextEncoder().encode(v) : v);
    },
  };
}
