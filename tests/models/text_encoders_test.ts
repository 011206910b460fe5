/**
 * CLIPTextModel and RobertaSeriesModelWithTransformation (XLM-R) against PyTorch re-implementations
 * with the transformers/diffusers names (tests/fixtures/models/{clip_text_tiny, xlmr_series_tiny,
 * xlmr_series_pre_tiny}, made by make_model_refs.py): padded ids, with and without attention mask.
 */
import assert from "node:assert/strict";
import { assertClose, testGpu } from "../helpers/gpu.ts";
import {
  CLIPTextModel,
  IGNORED_TEXT_KEYS,
  RobertaSeriesModelWithTransformation,
  type TextEncoder,
} from "../../core/models/text_encoders.ts";
import { loadModuleFile } from "../../core/models/load.ts";
import type { Gpu } from "../../core/gpu/device.ts";
import { fixtureJson, fixturePath, npyF32, npyI32 } from "./_fixtures.ts";

interface Case {
  dir: string;
  create: (gpu: Gpu, cfg: Record<string, unknown>) => TextEncoder;
}

const CASES: Case[] = [
  { dir: "clip_text_tiny", create: (gpu, cfg) => CLIPTextModel.create(gpu, cfg) },
  {
    dir: "xlmr_series_tiny",
    create: (gpu, cfg) => RobertaSeriesModelWithTransformation.create(gpu, cfg),
  },
  {
    // has_pre_transformation: projection of pre_LN(penultimate hidden state) by transformation_pre.
    dir: "xlmr_series_pre_tiny",
    create: (gpu, cfg) => RobertaSeriesModelWithTransformation.create(gpu, cfg),
  },
];

/** Builds the encoder from config.json and loads model.safetensors as transformers would. */
async function load(c: Case): Promise<TextEncoder> {
  const gpu = await testGpu();
  const enc = c.create(gpu, await fixtureJson(`${c.dir}/config.json`));
  const report = await loadModuleFile(enc, fixturePath(`${c.dir}/model.safetensors`), {
    allowUnexpected: true,
  });
  assert.deepEqual(report.missing, [], "parameters missing from the checkpoint");
  // Buffers (position_ids) and the unused pooler are in the file; nothing else may be left over.
  assert.deepEqual(report.unexpected.filter((k) => !IGNORED_TEXT_KEYS(k)), [], "unexpected keys");
  enc.requiresGrad(false);
  return enc;
}

for (const c of CASES) {
  for (const masked of [true, false]) {
    const what = masked ? "with attention mask" : "without attention mask";
    Deno.test(`${c.dir}: padded ids ${what} match the reference (rel L2 <= 1e-4)`, async () => {
      const enc = await load(c);
      const ids = await npyI32(`${c.dir}/ids.npy`);
      const mask = await npyI32(`${c.dir}/mask.npy`);
      const [B, L] = ids.shape;
      const want = await npyF32(`${c.dir}/${masked ? "out_masked" : "out_nomask"}.npy`);
      const out = enc.encode(ids.data, masked ? mask.data : null, B, L);
      assert.deepEqual([...out.shape], want.shape);
      assert.equal(out.shape[2], enc.hiddenSize);
      assertClose(await out.toF32(), want.data, 1e-4, `${c.dir} ${what}`);
      out.dispose();
      enc.dispose();
    });
  }
}
