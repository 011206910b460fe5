import assert from "node:assert/strict";
import { data2lmdb } from "../../core/data/data2lmdb.ts";
import { LmdbFileReader } from "../../core/data/lmdb_file.ts";
import { pairNpyPath, pairPaths } from "../../core/data/pair_store.ts";
import { encodeNpy } from "../../core/data/npy.ts";
import { makePairRoot } from "./helpers.ts";

const dec = new TextDecoder();
const enc = new TextEncoder();

async function withRoot(n: number, fn: (root: string) => Promise<void>) {
  const root = await Deno.makeTempDir();
  try {
    await makePairRoot(root, n);
    await fn(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("data2lmdb: key i holds i.npy's bytes, __len__ and __keys__ as documented", async () => {
  await withRoot(12, async (root) => {
    const p = pairPaths(root);
    const progress: number[] = [];
    const res = await data2lmdb({
      dpath: p.images,
      batchSize: 5,
      onProgress: (d) => progress.push(d),
    });
    assert.deepEqual(res, { lmdbPath: p.lmdb, count: 12, format: "reflow", shape: [4, 2, 3] });
    assert.deepEqual(progress, [5, 10, 12]);
    assert.deepEqual([...Deno.readDirSync(p.content)].map((e) => e.name).sort(), [
      "captions.txt",
      "images",
      "lmdb",
    ]);
    const r = await LmdbFileReader.open(p.lmdb);
    assert.equal(r.entries, 14);
    for (let i = 0; i < 12; i++) {
      assert.deepEqual(
        await r.get(enc.encode(String(i))),
        await Deno.readFile(pairNpyPath(p.images, i)),
      );
    }
    assert.equal(dec.decode((await r.get(enc.encode("__len__")))!), "12");
    assert.deepEqual(
      JSON.parse(dec.decode((await r.get(enc.encode("__keys__")))!)),
      [...Array(12).keys()].map(String),
    );
    await r.close();
    await assert.rejects(data2lmdb({ dpath: p.images }), /lmdb already exists/);
    await data2lmdb({ dpath: `${p.images}/`, overwrite: true });
  });
});

Deno.test("data2lmdb: a gap in the npy folder is named", async () => {
  await withRoot(15, async (root) => {
    const p = pairPaths(root);
    await Deno.remove(pairNpyPath(p.images, 7));
    await Deno.remove(pairNpyPath(p.images, 11));
    await assert.rejects(
      data2lmdb({ dpath: p.images }),
      /15 captions but these pairs are missing: 7\.npy, 11\.npy/,
    );
    assert.equal(await Deno.stat(p.lmdb).then(() => true, () => false), false);
  });
});

Deno.test("data2lmdb: extra pairs, truncated and misshapen files are named; no db is left", async () => {
  await withRoot(4, async (root) => {
    const p = pairPaths(root);
    await Deno.copyFile(pairNpyPath(p.images, 0), pairNpyPath(p.images, 4));
    await assert.rejects(data2lmdb({ dpath: p.images }), /more pairs than the 4 captions.*4\.npy/);
    await Deno.remove(pairNpyPath(p.images, 4));

    const good = await Deno.readFile(pairNpyPath(p.images, 2));
    await Deno.writeFile(pairNpyPath(p.images, 2), good.subarray(0, good.length - 10));
    await assert.rejects(data2lmdb({ dpath: p.images }), /images\/2\.npy: truncated \.npy data/);

    await Deno.writeFile(
      pairNpyPath(p.images, 2),
      encodeNpy({ dtype: "<f2", shape: [2, 4, 3, 2], data: new Uint16Array(48) }),
    );
    await assert.rejects(
      data2lmdb({ dpath: p.images }),
      /2\.npy: pair shape \[2,4,3,2\] differs from \[2,4,2,3\]/,
    );

    await Deno.writeFile(
      pairNpyPath(p.images, 2),
      encodeNpy({ dtype: "<f4", shape: [2, 4, 2, 3], data: new Float32Array(48) }),
    );
    await assert.rejects(data2lmdb({ dpath: p.images }), /2\.npy: a pair must be float16/);
    assert.deepEqual([...Deno.readDirSync(p.content)].map((e) => e.name).sort(), [
      "captions.txt",
      "images",
    ]);

    await Deno.writeTextFile(`${p.images}/x.npy`, "");
    await assert.rejects(
      data2lmdb({ dpath: p.images }),
      /x\.npy: pair files must be named \{i\}\.npy/,
    );
  });
  await assert.rejects(
    data2lmdb({ dpath: "/nonexistent/content/images" }),
    /cannot read captions file/,
  );
});

Deno.test("data2lmdb script: runs from the command line", async () => {
  await withRoot(3, async (root) => {
    const p = pairPaths(root);
    const script = new URL("../../scripts/data2lmdb.ts", import.meta.url).pathname;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, "--dpath", p.images, "--batch-size", "2"],
    }).output();
    assert.ok(out.success, dec.decode(out.stderr));
    assert.match(dec.decode(out.stdout), /wrote 3 pairs of shape \[2, 4, 2, 3\]/);
    const bad = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, "--dpath", p.images],
    }).output();
    assert.equal(bad.code, 1);
    assert.match(dec.decode(bad.stderr), /already exists/);
  });
});
