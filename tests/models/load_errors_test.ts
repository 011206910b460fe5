/**
 * Strict weight loading: one error names the missing parameters and the file's unexpected keys
 * together (a renamed layer is then visible as the pair), and a refused file leaves the module's
 * weights untouched; allowing one kind still refuses the other.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { testGpu } from "../helpers/gpu.ts";
import { type Init, Module, newInit } from "../../core/nn/module.ts";
import { Linear } from "../../core/nn/layers.ts";
import { loadModuleFile, saveModule } from "../../core/models/load.ts";
import { openWeights } from "../../core/io/weights.ts";
import { writeSafetensors } from "../../core/io/safetensors.ts";

class TwoLayers extends Module {
  first: Linear;
  second: Linear;
  constructor(init: Init) {
    super();
    this.first = new Linear(init, 3, 4);
    this.second = new Linear(init, 4, 2);
  }
}

Deno.test("strict load: missing and unexpected keys named in one error, module untouched", async () => {
  const gpu = await testGpu();
  const dir = await Deno.makeTempDir({ prefix: "reflow_load_" });
  try {
    const path = join(dir, "w.safetensors");
    await saveModule(new TwoLayers(newInit(gpu, 1)), path);
    // Rename second.* to head.* in the file: two missing parameters, two unexpected keys.
    const r = await openWeights(path);
    const tensors = [];
    for (const k of r.keys()) {
      tensors.push({
        name: k.replace(/^second\./, "head."),
        dtype: "F32" as const,
        shape: [...r.info(k).shape],
        data: await r.readF32(k),
      });
    }
    r.close();
    const renamed = join(dir, "renamed.safetensors");
    await writeSafetensors(renamed, tensors);

    const m = new TwoLayers(newInit(gpu, 2));
    const before = await m.first.weight.toF32();
    await assert.rejects(
      loadModuleFile(m, renamed),
      (e: Error) => {
        assert.match(e.message, /renamed\.safetensors: 2 parameter\(s\) missing from the file: /);
        assert.match(e.message, /missing from the file: second\.weight, second\.bias;/);
        assert.match(
          e.message,
          /2 unexpected key\(s\) the model does not have: head\.(weight|bias), head\.(weight|bias)$/,
        );
        return true;
      },
    );
    assert.deepEqual(await m.first.weight.toF32(), before, "a refused file writes nothing");
    // Allowing one kind still refuses the other, naming only it.
    await assert.rejects(
      loadModuleFile(m, renamed, { allowMissing: true }),
      /renamed\.safetensors: 2 unexpected key\(s\) the model does not have: head\.(weight|bias), head\.(weight|bias)$/,
    );
    await assert.rejects(
      loadModuleFile(m, renamed, { allowUnexpected: true }),
      /missing from the file: second\.weight, second\.bias$/,
    );
    const report = await loadModuleFile(m, renamed, { allowMissing: true, allowUnexpected: true });
    assert.deepEqual({ ...report, unexpected: report.unexpected.sort() }, {
      loaded: 2,
      missing: ["second.weight", "second.bias"],
      unexpected: ["head.bias", "head.weight"],
    });
    // Unexpected keys are named as the file writes them (before a stripped prefix).
    await writeSafetensors(
      renamed,
      tensors.map((t) => ({ ...t, name: `module.${t.name}` })),
    );
    await assert.rejects(
      loadModuleFile(m, renamed, { stripPrefix: "module." }),
      /unexpected key\(s\) the model does not have: module\.head\.(weight|bias), module\.head\.(weight|bias)$/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
