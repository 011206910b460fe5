/** Paths and expectations of the tests/fixtures/io files made by make_io_fixtures.py. */

import { fileURLToPath } from "node:url";

/** Absolute path of a file in tests/fixtures/io/. */
export function fixture(name: string): string {
  return fileURLToPath(new URL(`../fixtures/io/${name}`, import.meta.url));
}

/** The reference values make_io_fixtures.py wrote beside the fixtures. */
// deno-lint-ignore no-explicit-any
export const EXPECTED: any = JSON.parse(Deno.readTextFileSync(fixture("formats_expected.json")));

/** Path of the golden tiny SD-1 UNet safetensors file. */
export const GOLDEN_UNET = "/work/shared/golden/unet_sd1_tiny/diffusion_pytorch_model.safetensors";

/** Runs `fn` with a fresh temporary directory, removed afterwards. */
export async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "reflow_io_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
