import assert from "node:assert/strict";
import { join } from "node:path";
import { createLogger, formatTimestamp } from "../../core/util/log.ts";

Deno.test("formatTimestamp is local time with milliseconds", () => {
  const d = new Date(2024, 0, 2, 3, 4, 5, 6);
  assert.equal(formatTimestamp(d), "2024-01-02 03:04:05.006");
});

Deno.test("logger writes to console and file, respects level, appends", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const file = join(dir, "run", "exp.log"); // folder created on demand
    let echoed = "";
    const now = () => new Date(2024, 4, 1, 12, 0, 0, 250);
    const log = createLogger({ file, console: { write: (s: string) => (echoed += s) }, now });
    log.debug("hidden");
    log.info("step 20 | training_loss 0.12345");
    log.warn("multi\nline");
    log.close();
    log.error("after close"); // console only
    const text = Deno.readTextFileSync(file);
    assert.equal(
      text,
      "2024-05-01 12:00:00.250 | INFO  | step 20 | training_loss 0.12345\n" +
        "2024-05-01 12:00:00.250 | WARN  | multi\nline\n",
    );
    assert.equal(echoed, text + "2024-05-01 12:00:00.250 | ERROR | after close\n");

    const again = createLogger({ file, level: "debug", console: false, now });
    again.debug("more");
    again.close();
    assert.ok(Deno.readTextFileSync(file).startsWith(text));
    assert.ok(Deno.readTextFileSync(file).endsWith("| DEBUG | more\n"));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("logger: addFile, bad file and level name the problem", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const log = createLogger({ console: false });
    log.info("nowhere");
    log.addFile(join(dir, "sample.log"));
    log.info("somewhere");
    log.close();
    assert.match(
      Deno.readTextFileSync(join(dir, "sample.log")),
      /^\S+ \S+ \| INFO {2}\| somewhere\n$/,
    );
    Deno.writeTextFileSync(join(dir, "afile"), "");
    assert.throws(() => createLogger({ file: join(dir, "afile", "x.log") }), /afile\/x\.log/);
    // deno-lint-ignore no-explicit-any
    assert.throws(() => createLogger({ level: "loud" as any }), /loud/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
