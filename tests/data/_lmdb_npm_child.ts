/**
 * Child process of lmdb_file_test.ts: writes a format-2 database with the npm `lmdb` package and
 * reads it back through openLmdbReader, printing what it read as JSON. The package's native add-on
 * registers exit hooks whose teardown under Deno has crashed processes at exit (lmdb-js issue 354),
 * so the test suite's own process never loads it.
 */
import { openLmdbReader } from "../../core/data/lmdb_file.ts";

const dir = Deno.args[0];
const enc = new TextEncoder(), dec = new TextDecoder();
const { open } = await import("lmdb");
const db = open({ path: `${dir}/db`, encoding: "binary", keyEncoding: "binary" });
await db.put(enc.encode("a") as unknown as Buffer, enc.encode("alpha") as unknown as Buffer);
await db.put(enc.encode("b") as unknown as Buffer, enc.encode("beta") as unknown as Buffer);
await db.close();
const r = await openLmdbReader(`${dir}/db`);
const b = await r.get(enc.encode("b"));
console.log(JSON.stringify({ entries: r.entries, b: b ? dec.decode(b) : null }));
await r.close();
