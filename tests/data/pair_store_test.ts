import assert from "node:assert/strict";
import { encodeNpy } from "../../core/data/npy.ts";
import {
  openLmdbPairStore,
  openNpyPairStore,
  pairPaths,
  validatePair,
} from "../../core/data/pair_store.ts";
import { f16BitsToF32 as halfBitsToFloat32 } from "../../core/io/half.ts";
import { LmdbBulkWriter } from "../../core/data/lmdb_file.ts";
import { ORIGINAL_ROOT, originalValue } from "./helpers.ts";

const enc = new TextEncoder();

Deno.test("pair store: the original tool's LMDB (pickled LMDB_ndarray values) reads correctly", async () => {
  const store = await openLmdbPairStore(pairPaths(ORIGINAL_ROOT).lmdb);
  assert.equal(store.length, 4);
  for (let i = 0; i < 4; i++) {
    const arr = await store.readPair(i);
    assert.equal(arr.dtype, "<f2");
    assert.deepEqual(arr.shape, [2, 4, 16, 16]);
    const f = halfBitsToFloat32(arr.data as Uint16Array);
    for (const j of [0, 1, 96, 97, 1000, 2047]) {
      assert.equal(f[j], originalValue(i, j), `pair ${i} [${j}]`);
    }
  }
  await assert.rejects(store.readPair(4), /pair index 4 out of range \[0, 4\)/);
  await store.close();
});

Deno.test("pair store: npy folder of the same fixture gives the same pairs", async () => {
  const lmdb = await openLmdbPairStore(pairPaths(ORIGINAL_ROOT).lmdb);
  const npy = openNpyPairStore(pairPaths(ORIGINAL_ROOT).images, 4);
  for (let i = 0; i < 4; i++) assert.deepEqual(await npy.readPair(i), await lmdb.readPair(i));
  await lmdb.close();
});

Deno.test("pair store: our LMDB format (npy values, ASCII __len__, JSON __keys__)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const w = await LmdbBulkWriter.create(dir);
    const pair = (i: number) => ({
      dtype: "<f2" as const,
      shape: [2, 1, 2, 2],
      data: Uint16Array.from({ length: 8 }, (_, j) => 0x3c00 + i * 8 + j),
    });
    // Keys listed in a different order than their index proves __keys__ is honoured.
    const keys = ["10", "11", "12"];
    for (let i = 0; i < 3; i++) await w.put(enc.encode(keys[i]), encodeNpy(pair(i)));
    await w.put(enc.encode("__len__"), enc.encode("3"));
    await w.put(enc.encode("__keys__"), enc.encode(JSON.stringify(keys)));
    await w.finish();
    const store = await openLmdbPairStore(dir);
    assert.equal(store.length, 3);
    for (let i = 0; i < 3; i++) assert.deepEqual(await store.readPair(i), pair(i));
    await store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pair store: errors name the database and key", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const w = await LmdbBulkWriter.create(`${dir}/a`);
    await w.put(enc.encode("0"), new Uint8Array([1, 2, 3]));
    await w.finish();
    await assert.rejects(
      openLmdbPairStore(`${dir}/a`),
      /\/a: LMDB pair database has no __len__ entry/,
    );

    const w2 = await LmdbBulkWriter.create(`${dir}/b`);
    await w2.put(enc.encode("__len__"), enc.encode("2"));
    await w2.put(
      enc.encode("0"),
      encodeNpy({ dtype: "<f2", shape: [3, 1], data: new Uint16Array(3) }),
    );
    await w2.finish();
    const s = await openLmdbPairStore(`${dir}/b`);
    await assert.rejects(
      s.readPair(0),
      /\/b key 0: a pair must have shape \[2, C, H, W\], got \[3,1\]/,
    );
    await assert.rejects(s.readPair(1), /\/b key 1: missing from the LMDB database/);
    await s.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assert.throws(
    () => validatePair({ dtype: "<f8", shape: [2, 1, 1, 1], data: new Float64Array(2) }, "p.npy"),
    /p\.npy: a pair must be float16/,
  );
});
