/**
 * `deno task data2lmdb --dpath <root>/content/images [--format original]`: packs the pair .npy
 * files of a generation run into `<root>/content/lmdb` (key i = pair i, checked against
 * captions.txt), in this project's format or, with `--format original`, the original Python tool's
 * (pickled values), which its training reads.
 *
 * @module
 */

import cliProgress from "cli-progress";
import { parseCommand } from "../core/config/cli.ts";
import { data2lmdb, LMDB_FORMATS, type LmdbFormat } from "../core/data/data2lmdb.ts";

const opts = parseCommand<{ dpath: string; batchSize: string; overwrite: boolean; format: string }>(
  Deno.args,
  {
    name: "data2lmdb",
    usage: "deno task data2lmdb --dpath <dir> [options]",
    description:
      "Pack a folder of pair .npy files into an LMDB database beside it (<content>/lmdb).",
    options: [
      {
        flags: "--dpath <dir>",
        description: "folder of {i}.npy pair files, e.g. data/coco2014_reflow/test/content/images",
        required: true,
      },
      {
        flags: "--batch-size <n>",
        description: "pairs read and written per batch",
        default: "256",
      },
      { flags: "--overwrite", description: "replace an existing <content>/lmdb", default: false },
      {
        flags: "--format <format>",
        description: 'value format: "reflow" (this project\'s, .npy bytes) or "original" (the ' +
          "original Python tool's pickled LMDB_ndarray values, readable by its training)",
        default: "reflow",
      },
    ],
  },
);
const batchSize = Number(opts.batchSize);
if (!Number.isSafeInteger(batchSize) || batchSize <= 0) {
  console.error(`--batch-size must be a positive integer, got ${opts.batchSize}`);
  Deno.exit(2);
}
if (!(LMDB_FORMATS as readonly string[]).includes(opts.format)) {
  console.error(
    `--format must be one of ${LMDB_FORMATS.join(", ")}, got ${JSON.stringify(opts.format)}`,
  );
  Deno.exit(2);
}

const bar = new cliProgress.SingleBar(
  { format: "data2lmdb [{bar}] {value}/{total} pairs | {eta_formatted} left" },
  cliProgress.Presets.shades_classic,
);
let started = false;
try {
  const result = await data2lmdb({
    dpath: opts.dpath,
    batchSize,
    overwrite: opts.overwrite,
    format: opts.format as LmdbFormat,
    onProgress: (done, total) => {
      if (!started) {
        bar.start(total, 0);
        started = true;
      }
      bar.update(done);
    },
  });
  if (started) bar.stop();
  console.log(
    `wrote ${result.count} pairs of shape [2, ${result.shape.join(", ")}] to ${result.lmdbPath}` +
      (result.format === "original" ? " (the original tool's format)" : ""),
  );
} catch (err) {
  if (started) bar.stop();
  console.error(`data2lmdb: ${(err as Error).message}`);
  Deno.exit(1);
}
