import assert from "node:assert/strict";
import {
  buildCaptionList,
  loadCaptions,
  loadCocoCaptions,
  readCaptions,
  splitCaptionLines,
  writeCaptions,
} from "../../core/data/captions.ts";
import { PythonRandom } from "../../core/data/python_random.ts";

const FIX = new URL("../fixtures/data/", import.meta.url);
const fix = (name: string) => new URL(name, FIX).pathname;

interface ShuffleCase {
  n: number;
  total: number;
  seed: number | string;
  order?: number[];
  hash?: number;
  head?: number[];
  tail?: number[];
}
const shuffle = JSON.parse(await Deno.readTextFile(fix("shuffle_cases.json"))) as {
  cases: ShuffleCase[];
  bits: { seed: number; getrandbits40: number[]; getrandbits7: number[]; random: number[] };
};

Deno.test("PythonRandom matches CPython's getrandbits and random()", () => {
  const r = new PythonRandom(shuffle.bits.seed);
  assert.deepEqual(Array.from({ length: 5 }, () => r.getrandbits(40)), shuffle.bits.getrandbits40);
  assert.deepEqual(Array.from({ length: 5 }, () => r.getrandbits(7)), shuffle.bits.getrandbits7);
  assert.deepEqual(Array.from({ length: 5 }, () => r.random()), shuffle.bits.random);
});

Deno.test("buildCaptionList gives the original tool's order (python fixtures)", () => {
  for (const c of shuffle.cases) {
    const caps = Array.from({ length: c.n }, (_, i) => `c${i}`);
    const seed = typeof c.seed === "string" ? BigInt(c.seed) : c.seed;
    const order = buildCaptionList(caps, c.total, seed).map((s) => Number(s.slice(1)));
    assert.equal(order.length, c.total);
    const label = `n=${c.n} total=${c.total} seed=${c.seed}`;
    if (c.order) assert.deepEqual(order, c.order, label);
    else {
      let h = 0;
      for (const v of order) h = (h * 31 + v) % 2147483647;
      assert.equal(h, c.hash, label);
      assert.deepEqual(order.slice(0, 20), c.head, label);
      assert.deepEqual(order.slice(-20), c.tail, label);
    }
  }
});

Deno.test("buildCaptionList rejects bad settings", () => {
  assert.throws(
    () => buildCaptionList(["a"], 0, 1),
    /total_nums must be a positive integer, got 0/,
  );
  assert.throws(() => buildCaptionList(["a"], -3, 1), /total_nums/);
  assert.throws(() => buildCaptionList([], 5, 1), /caption list is empty/);
});

Deno.test("COCO captions are cleaned like the original", async () => {
  const want = JSON.parse(await Deno.readTextFile(fix("captions_val2014.expected.json")));
  assert.deepEqual(await loadCocoCaptions(fix("captions_val2014.json")), want);
  assert.deepEqual(await loadCaptions(fix("captions_val2014.json")), want);
});

Deno.test("COCO loading errors name the file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      loadCocoCaptions(`${dir}/missing.json`),
      /cannot read COCO annotation file .*missing\.json/,
    );
    await Deno.writeTextFile(`${dir}/bad.json`, "{ not json");
    await assert.rejects(loadCocoCaptions(`${dir}/bad.json`), /bad\.json: not valid JSON/);
    await Deno.writeTextFile(`${dir}/noann.json`, `{"images": []}`);
    await assert.rejects(
      loadCocoCaptions(`${dir}/noann.json`),
      /noann\.json: no "annotations" array/,
    );
    await Deno.writeTextFile(`${dir}/nocap.json`, `{"annotations": [{"caption": "x"}, {"id": 2}]}`);
    await assert.rejects(loadCocoCaptions(`${dir}/nocap.json`), /annotations\[1\]\.caption/);
    await Deno.writeTextFile(`${dir}/empty.txt`, "");
    await assert.rejects(loadCaptions(`${dir}/empty.txt`), /empty\.txt: no captions found/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("caption files: split on \\n only, CRLF, trailing newline, round trip", async () => {
  assert.deepEqual(splitCaptionLines("a\nb\n"), ["a", "b"]);
  assert.deepEqual(splitCaptionLines("a\r\nb\r\n"), ["a", "b"]);
  assert.deepEqual(splitCaptionLines("a\n\nb"), ["a", "", "b"]);
  assert.deepEqual(splitCaptionLines(""), []);
  const dir = await Deno.makeTempDir();
  try {
    const caps = [
      "first",
      "with\rcarriage",
      "line\u2028separator",
      "para\u2029sep",
      "",
      "last \u0085 nel",
    ];
    const path = `${dir}/captions.txt`;
    await writeCaptions(path, caps);
    assert.equal(await Deno.readTextFile(path), caps.join("\n")); // as the original: no final newline
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["captions.txt"]);
    const back = await readCaptions(path);
    assert.deepEqual(back, caps.map((c) => (c.endsWith("\r") ? c.slice(0, -1) : c)));
    assert.equal(back[3], "para\u2029sep");
    await assert.rejects(writeCaptions(path, ["ok", "bad\nline"]), /caption 1 contains a newline/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
