/**
 * The demo's report: `report.json` (per column `{name, steps, accuracy, seconds_per_image,
 * straightness}` plus the run's settings and the loss curve) and `index.html`, a page a person can
 * open: per prompt the pictures of every column with the checker's verdict, the table of numbers,
 * the student's training-loss curve (inline SVG) and how the numbers were made.
 *
 * @module
 */

import { join } from "node:path";
import { saveImage } from "../io/png.ts";
import { toUnitRange } from "../flow/images.ts";
import type { ImageTensor } from "../io/png.ts";
import { writeFileAtomic } from "../data/atomic_write.ts";
import type { CheckResult } from "./checker.ts";

/** One column of the report: a model and a sampler. */
export interface DemoColumn {
  name: string;
  /** Solver steps (Euler steps for students, DPM-Solver++ steps for the teacher). */
  steps: number;
  /** Checker accuracy over all evaluation samples. */
  accuracy: number;
  seconds_per_image: number;
  /** Straightness of the model's paths (see teacher_paths.ts / path_stats.ts). */
  straightness: number;
  /** Free text under the column's name. */
  note: string;
  /** Pictures [3, H, W] in [-1, 1], one per evaluation sample. */
  images: Float32Array[];
  checks: CheckResult[];
}

/** Everything the report shows. */
export interface DemoReportInput {
  title: string;
  captions: string[];
  columns: DemoColumn[];
  /** (step, training loss) of the student's run. */
  loss: [number, number][];
  evalLoss: [number, number][];
  settings: Record<string, unknown>;
  /** Lines describing each stage's wall time. */
  timings: Record<string, number>;
  size: number;
}

/** Nearest-neighbour upscaling of a [3, H, W] picture in [-1, 1] to [0, 1] values. */
export function upscale(pixels: Float32Array, size: number, factor: number): ImageTensor {
  const S = size * factor;
  const data = new Float32Array(3 * S * S);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < S; y++) {
      for (let x = 0; x < S; x++) {
        const v = pixels[c * size * size + Math.floor(y / factor) * size + Math.floor(x / factor)];
        data[c * S * S + y * S + x] = toUnitRange(v);
      }
    }
  }
  return { data, channels: 3, height: S, width: S };
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(
    /"/g,
    "&quot;",
  );
}

/** An SVG line chart of (x, y) series. */
export function lossSvg(
  series: { name: string; color: string; points: [number, number][] }[],
): string {
  const W = 560, H = 240, L = 56, R = 16, T = 16, B = 36;
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return `<p>(no loss values were logged)</p>`;
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const y0 = 0, y1 = Math.max(...ys) * 1.05 || 1;
  const sx = (x: number) => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = (y: number) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => y0 + f * (y1 - y0));
  let svg =
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" class="chart" role="img">`;
  svg += `<rect x="${L}" y="${T}" width="${W - L - R}" height="${
    H - T - B
  }" fill="#fafafa" stroke="#ccc"/>`;
  for (const t of ticks) {
    svg += `<line x1="${L}" x2="${W - R}" y1="${sy(t)}" y2="${sy(t)}" stroke="#e4e4e4"/>`;
    svg += `<text x="${L - 6}" y="${sy(t) + 4}" text-anchor="end" font-size="11">${
      t.toPrecision(2)
    }</text>`;
  }
  svg += `<text x="${L}" y="${H - 8}" font-size="11">step ${x0}</text>`;
  svg += `<text x="${W - R}" y="${H - 8}" font-size="11" text-anchor="end">step ${x1}</text>`;
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const d = s.points.map((p, k) =>
      `${k ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`
    )
      .join(" ");
    svg += `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"/>`;
    svg += `<text x="${L + 110 + 150 * i}" y="${H - 8}" font-size="12" fill="${s.color}">■ ${
      esc(s.name)
    }</text>`;
  });
  return svg + "</svg>";
}

const fmtS = (s: number) => s >= 0.1 ? `${s.toFixed(2)} s` : `${(s * 1000).toFixed(1)} ms`;
const pct = (a: number) => `${(100 * a).toFixed(0)}%`;

/** The report's rows: the first evaluation sample of each distinct prompt. */
function promptRows(captions: readonly string[]): number[] {
  const rows: number[] = [];
  const seen = new Set<string>();
  captions.forEach((c, i) => {
    if (!seen.has(c)) {
      seen.add(c);
      rows.push(i);
    }
  });
  return rows;
}

/** report.json: the columns' numbers, the prompts, the loss curves, settings and timings. */
function reportJson(r: DemoReportInput, rows: readonly number[]): Record<string, unknown> {
  return {
    title: r.title,
    columns: r.columns.map((c) => ({
      name: c.name,
      steps: c.steps,
      accuracy: c.accuracy,
      seconds_per_image: c.seconds_per_image,
      straightness: c.straightness,
    })),
    samples: r.captions.length,
    prompts: rows.map((i) => r.captions[i]),
    loss_curve: r.loss,
    eval_loss_curve: r.evalLoss,
    settings: r.settings,
    timings_seconds: r.timings,
  };
}

/** The picture grid's header cells and rows: each column's picture and checker verdict. */
function pictureGrid(r: DemoReportInput, rows: readonly number[]): { head: string; body: string } {
  const head = r.columns.map((c) =>
    `<th>${esc(c.name)}<div>${c.steps} step${c.steps > 1 ? "s" : ""}</div><div class="sub">${
      esc(c.note)
    }</div></th>`
  ).join("");
  const body = rows.map((i) => {
    const cells = r.columns.map((c, k) => {
      const ok = c.checks[i].match;
      const seen = c.checks[i].seen;
      const what = seen.shape
        ? `${seen.color} ${seen.shape}${seen.position ? `, ${seen.position}` : ""}`
        : "nothing";
      return `<td><img src="images/c${k}_${i}.png" width="96" height="96" alt="${esc(c.name)}: ${
        esc(r.captions[i])
      }"><div class="${ok ? "ok" : "bad"}">${ok ? "✓" : "✗"} ${esc(what)}</div></td>`;
    }).join("");
    return `<tr><th class="prompt">${esc(r.captions[i])}</th>${cells}</tr>`;
  }).join("\n");
  return { head, body };
}

