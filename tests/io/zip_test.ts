import assert from "node:assert/strict";
import { FormatError } from "../../core/io/format_error.ts";
import { ZipReader } from "../../core/io/zip.ts";
import { fixture, withTempDir } from "./_fixtures.ts";
import { buildZip } from "./_zip_builder.ts";

async function withZip(bytes: Uint8Array, fn: (path: string) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    const path = `${dir}/t.zip`;
    await Deno.writeFile(path, bytes);
    await fn(path);
  });
}

const enc = new TextEncoder();

Deno.test("zip: reads stored and deflated entries written by Python's zipfile", async () => {
  const z = await ZipReader.open(fixture("mixed.zip"));
  try {
    assert.deepEqual(z.entries().map((e) => [e.name, e.method]), [
      ["stored.txt", 0],
      ["dir/deflated.txt", 8],
    ]);
    assert.deepEqual(await z.read("stored.txt"), enc.encode("0123456789".repeat(10)));
    assert.deepEqual(await z.read("dir/deflated.txt"), enc.encode("hello deflate ".repeat(50)));
    assert.deepEqual(await z.readRange("stored.txt", 15, 7), enc.encode("5678901"));
    await assert.rejects(z.readRange("dir/deflated.txt", 0, 4), /compressed; ranges need stored/);
    await assert.rejects(z.readRange("stored.txt", 95, 6), /outside zip entry "stored.txt"/);
    await assert.rejects(z.read("missing"), /no zip entry named "missing"/);
  } finally {
    z.close();
  }
});

Deno.test("zip: ranges of a torch checkpoint's storages equal slices of whole reads", async () => {
  const z = await ZipReader.open(fixture("state_dict.bin"));
  try {
    const names = z.entries().map((e) => e.name);
    assert.ok(names.includes("state_dict/data.pkl"));
    const whole = await z.read("state_dict/data/4");
    assert.equal(whole.length, 80);
    assert.deepEqual(await z.readRange("state_dict/data/4", 24, 32), whole.slice(24, 56));
  } finally {
    z.close();
  }
});

Deno.test("zip: ZIP64 records and extra fields are honoured", async () => {
  const files = [
    { name: "a/data.pkl", data: enc.encode("first entry") },
    { name: "a/data/0", data: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]) },
  ];
  for (const zip64 of [false, true]) {
    await withZip(buildZip(files, zip64), async (path) => {
      const z = await ZipReader.open(path);
      try {
        assert.deepEqual(z.entries().map((e) => [e.name, e.uncompressedSize]), [
          ["a/data.pkl", 11],
          ["a/data/0", 8],
        ]);
        assert.deepEqual(await z.read("a/data.pkl"), files[0].data);
        assert.deepEqual(await z.readRange("a/data/0", 2, 3), new Uint8Array([3, 4, 5]));
      } finally {
        z.close();
      }
    });
  }
});

Deno.test("zip: truncated or corrupted archives are refused with clear errors", async () => {
  await assert.rejects(
    ZipReader.open(fixture("truncated.bin")),
    /truncated.*end-of-central-directory/,
  );
  const good = buildZip([{ name: "x", data: enc.encode("payload!") }]);

  await withZip(good.slice(0, 10), async (p) => {
    await assert.rejects(ZipReader.open(p), /too short to be a zip/);
  });

  const badCentral = good.slice();
  badCentral[30 + 1 + 3 + 8] ^= 0xff; // first byte of the central directory signature
  await withZip(badCentral, async (p) => {
    await assert.rejects(ZipReader.open(p), /central directory entry 0 has a bad signature/);
  });

  const badLocal = good.slice();
  badLocal[0] = 0;
  await withZip(badLocal, async (p) => {
    const z = await ZipReader.open(p);
    await assert.rejects(z.read("x"), /"x" has a bad local header signature/);
    z.close();
  });

  const badCrc = good.slice();
  badCrc[30 + 1 + 3] ^= 1; // first data byte
  await withZip(badCrc, async (p) => {
    const z = await ZipReader.open(p);
    await assert.rejects(z.read("x"), /"x" fails its CRC-32 check/);
    assert.deepEqual(await z.readRange("x", 1, 3), enc.encode("ayl")); // ranges are not checked
    z.close();
  });

  // An entry whose declared size runs past the data region (into the directory / past EOF).
  const tooLong = good.slice();
  const dv = new DataView(tooLong.buffer);
  const cd = 30 + 1 + 3 + 8;
  dv.setUint32(cd + 20, 1 << 30, true);
  dv.setUint32(cd + 24, 1 << 30, true);
  await withZip(tooLong, async (p) => {
    const z = await ZipReader.open(p);
    await assert.rejects(z.read("x"), /"x" data \(1073741824 bytes at 34\) runs past/);
    z.close();
  });

  // A directory that claims to extend past its end record.
  const cdPast = good.slice();
  new DataView(cdPast.buffer).setUint32(cdPast.length - 22 + 12, 5000, true);
  await withZip(cdPast, async (p) => {
    await assert.rejects(ZipReader.open(p), /central directory .* runs past its end record/);
  });
});

Deno.test("zip: a zip64 field longer than the entry's extra data is named, not read past", async () => {
  const files = [{ name: "a/data.pkl", data: enc.encode("first entry") }];
  const zip = buildZip(files, true);
  const dv = new DataView(zip.buffer);
  // The central entry follows the local header (30 + name + 3 padding) and the data.
  const cd = 30 + 10 + 3 + 11;
  assert.equal(dv.getUint32(cd, true), 0x02014b50);
  // The entry's extra data shrinks to 12 bytes; its zip64 field still says 24 (3 values).
  dv.setUint16(cd + 30, 12, true);
  await withZip(zip, async (p) => {
    await assert.rejects(
      ZipReader.open(p),
      (err: Error) =>
        err instanceof FormatError &&
        err.message === `${p}: zip64 extra field of "a/data.pkl" short`,
    );
  });
});
