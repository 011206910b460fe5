import assert from "node:assert/strict";
import { createProgress, formatDuration, formatFields } from "../../core/util/progress.ts";

Deno.test("formatDuration and formatFields", () => {
  assert.equal(formatDuration(0), "0:00");
  assert.equal(formatDuration(75), "1:15");
  assert.equal(formatDuration(3 * 3600 + 5 * 60 + 9), "3:05:09");
  assert.equal(formatDuration(NaN), "?");
  assert.equal(
    formatFields({ loss: 0.0123456, step: 20, lr: 1e-4, tag: "x" }),
    "loss=0.0123 step=20 lr=1.000e-4 tag=x",
  );
});

Deno.test("non-terminal: periodic lines with rate, ETA and fields", () => {
  let t = 0;
  const lines: string[] = [];
  const p = createProgress({
    total: 100,
    label: "Steps",
    start: 20,
    tty: false,
    logIntervalSecs: 10,
    log: (l) => lines.push(l),
    now: () => t,
  });
  t = 1000;
  p.update(22, { loss: 0.5 }); // first update always logs: 2 items in 1 s
  assert.deepEqual(lines, ["Steps 22/100 (22.0%) 2.00 it/s elapsed 0:01 ETA 0:39 loss=0.5000"]);
  t = 5000;
  p.increment(2, { loss: 0.25 }); // inside the interval: quiet
  assert.equal(lines.length, 1);
  t = 12000;
  p.increment(); // 12 s after the first line
  assert.equal(lines.length, 2);
  assert.match(
    lines[1],
    /^Steps 25\/100 \(25\.0%\) 2\.40 s\/it elapsed 0:12 ETA 3:00 loss=0\.2500$/,
  );
  t = 13000;
  p.update(100); // the end always logs
  assert.equal(lines.length, 3);
  assert.match(lines[2], /^Steps 100\/100 \(100\.0%\) /);
  p.stop(); // nothing new to say
  assert.equal(lines.length, 3);
  assert.equal(p.value, 100);
});

Deno.test("non-terminal: stop writes the last state; slow loops show s/it", () => {
  let t = 0;
  const lines: string[] = [];
  const p = createProgress({
    total: 10,
    unit: "pair",
    tty: false,
    log: (l) => lines.push(l),
    now: () => t,
  });
  t = 4000;
  p.increment();
  t = 8000;
  p.increment();
  p.stop();
  assert.equal(lines.length, 2);
  assert.match(lines[1], /^Progress 2\/10 \(20\.0%\) 4\.00 s\/pair elapsed 0:08 ETA 0:32$/);
});

Deno.test("terminal: draws a cli-progress bar with the fields", () => {
  let out = "";
  const stream = { isTTY: true, columns: 200, write: (s: string) => (out += s, true) };
  let t = 0;
  const p = createProgress({ total: 50, label: "Samples", stream, now: () => t });
  t = 2000;
  p.update(10, { loss: 0.125 });
  p.stop();
  const esc = String.fromCharCode(27);
  const plain = out.split(esc).map((s) => s.replace(/^\[[0-9;?]*[A-Za-z]|^[78]/, "")).join("");
  assert.match(plain, /Samples \|.*\| 10\/50 20% \| 5\.00 it\/s \| 0:02 < 0:08 loss=0\.1250/);
});
