/** The README's TypeScript example runs as written (from the repository root). */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));

Deno.test("README example runs", async () => {
  const md = await Deno.readTextFile(`${root}/README.md`);
  const blocks = [...md.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
  assert.ok(blocks.length >= 1, "README has a TypeScript example");
  const file = `${root}/.readme_example.tmp.ts`;
  try {
    for (const code of blocks) {
      await Deno.writeTextFile(file, code);
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", file],
        cwd: root,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const err = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, `README example failed:\n${err}`);
    }
  } finally {
    await Deno.remove(file).catch(() => {});
  }
});
