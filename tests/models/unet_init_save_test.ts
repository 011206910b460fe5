/**
 * Fresh UNet weights follow PyTorch's default initialisation, and a UNet saved as a diffusers folder
 * loads back (config and weights) through the same path real checkpoints take.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { testGpu } from "../helpers/gpu.ts";
import { UNet2DConditionModel } from "../../core/models/unet2d_condition.ts";
import { saveUNetFolder, stateDict } from "../../core/models/load.ts";
import { loadUNet } from "../../core/models/diffusers_folder.ts";

const CONFIG = {
  block_out_channels: [32, 64],
  down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"],
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"],
  layers_per_block: 1,
  attention_head_dim: 4,
  cross_attention_dim: 16,
  sample_size: 8,
};

Deno.test("fresh UNet: PyTorch default initialisation per layer type", async () => {
  const gpu = await testGpu();
  const unet = UNet2DConditionModel.create(gpu, CONFIG, 3);
  const sd = await stateDict(unet);
  const check = (key: string, fanIn: number) => {
    const w = sd.get(key)!;
    const bound = 1 / Math.sqrt(fanIn);
    const max = w.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    assert.ok(max <= bound + 1e-7 && max > 0.9 * bound, `${key}: max |w| ${max}, bound ${bound}`);
    const mean = w.reduce((a, b) => a + b, 0) / w.length;
    const std = Math.sqrt(w.reduce((a, b) => a + (b - mean) ** 2, 0) / w.length);
    // U(-b, b) has standard deviation b / sqrt(3).
    assert.ok(Math.abs(std / (bound / Math.sqrt(3)) - 1) < 0.15, `${key}: std ${std}`);
  };
  check("conv_in.weight", 4 * 9); // kaiming_uniform(a=sqrt(5)): bound 1/sqrt(fan_in)
  check("down_blocks.0.resnets.0.conv1.weight", 32 * 9);
  check("time_embedding.linear_2.weight", 128);
  check("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight", 16);
  const gn = sd.get("down_blocks.0.resnets.0.norm1.weight")!;
  assert.ok(gn.every((v) => v === 1), "group norm weight 1");
  assert.ok(sd.get("down_blocks.0.resnets.0.norm1.bias")!.every((v) => v === 0), "bias 0");
  unet.dispose();
});

Deno.test("a UNet saved as a diffusers folder loads back equal", async () => {
  const gpu = await testGpu();
  const tmp = await Deno.makeTempDir();
  try {
    const unet = UNet2DConditionModel.create(gpu, CONFIG, 5);
    const dir = join(tmp, "unet");
    await saveUNetFolder(unet, dir);
    const cfg = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
    assert.equal(cfg._class_name, "UNet2DConditionModel");
    assert.deepEqual(cfg.block_out_channels, [32, 64]);
    const back = await loadUNet(gpu, dir);
    const a = await stateDict(unet), b = await stateDict(back);
    assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
    for (const [k, v] of a) assert.deepEqual(b.get(k), v, k);
    unet.dispose();
    back.dispose();
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
