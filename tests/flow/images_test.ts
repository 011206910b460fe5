/** Latents to images: the one formula of the sample job, the trainer's grids, demo and web page. */
import assert from "node:assert/strict";
import {
  decodeToImages,
  identityDecode,
  LATENT_SCALE,
  toUnitRange,
} from "../../core/flow/images.ts";
import { latentsToPicture } from "../../core/web/draw.ts";
import { upscale } from "../../core/demo/report.ts";
import { testGpu } from "../helpers/gpu.ts";

Deno.test("identity codec: clamp(z / 0.18215 / 2 + 0.5, 0, 1) per value, channels 1/3/4 kept", async () => {
  const gpu = await testGpu();
  assert.equal(LATENT_SCALE, 0.18215);
  for (const C of [1, 2, 3, 4, 5]) {
    const [B, H, W] = [1 + Math.floor(Math.random() * 3), 3, 2];
    const plane = H * W;
    const z = Float32Array.from({ length: B * C * plane }, () => (Math.random() - 0.5) * 0.6);
    const images = await decodeToImages(gpu, null, z, [C, H, W]);
    assert.deepEqual(images, identityDecode(z, B, C, H, W));
    const ch = C === 1 || C === 3 || C === 4 ? C : Math.min(C, 3);
    assert.equal(images.length, B);
    images.forEach((im, b) => {
      assert.deepEqual([im.channels, im.height, im.width], [ch, H, W]);
      for (let j = 0; j < ch * plane; j++) {
        const v = z[b * C * plane + j];
        const want = Math.min(1, Math.max(0, Math.fround(Math.fround(v / LATENT_SCALE) / 2 + 0.5)));
        assert.equal(im.data[j], want);
      }
    });
  }
  await assert.rejects(() => decodeToImages(gpu, null, new Float32Array(7), [2, 2, 2]), /whole/);
});

Deno.test("pixel-space pictures (web page, demo report) use the same x / 2 + 0.5 rule", () => {
  const x = Float32Array.from({ length: 3 * 4 * 4 }, () => (Math.random() - 0.5) * 3);
  const want = Float32Array.from(x, (v) => Math.min(1, Math.max(0, v / 2 + 0.5)));
  assert.deepEqual(Float32Array.from(x, toUnitRange), want);
  assert.deepEqual(latentsToPicture(x, [3, 4, 4]).data, want);
  const up = upscale(x, 4, 2); // nearest-neighbour x2: pixel (2y, 2x) is source pixel (y, x)
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < 4; y++) {
      for (let i = 0; i < 4; i++) {
        assert.equal(up.data[c * 64 + 2 * y * 8 + 2 * i], want[c * 16 + y * 4 + i]);
      }
    }
  }
});
