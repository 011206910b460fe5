/**
 * `deno task web [--model models/tiny_student] [--teacher models/tiny_teacher] [--port 8000]
 *  [--host 127.0.0.1]`
 *
 * Serves a web page that draws pictures from captions with a reflowed student on the browser's
 * WebGPU, with the same kernels as the Deno jobs: the student's UNet from `--model` (a student
 * folder holding `unet/`, a diffusers UNet folder, or a weight file), the caption encoder (and VAE,
 * if any) from the teacher folder `--teacher`. Open the printed address in a WebGPU browser.
 */
import { intArg, parseCommand } from "../core/config/cli.ts";
import { startWebServer } from "../core/web/server.ts";

async function main(): Promise<void> {
  const values = parseCommand<{ model: string; teacher: string; port: string; host: string }>(
    Deno.args,
    {
      name: "web",
      usage: "deno task web [--model DIR] [--teacher DIR] [--port N] [--host ADDR]",
      description: "Serve a page that draws pictures from captions with the student, on the " +
        "browser's WebGPU.",
      options: [
        { flags: "--model <dir>", description: "the student", default: "models/tiny_student" },
        {
          flags: "--teacher <dir>",
          description: "the teacher folder with tokenizer/ and text_encoder/",
          default: "models/tiny_teacher",
        },
        {
          flags: "--port <n>",
          description: "port to listen on (0 = any free port)",
          default: "8000",
        },
        {
          flags: "--host <addr>",
          description: "address to listen on (browsers allow WebGPU only on localhost or https)",
          default: "127.0.0.1",
        },
      ],
    },
  );
  const port = intArg(values.port, "--port", { min: 0, max: 65535 });
  const server = await startWebServer({
    model: values.model,
    teacher: values.teacher,
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
