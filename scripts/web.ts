/**
 * `deno task web [--model models/tiny_student] [--teacher models/tiny_teacher] [--port 8000]
 *  [--host 127.0.0.1]`
 *
 * Serves a web page that draws pictures from captions with a reflowed student on the browser's
 * WebGPU, with the same kernels as the Deno jobs: the student's UNet from `--model` (a student
 * folder holding `unet/`, a diffusers UNet folder, or a weight file), the caption encoder (and VAE,
 * if any) from the teacher folder `--teacher`. Open the printed address in a WebGPU browser.
 */
import { parseArgs } from "node:util";
import { startWebServer } from "../core/web/server.ts";

const USAGE = "usage: deno task web [--model DIR] [--teacher DIR] [--port N] [--host ADDR]\n" +
  "  --model    the student (default models/tiny_student)\n" +
  "  --teacher  the teacher folder with tokenizer/ and text_encoder/ (default models/tiny_teacher)\n" +
  "  --port     port to listen on (default 8000; 0 = any free port)\n" +
  "  --host     address to listen on (default 127.0.0.1; browsers allow WebGPU only on\n" +
  "             localhost or https)";

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      model: { type: "string", default: "models/tiny_student" },
      teacher: { type: "string", default: "models/tiny_teacher" },
      port: { type: "string", default: "8000" },
      host: { type: "string", default: "127.0.0.1" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`--port must be an integer in [0, 65535], got "${values.port}"`);
  }
  const server = await startWebServer({
    model: values.model!,
    teacher: values.teacher!,
    port,
    hostname: values.host,
  });
  const shown = values.host === "0.0.0.0" || values.host === "::"
    ? server.url.replace(/\/\/[^/]+\//, `//localhost:${server.port}/`)
    : server.url;
  console.log(
    `web: serving ${values.model} (caption encoder of ${values.teacher}) at ${shown}\n` +
      `web: open it in a browser with WebGPU (Chrome/Edge 113+, Safari 26, Firefox 141 on ` +
      `Windows); Ctrl-C stops the server`,
  );
}

main().catch((e) => {
  console.error((e as Error).message);
  Deno.exit(1);
});
