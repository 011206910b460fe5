/**
 * Positioned reads from a file on disk, so that weight files of several GB are read one tensor at a
 * time and never held whole in memory.
 *
 * @module
 */

import { FormatError } from "./format_error.ts";

/** A read-only file handle that reads byte ranges by absolute offset. */
export class RandomAccessFile {
  #file: Deno.FsFile | null;
  /** Reads are chained: a seek followed by reads must not interleave with another caller's seek. */
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(readonly path: string, file: Deno.FsFile, readonly size: number) {
    this.#file = file;
  }

  /** Opens `path` for reading. */
  static async open(path: string): Promise<RandomAccessFile> {
    const file = await Deno.open(path, { read: true });
    try {
      const stat = await file.stat();
      if (!stat.isFile) throw new Error(`${path}: not a regular file`);
      return new RandomAccessFile(path, file, stat.size);
    } catch (err) {
      file.close();
      throw err;
    }
  }

  /**
   * Reads exactly `length` bytes starting at `offset` into a fresh buffer.
   * Throws naming the file when the range lies outside it.
   */
  readAt(offset: number, length: number): Promise<Uint8Array> {
    if (
      !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
      offset + length > this.size
    ) {
      // The range comes from a file's own fields: out of range means the file is malformed.
      return Promise.reject(
        new FormatError(
          `${this.path}: read of ${length} bytes at offset ${offset} is outside the file ` +
            `(${this.size} bytes)`,
        ),
      );
    }
    const job = this.#queue.then(() => this.#read(offset, length));
    this.#queue = job.catch(() => {});
    return job;
  }

  async #read(offset: number, length: number): Promise<Uint8Array> {
    const file = this.#file;
    if (file === null) throw new Error(`${this.path}: read after close`);
    const out = new Uint8Array(length);
    await file.seek(offset, Deno.SeekMode.Start);
    let done = 0;
    while (done < length) {
      const n = await file.read(out.subarray(done));
      if (n === null) {
        throw new Error(`${this.path}: unexpected end of file at offset ${offset + done}`);
      }
      done += n;
    }
    return out;
  }

  /** Closes the handle; later reads fail. Closing twice is harmless. */
  close(): void {
    if (this.#file !== null) {
      this.#file.close();
      this.#file = null;
    }
  }
}
