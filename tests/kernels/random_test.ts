import assert from "node:assert/strict";
import { testGpu } from "../helpers/gpu.ts";
import { philoxBlocksGpu, randomNormal, randomUniform } from "../../core/kernels/random.ts";
import { philox4x32, philoxNormal, philoxUniform } from "../../core/tensor/philox.ts";

/** Random123 tests/kat_vectors, the three `philox4x32 10` lines: counter[4], key[2], expected[4]. */
const KAT: [number[], number[], number[]][] = [
  [[0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]],
  [
    [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff],
    [0xffffffff, 0xffffffff],
    [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
  ],
  [
    [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
    [0xa4093822, 0x299f31d0],
    [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
  ],
];

Deno.test("philox host: Random123 known answers", () => {
  for (const [c, k, want] of KAT) {
    assert.deepEqual(
      philox4x32(c as [number, number, number, number], k as [number, number]),
      want,
    );
  }
});

Deno.test("philox gpu: Random123 known answers", async () => {
  const gpu = await testGpu();
  const got = await philoxBlocksGpu(
    gpu,
    Uint32Array.from(KAT.flatMap((v) => v[0])),
    Uint32Array.from(KAT.flatMap((v) => v[1])),
  );
  assert.deepEqual([...got], KAT.flatMap((v) => v[2]));
});

function moments(a: Float32Array): [number, number] {
  let s = 0, s2 = 0;
  for (const v of a) {
    s += v;
    s2 += v * v;
  }
  const m = s / a.length;
  return [m, Math.sqrt(s2 / a.length - m * m)];
}

// Seeds past 2^32 exercise the high key word; offsets past 2^32 the counter carry.
const CASES = [
  { seed: 0, offset: 0, n: 1000 },
  { seed: 2333, offset: 17, n: 4099 },
  { seed: 2 ** 53 - 1, offset: 2 ** 32 - 100, n: 300 },
  { seed: 123456789012345, offset: 2 ** 40 + 5, n: 257 },
];

for (const c of CASES) {
  Deno.test(`randomUniform gpu == host bit for bit (seed ${c.seed}, offset ${c.offset})`, async () => {
    const gpu = await testGpu();
    const t = randomUniform(gpu, [c.n], { seed: c.seed, offset: c.offset });
    const got = await t.toF32();
    t.dispose();
    const want = philoxUniform(c.seed, c.offset, c.n);
    assert.deepEqual(new Uint32Array(got.buffer), new Uint32Array(want.buffer));
    for (const v of got) assert.ok(v >= 0 && v < 1);
  });

  Deno.test(`randomNormal gpu ~ host (seed ${c.seed}, offset ${c.offset})`, async () => {
    const gpu = await testGpu();
    const t = randomNormal(gpu, [c.n], { seed: c.seed, offset: c.offset });
    const got = await t.toF32();
    t.dispose();
    const want = philoxNormal(c.seed, c.offset, c.n);
    let worst = 0;
    for (let i = 0; i < c.n; i++) {
      worst = Math.max(worst, Math.abs(got[i] - want[i]) / Math.max(1, Math.abs(want[i])));
    }
    assert.ok(worst <= 1e-6, `max error ${worst}`);
  });
}

Deno.test("random: shapes, offsets, f16 and moments of 1e5 samples", async () => {
  const gpu = await testGpu();
  const n = 100_000;
  const u = randomUniform(gpu, [10, 100, 100], { seed: 7 });
  const z = randomNormal(gpu, [n], { seed: 7 });
  const z2 = randomNormal(gpu, [n - 10], { seed: 7, offset: 10 });
  const [uv, zv, z2v] = [await u.toF32(), await z.toF32(), await z2.toF32()];
  const [mu, su] = moments(uv);
  assert.ok(Math.abs(mu - 0.5) < 0.005 && Math.abs(su - Math.sqrt(1 / 12)) < 0.005, `${mu} ${su}`);
  const [mz, sz] = moments(zv);
  assert.ok(Math.abs(mz) < 0.01 && Math.abs(sz - 1) < 0.01, `${mz} ${sz}`);
  // An offset draw continues the same stream.
  assert.deepEqual(z2v, zv.subarray(10));
  if (gpu.hasF16) {
    const h = randomNormal(gpu, [n], { seed: 7, dtype: "f16" });
    const hv = await h.toF32();
    let worst = 0;
    for (let i = 0; i < n; i++) {
      worst = Math.max(worst, Math.abs(hv[i] - zv[i]) / Math.max(1, Math.abs(zv[i])));
    }
    assert.ok(worst < 1e-3, `f16 error ${worst}`);
    h.dispose();
  }
  for (const t of [u, z, z2]) t.dispose();
  assert.throws(() => randomUniform(gpu, [2], { seed: -1 }), /seed -1/);
  assert.throws(() => randomUniform(gpu, [2], { seed: 1.5 }), /seed 1.5/);
});
