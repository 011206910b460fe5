import assert from "node:assert/strict";
import {
  buildCaptionList,
  captionProblem,
  cleanCocoCaption,
  loadCaptions,
  loadCocoCaptions,
  parseCaptionLines,
  readCaptions,
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

Deno.test("COCO captions are cleaned like the original; odd ones are refused by annotation", async () => {
  const want = JSON.parse(await Deno.readTextFile(fix("captions_val2014.expected.json")));
  const raw = JSON.parse(await Deno.readTextFile(fix("captions_val2014.json"))).annotations
    .map((a: { caption: string }) => a.caption);
  assert.deepEqual(raw.map(cleanCocoCaption), want);
  // The fixture holds a tab, an only-spaces and a carriage-return caption: the first is named.
  await assert.rejects(
    loadCocoCaptions(fix("captions_val2014.json")),
    /captions_val2014\.json: annotations\[2\]\.caption "\\tTabbed caption " contains the control character U\+0009 \(tab\) at column 1 after cleaning/,
  );
  const dir = await Deno.makeTempDir();
  try {
    const good = [0, 1, 3, 5].map((i) => raw[i]);
    const annotations = good.map((caption: string, id: number) => ({ id, caption }));
    await Deno.writeTextFile(`${dir}/ok.json`, JSON.stringify({ annotations }));
    const expected = [0, 1, 3, 5].map((i) => want[i]);
    assert.deepEqual(await loadCocoCaptions(`${dir}/ok.json`), expected);
    assert.deepEqual(await loadCaptions(`${dir}/ok.json`), expected);
    // A leading byte order mark is dropped.
    await Deno.writeTextFile(`${dir}/bom.json`, "\uFEFF" + JSON.stringify({ annotations }));
    assert.deepEqual(await loadCocoCaptions(`${dir}/bom.json`), expected);
    await Deno.writeTextFile(
      `${dir}/blank.json`,
      JSON.stringify({ annotations: [{ caption: "  " }] }),
    );
    await assert.rejects(
      loadCocoCaptions(`${dir}/blank.json`),
      /annotations\[0\]\.caption " {2}" is empty after cleaning/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
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
    await Deno.writeFile(
      `${dir}/latin1.json`,
      Uint8Array.from([
        ...new TextEncoder().encode('{"annotations": [{"caption": "caf'),
        0xe9,
        0x22,
        0x7d,
        0x5d,
        0x7d,
      ]),
    );
    await assert.rejects(loadCocoCaptions(`${dir}/latin1.json`), /latin1\.json:1: not valid UTF-8/);
    await Deno.writeTextFile(`${dir}/empty.txt`, "");
    await assert.rejects(loadCaptions(`${dir}/empty.txt`), /empty\.txt: no captions found/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("caption lines: \\n and CRLF, a final newline; odd lines refused by line number", () => {
  assert.deepEqual(parseCaptionLines("a\nb\n"), ["a", "b"]);
  assert.deepEqual(parseCaptionLines("a\r\nb\r\n"), ["a", "b"]);
  assert.deepEqual(parseCaptionLines("a\nb"), ["a", "b"]);
  assert.deepEqual(parseCaptionLines(""), []);
  const refused: [string, RegExp][] = [
    // The case: blank lines after the last caption would be captions "" (one lost later).
    ["a red circle\n\n\n\n", /f\.txt:2: the caption is empty/],
    ["a\n\nb", /f\.txt:2: the caption is empty/],
    ["a\n \t \nb", /f\.txt:2: the caption holds only whitespace/],
    [
      "x\r\r\ny",
      /f\.txt:1: the caption contains the control character U\+000D \(carriage return\) at column 2/,
    ],
    ["a\rb\nc", /f\.txt:1: .*U\+000D/],
    ["ok\nwith\ttab", /f\.txt:2: .*U\+0009 \(tab\) at column 5/],
    ["ok\nnul\0", /f\.txt:2: .*U\+0000/],
    ["del\x7f", /f\.txt:1: .*U\+007F/],
    ["next \u0085 line", /f\.txt:1: .*U\+0085 \(next line\)/],
    ["line\u2028separator", /f\.txt:1: .*U\+2028 \(line separator\)/],
    ["para\u2029sep", /f\.txt:1: .*U\+2029 \(paragraph separator\)/],
    ["a\n\uFEFFb", /f\.txt:2: .*U\+FEFF \(byte order mark\)/],
    ["lone \uD800 surrogate", /f\.txt:1: .*lone surrogate U\+D800/],
  ];
  for (const [text, re] of refused) {
    assert.throws(() => parseCaptionLines(text, "f.txt"), re, JSON.stringify(text));
  }
  assert.equal(captionProblem("a photo of a \u{1F431} caf\u00e9"), null);
  assert.equal(captionProblem("  leading and trailing spaces  "), null);
});

Deno.test("captions files: strict UTF-8 with the line named, a leading BOM dropped", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const enc = new TextEncoder();
    await Deno.writeFile(`${dir}/bom.txt`, enc.encode("\uFEFFfirst\r\nsecond\r\n"));
    assert.deepEqual(await readCaptions(`${dir}/bom.txt`), ["first", "second"]);
    assert.deepEqual(await loadCaptions(`${dir}/bom.txt`), ["first", "second"]);
    // Latin-1 "café" on line 3: refused, never replaced by U+FFFD.
    await Deno.writeFile(
      `${dir}/latin1.txt`,
      Uint8Array.from([...enc.encode("one\ntwo\ncaf"), 0xe9, ...enc.encode("\nfour")]),
    );
    await assert.rejects(readCaptions(`${dir}/latin1.txt`), /latin1\.txt:3: not valid UTF-8 text/);
    await Deno.writeTextFile(`${dir}/blank.txt`, "a red circle\n\n\n\n");
    await assert.rejects(loadCaptions(`${dir}/blank.txt`), /blank\.txt:2: the caption is empty/);
    await assert.rejects(readCaptions(`${dir}/missing.txt`), /cannot read captions file/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("captions.txt: whatever the writer accepts reads back exactly; the rest is refused", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/captions.txt`;
    const caps = [
      "first",
      "  spaces around  ",
      "\u00dcn\u00efcode \u2603 and \u{1F431}",
      "quotes \" ' and \\ backslash",
      "last",
    ];
    await writeCaptions(path, caps);
    assert.equal(await Deno.readTextFile(path), caps.join("\n")); // as the original: no final newline
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["captions.txt"]);
    assert.deepEqual(await readCaptions(path), caps);
    // The original reads captions.txt with str.splitlines(): the same lines (Python, if present).
    const py = await new Deno.Command("/usr/bin/python3", {
      args: [
        "-c",
        "import sys,json; print(json.dumps(open(sys.argv[1], encoding='utf-8').read().splitlines()))",
        path,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output().catch(() => null);
    if (py?.success) assert.deepEqual(JSON.parse(new TextDecoder().decode(py.stdout)), caps);
    else console.log("python3 not available: the splitlines check is skipped");

    for (
      const [bad, re] of [
        ["", /caption 1 is empty/],
        ["bad\nline", /caption 1 contains the control character U\+000A/],
        ["ends in CR\r", /caption 1 contains .*U\+000D/],
        ["\uFEFFbom", /caption 1 contains .*U\+FEFF/],
        ["   ", /caption 1 holds only whitespace/],
      ] as const
    ) {
      await assert.rejects(writeCaptions(path, ["ok", bad]), re);
    }
    assert.deepEqual(await readCaptions(path), caps, "a refused write leaves the file as it was");

    // Random captions over an alphabet of plain and troublesome characters: each is either
    // refused by the writer or read back exactly (never read back differently).
    const alphabet = [
      "a",
      "b",
      " ",
      "\n",
      "\r",
      "\t",
      "\u2028",
      "\u0085",
      "\uFEFF",
      "\u00e9",
      "\u{1F431}",
      "\uD800",
      "\u00a0",
      "#",
      "\\",
    ];
    let state = 12345;
    const rnd = (n: number) => {
      state = (state * 1103515245 + 12345) % 2147483648;
      return state % n;
    };
    let accepted = 0;
    for (let trial = 0; trial < 300; trial++) {
      const list = Array.from(
        { length: 1 + rnd(4) },
        () => Array.from({ length: rnd(6) }, () => alphabet[rnd(alphabet.length)]).join(""),
      );
      const ok = await writeCaptions(path, list).then(() => true, () => false);
      assert.equal(ok, list.every((c) => captionProblem(c) === null), JSON.stringify(list));
      if (ok) {
        accepted++;
        assert.deepEqual(await readCaptions(path), list, JSON.stringify(list));
      }
    }
    assert.ok(accepted > 10 && accepted < 290, `accepted ${accepted} of 300`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
