/**
 * LMDB databases in the on-disk format of LMDB 0.9 ("data format 1", the one Python's `lmdb`
 * package, `mdb_dump` and the original tool use), in plain TypeScript. This module is the public
 * entry point; the code lives in `lmdb_format.ts` (page layout, meta pages, key order),
 * `lmdb_reader.ts` ({@link LmdbFileReader}, {@link openLmdbReader}) and `lmdb_writer.ts`
 * ({@link LmdbBulkWriter}).
 *
 * Why not the npm `lmdb` package alone: its bundled LMDB writes data format 2, which LMDB 0.9
 * refuses ("MDB_INVALID"), and it crashes on format-1 files. So these modules read format-1 files
 * and write new ones; {@link openLmdbReader} hands format-2 files to the npm package.
 *
 * @module
 */

export { compareKeys, LMDB_MAX_KEY_SIZE, LmdbFormat2Error } from "./lmdb_format.ts";
export { LmdbFileReader, type LmdbReadable, openLmdbReader } from "./lmdb_reader.ts";
export { LmdbBulkWriter } from "./lmdb_writer.ts";
