/**
 * Atomic file writes: data goes to `<path>.tmp` first and is renamed over `path` only once
 * complete, so a crash never leaves a half-written file under the real name.
 *
 * @module
 */

/** Writes `bytes` to `path` atomically (via `<path>.tmp` + rename). */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp`;
  try {
    await Deno.writeFile(tmp, bytes);
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw new Error(`cannot write ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** Synchronous twin of {@link writeFileAtomic}. */
export function writeFileAtomicSync(path: string, bytes: Uint8Array): void {
  const tmp = `${path}.tmp`;
  try {
    Deno.writeFileSync(tmp, bytes);
    Deno.renameSync(tmp, path);
  } catch (err) {
    try {
      Deno.removeSync(tmp);
    } catch { /* nothing to clean up */ }
    throw new Error(`cannot write ${path}: ${(err as Error).message}`, { cause: err });
  }
}