/** The numbers table's rows: steps, accuracy, time per image and straightness per column. */
function numbersTable(columns: readonly DemoColumn[]): string {
  return columns.map((c) =>
    `<tr><td>${esc(c.name)}</td><td>${c.steps}</td><td>${pct(c.accuracy)}</td><td>${
      fmtS(c.seconds_per_image)
    }</td><td>${c.straightness.toExponential(2)}</td></tr>`
  ).join("\n");
}

/** One line per student: its one-step score against the teacher's full solver (column 0). */
function headlines(columns: readonly DemoColumn[]): string {
  const teacher = columns[0];
  return columns.filter((c) => /student/i.test(c.name) && c.steps === 1).map((c) => {
    const ratio = teacher.accuracy > 0 ? c.accuracy / teacher.accuracy : NaN;
    const speed = teacher.seconds_per_image / Math.max(1e-9, c.seconds_per_image);
    return `<p class="headline">One Euler step of the ${esc(c.name)} scores <b>${
      pct(c.accuracy)
    }</b> against <b>${pct(teacher.accuracy)}</b> for the teacher's ${teacher.steps} steps (${
      Number.isFinite(ratio) ? pct(ratio) : "n/a"
    } of it), ${speed.toFixed(0)}x faster per image.</p>`;
  }).join("\n");
}

/** index.html: headline, picture grid, numbers, loss chart and the run's settings. */
function reportHtml(r: DemoReportInput, rows: readonly number[]): string {
  const { head, body } = pictureGrid(r, rows);
  const table = numbersTable(r.columns);
  const headline = headlines(r.columns);
  const timing = Object.entries(r.timings).map(([k, v]) => `${esc(k)} ${v.toFixed(0)} s`).join(
    " · ",
  );
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(r.title)}</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.lead{color:#555;margin:0 0 12px} .headline{font-size:16px;background:#f3f7ff;border-left:4px solid #4a7bd0;padding:8px 12px}
table{border-collapse:collapse} td,th{padding:4px 8px;text-align:center;vertical-align:top}
.grid th{font-size:13px} .grid th.prompt{text-align:right;font-weight:500;white-space:nowrap;vertical-align:middle}
.grid img{image-rendering:pixelated;border:1px solid #bbb;display:block;margin:auto}
.sub{font-weight:normal;color:#666;font-size:11px;max-width:130px;margin:auto}
.ok{color:#137333;font-size:11px} .bad{color:#b3261e;font-size:11px}
.nums td,.nums th{border-bottom:1px solid #ddd;text-align:right} .nums td:first-child,.nums th:first-child{text-align:left}
.note{color:#555;font-size:13px;max-width:900px} code{background:#f2f2f2;padding:0 3px}
</style></head><body>
<h1>${esc(r.title)}</h1>
<p class="lead">What reflow buys: the teacher needs 25 solver steps; the reflowed student draws the same picture in one.</p>
${headline}
<h2>Pictures</h2>
<table class="grid"><tr><th></th>${head}</tr>
${body}
</table>
<p class="note">✓/✗: the checker's verdict (colour, shape and, where the caption names one, side), with what it saw.
All columns start from the same noise per row.</p>
<h2>Numbers</h2>
<table class="nums"><tr><th>column</th><th>steps</th><th>checker accuracy</th><th>time per image</th><th>straightness</th></tr>
${table}
</table>
<p class="note">Accuracy over ${r.captions.length} samples (${rows.length} prompts).
Time per image: the sampling loop alone (model loaded, batch of ${r.captions.length}) on this machine's WebGPU adapter.
Straightness (Liu et al.): mean squared deviation of the path's velocity from its chord; 0 is a straight line.
Teacher: its 25-step DPM-Solver++ path mapped to flow coordinates; students: a 25-step Euler path of the same model
(a one-step path is straight by construction, so the model's own paths are measured).</p>
<h2>Student training loss</h2>
${
    lossSvg([
      { name: "training loss", color: "#4a7bd0", points: r.loss },
      { name: "eval loss (EMA)", color: "#d0704a", points: r.evalLoss },
    ])
  }
<h2>Run</h2>
<p class="note">${timing}</p>
<pre class="note">${esc(JSON.stringify(r.settings, null, 2))}</pre>
</body></html>
`;
}

/** Writes `images/`, `index.html` and `report.json` into `dir`; returns the JSON written. */
export async function writeReport(
  dir: string,
  r: DemoReportInput,
): Promise<Record<string, unknown>> {
  const imgDir = join(dir, "images");
  await Deno.mkdir(imgDir, { recursive: true });
  const rows = promptRows(r.captions);
  r.columns.forEach((col, k) => {
    col.images.forEach((im, i) =>
      saveImage(join(imgDir, `c${k}_${i}.png`), upscale(im, r.size, 8))
    );
  });
  const json = reportJson(r, rows);
  await writeFileAtomic(
    join(dir, "report.json"),
    new TextEncoder().encode(JSON.stringify(json, null, 2) + "\n"),
  );
  const html = reportHtml(r, rows);
  await writeFileAtomic(join(dir, "index.html"), new TextEncoder().encode(html));
  return json;
}
