import assert from "node:assert/strict";
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from "../../core/io/half.ts";
import { fixture } from "./_fixtures.ts";

function readTyped<T>(name: string, Ctor: new (b: ArrayBuffer) => T): T {
  return new Ctor(Deno.readFileSync(fixture(name)).slice().buffer);
}

Deno.test("f32ToF16Bits matches numpy astype(float16) bit for bit (ties, subnormals, overflow)", () => {
  const f32 = readTyped("half_f32.bin", Float32Array);
  const want = readTyped("half_f16.bin", Uint16Array);
  assert.ok(f32.length > 5000);
  const got = f32ToF16Bits(f32);
  for (let i = 0; i < f32.length; i++) {
    if (got[i] !== want[i]) {
      assert.fail(`value ${f32[i]}: got 0x${got[i].toString(16)}, numpy 0x${want[i].toString(16)}`);
    }
  }
});

Deno.test("f16BitsToF32 agrees with V8's Float16Array on all 65536 patterns", () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const got = f16BitsToF32(all);
  const ref = new Float16Array(all.buffer);
  for (let h = 0; h < 65536; h++) {
    if (Number.isNaN(ref[h])) assert.ok(Number.isNaN(got[h]), `0x${h.toString(16)} not NaN`);
    else assert.ok(Object.is(got[h], ref[h]), `0x${h.toString(16)}: ${got[h]} vs ${ref[h]}`);
  }
});

Deno.test("half round trip is exact for every non-NaN pattern, NaN stays NaN", () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const back = f32ToF16Bits(f16BitsToF32(all));
  for (let h = 0; h < 65536; h++) {
    const isNaN = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
    if (isNaN) assert.ok((back[h] & 0x7c00) === 0x7c00 && (back[h] & 0x3ff) !== 0);
    else assert.equal(back[h], h);
  }
  assert.ok(Number.isNaN(f16BitsToF32(f32ToF16Bits(new Float32Array([NaN])))[0]));
});

Deno.test("bfloat16: decoding is exact and f32ToBf16Bits matches torch's rounding", () => {
  const f32 = readTyped("half_f32.bin", Float32Array);
  const want = readTyped("half_bf16.bin", Uint16Array);
  const got = f32ToBf16Bits(f32);
  assert.deepEqual(got, want);
  const dec = bf16BitsToF32(want);
  for (let i = 0; i < f32.length; i++) {
    if (!Number.isFinite(f32[i])) continue;
    // bfloat16 keeps 8 significant bits: relative error at most 2^-8.
    assert.ok(Math.abs(dec[i] - f32[i]) <= Math.abs(f32[i]) * 2 ** -8 + 1e-45, `${f32[i]}`);
  }
  assert.deepEqual(bf16BitsToF32(new Uint16Array([0x3f80, 0xc000])), new Float32Array([1, -2]));
});
