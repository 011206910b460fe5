import assert from "node:assert/strict";
import { EpochSampler, openPairDataset, prefetchBatches } from "../../core/data/dataset.ts";
import { data2lmdb } from "../../core/data/data2lmdb.ts";
import { pairPaths } from "../../core/data/pair_store.ts";
import {
  makePairRoot,
  ORIGINAL_CAPTIONS,
  ORIGINAL_ROOT,
  originalValue,
  synthValue,
} from "./helpers.ts";

Deno.test("dataset: one root, npy and LMDB give the same examples", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await makePairRoot(dir, 5, [2, 3, 2]);
    const npy = await openPairDataset(dir); // no lmdb yet: npy
    assert.equal(npy.length, 5);
    const ex = await npy.get(3);
    assert.deepEqual(ex.shape, [2, 3, 2]);
    assert.equal(ex.caption, "cap0_3");
    assert.deepEqual([...ex.z0], Array.from({ length: 12 }, (_, j) => synthValue(0, 3, j)));
    assert.deepEqual([...ex.z1], Array.from({ length: 12 }, (_, j) => synthValue(0, 3, j + 12)));
    await data2lmdb({ dpath: pairPaths(dir).images });
    const lmdb = await openPairDataset(dir); // auto picks the LMDB now
    const viaNpy = await openPairDataset(dir, { source: "npy" });
    for (let i = 0; i < 5; i++) assert.deepEqual(await lmdb.get(i), await viaNpy.get(i));
    const batch = await lmdb.getBatch([4, 0]);
    assert.deepEqual(batch.captions, ["cap0_4", "cap0_0"]);
    assert.deepEqual(batch.z0.subarray(12, 24), ex.z0.map((_, j) => synthValue(0, 0, j)));
    assert.equal(batch.z1.length, 24);
    await assert.rejects(lmdb.get(5), /pair index 5 out of range \[0, 5\)/);
    await lmdb.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dataset: part* folders concatenate in part-number order; unusable parts skipped", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await makePairRoot(`${dir}/part10`, 2, [1, 2, 2], 10);
    await makePairRoot(`${dir}/part2`, 3, [1, 2, 2], 2);
    await Deno.mkdir(`${dir}/part5`); // no index.json: skipped with a warning
    await Deno.mkdir(`${dir}/other`);
    const ds = await openPairDataset(dir);
    assert.equal(ds.length, 5);
    assert.deepEqual(ds.partRoots, [`${dir}/part2`, `${dir}/part10`]);
    const captions = await Promise.all([0, 1, 2, 3, 4].map(async (i) => (await ds.get(i)).caption));
    assert.deepEqual(captions, ["cap2_0", "cap2_1", "cap2_2", "cap10_0", "cap10_1"]);
    assert.equal((await ds.get(4)).z0[1], synthValue(10, 1, 1));
    await assert.rejects(
      openPairDataset(`${dir}/part5`),
      /no index\.json and no usable part\* folders/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dataset: the original tool's LMDB root reads with captions", async () => {
  const ds = await openPairDataset(ORIGINAL_ROOT, { source: "lmdb" });
  assert.equal(ds.length, 4);
  const ex = await ds.get(2);
  assert.equal(ex.caption, ORIGINAL_CAPTIONS[2]);
  assert.deepEqual(ex.shape, [4, 16, 16]);
  assert.equal(ex.z0[5], originalValue(2, 5));
  assert.equal(ex.z1[5], originalValue(2, 1024 + 5));
  await ds.close();
});

Deno.test("EpochSampler: seeded permutations, dropLast, resumable", () => {
  const s = new EpochSampler(10, 3, 2333, true);
  assert.equal(s.batchesPerEpoch, 3);
  const e0 = [...s.epochOrder(0)];
  assert.deepEqual([...e0].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.notDeepEqual([...s.epochOrder(1)], e0);
  assert.deepEqual([...new EpochSampler(10, 3, 2333).epochOrder(0)], e0); // deterministic
  assert.notDeepEqual([...new EpochSampler(10, 3, 2334).epochOrder(0)], e0);
  const it = s.batches();
  const first7 = Array.from({ length: 7 }, () => it.next().value!);
  assert.deepEqual(first7.map((b) => [b.epoch, b.position]), [
    [0, 0],
    [0, 1],
    [0, 2],
    [1, 0],
    [1, 1],
    [1, 2],
    [2, 0],
  ]);
  assert.deepEqual(first7[1].indices, e0.slice(3, 6));
  const resumed = new EpochSampler(10, 3, 2333).batches({ epoch: 1, position: 1 }).next().value!;
  assert.deepEqual(resumed, first7[4]);
  const keep = new EpochSampler(10, 3, 7, false);
  assert.equal(keep.batchesPerEpoch, 4);
  assert.equal(keep.batch(0, 3).length, 1);
  assert.throws(() => new EpochSampler(2, 3, 1, true), /cannot fill one batch/);
  assert.throws(() => s.batch(0, 3), /batch position 3 outside \[0, 3\)/);
});

Deno.test("prefetchBatches: same batches as direct reads, in order", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await makePairRoot(dir, 7, [1, 1, 2]);
    const ds = await openPairDataset(dir);
    const sampler = new EpochSampler(ds.length, 2, 1);
    const got = [];
    for await (
      const b of prefetchBatches(ds, sampler, {
        depth: 3,
        limit: 5,
        start: { epoch: 0, position: 1 },
      })
    ) {
      got.push(b);
    }
    assert.deepEqual(got.map((b) => [b.epoch, b.position]), [[0, 1], [0, 2], [1, 0], [1, 1], [
      1,
      2,
    ]]);
    for (const b of got) {
      const direct = await ds.getBatch(sampler.batch(b.epoch, b.position));
      assert.deepEqual(b.z0, direct.z0);
      assert.deepEqual(b.captions, direct.captions);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
