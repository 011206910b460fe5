/**
 * The page's weight streaming (core/web/weight_stream.ts, stream_loader.ts, served_weights.ts) with
 * small buffer limits forced, as a Stable Diffusion UNet meets a browser's: pieces stay under the
 * limits and on aligned offsets whatever the download's chunking, tensors reassemble exactly, and a
 * streamed load fills a module as the file loader does (f32 bit for bit, f16 as rounded).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { testGpu } from "../helpers/gpu.ts";
import { f16BitsToF32, f32ToF16Bits } from "../../core/io/half.ts";
import { openSafetensors, writeSafetensors } from "../../core/io/safetensors.ts";
import { loadModuleFile, stateDict } from "../../core/models/load.ts";
import { UNet2DConditionModel } from "../../core/models/unet2d_condition.ts";
import {
  PIECE_ALIGN,
  pieceBytes,
  SafetensorsStream,
  type TensorPiece,
} from "../../core/web/weight_stream.ts";
import { convertPiece, loadModuleFromStream } from "../../core/web/stream_loader.ts";
import { servedWeights } from "../../core/web/served_weights.ts";

const STUDENT = "models/tiny_student/unet";
const STUDENT_WEIGHTS = `${STUDENT}/diffusion_pytorch_model.safetensors`;

/** Deterministic generator (mulberry32). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `bytes` as a stream of random-sized chunks (1 to `most` bytes). */
function chunked(bytes: Uint8Array, seed: number, most = 61): ReadableStream<Uint8Array> {
  const r = rng(seed);
  let at = 0;
  return new ReadableStream({
    pull(ctl) {
      if (at >= bytes.length) return ctl.close();
      const n = 1 + Math.floor(r() * most);
      ctl.enqueue(bytes.slice(at, at + n));
      at += n;
    },
  });
}

async function withTemp<T>(f: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "reflow-stream-" });
  try {
    return await f(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A safetensors file of random tensors of several dtypes and odd sizes, and its tensors. */
async function randomFile(seed: number) {
  const r = rng(seed);
  const f32 = (n: number) => Float32Array.from({ length: n }, () => r() * 4 - 2);
  const tensors = [
    { name: "a.weight", dtype: "F32" as const, shape: [7, 9], data: f32(63) },
    { name: "b.bias", dtype: "F16" as const, shape: [13], data: f32ToF16Bits(f32(13)) },
    { name: "c.big", dtype: "F32" as const, shape: [3, 5, 11, 2], data: f32(330) },
    { name: "d.empty", dtype: "F32" as const, shape: [0], data: new Float32Array(0) },
    {
      name: "e.ids",
      dtype: "I64" as const,
      shape: [5],
      data: BigInt64Array.from([0n, 1n, 2n, 3n, 4n]),
    },
    {
      name: "f.half",
      dtype: "BF16" as const,
      shape: [2, 3],
      data: Uint16Array.from([1, 2, 3, 4, 5, 6]),
    },
  ];
  return await withTemp(async (dir) => {
    const path = join(dir, "w.safetensors");
    await writeSafetensors(path, tensors, { note: "streamed" });
    return { bytes: await Deno.readFile(path), tensors };
  });
}

Deno.test("pieceBytes: under both buffer limits, half of them, the cap, and aligned", () => {
  assert.equal(pieceBytes({ maxBufferSize: 1000, maxStorageBufferBindingSize: 200 }), 96);
  assert.equal(pieceBytes({ maxBufferSize: 200, maxStorageBufferBindingSize: 1000 }), 96);
  assert.equal(
    pieceBytes({ maxBufferSize: 2 ** 31, maxStorageBufferBindingSize: 2 ** 30 }),
    8 << 20,
  );
  assert.equal(
    pieceBytes({ maxBufferSize: 2 ** 31, maxStorageBufferBindingSize: 2 ** 30 }, 100),
    96,
  );
  // A browser's default limits (256 MiB / 128 MiB) take 8 MiB pieces.
  assert.equal(
    pieceBytes({ maxBufferSize: 268435456, maxStorageBufferBindingSize: 134217728 }),
    8 << 20,
  );
  assert.throws(
    () => pieceBytes({ maxBufferSize: 24, maxStorageBufferBindingSize: 1 << 20 }),
    /maxBufferSize 24, maxStorageBufferBindingSize 1048576.*16-byte piece/,
  );
});

Deno.test("SafetensorsStream: any chunking, small pieces: tensors reassemble exactly", async () => {
  const { bytes, tensors } = await randomFile(7);
  for (const [seed, maxPiece] of [[1, 16], [2, 48], [3, 4096]] as const) {
    const st = new SafetensorsStream(chunked(bytes, seed), "mem://w.safetensors");
    const h = await st.header();
    assert.equal(h.fileBytes, bytes.length);
    assert.equal(h.metadata.note, "streamed");
    const got = new Map<string, Uint8Array[]>();
    const pieces: TensorPiece[] = [];
    for await (const p of st.pieces(maxPiece)) {
      pieces.push(p);
      assert.ok(p.bytes.length <= maxPiece, `piece of ${p.bytes.length} > ${maxPiece}`);
      assert.equal(p.offset % PIECE_ALIGN, 0);
      assert.equal(p.bytes.byteOffset % 8, 0);
      const list = got.get(p.key) ?? [];
      assert.equal(p.offset, list.reduce((a, b) => a + b.length, 0), `${p.key} pieces in order`);
      list.push(p.bytes);
      got.set(p.key, list);
      assert.equal(p.last, p.offset + p.bytes.length === p.entry.end - p.entry.begin);
    }
    // Data order (the writer stores names sorted), each tensor once, every byte.
    assert.deepEqual([...new Set(pieces.map((p) => p.key))], tensors.map((t) => t.name));
    for (const t of tensors) {
      const parts = got.get(t.name)!;
      const whole = new Uint8Array(parts.reduce((a, b) => a + b.length, 0));
      let at = 0;
      for (const b of parts) whole.set(b, (at += b.length) - b.length);
      assert.deepEqual(whole, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
      if (t.data.byteLength > maxPiece) assert.ok(parts.length > 1, `${t.name} split`);
    }
    assert.equal(st.consumed, bytes.length);
  }
});

Deno.test("SafetensorsStream: a cut or overlong download is an error naming the file", async () => {
  const { bytes } = await randomFile(8);
  const drain = async (b: Uint8Array) => {
    const st = new SafetensorsStream(chunked(b, 5), "http://x/weights/unet");
    for await (const _ of st.pieces(32)) { /* read all */ }
  };
  await assert.rejects(
    drain(bytes.slice(0, bytes.length - 5)),
    /http:\/\/x\/weights\/unet: the download ended at byte \d+ in tensor "f\.half"/,
  );
  await assert.rejects(drain(bytes.slice(0, 20)), /ended at byte 20 in the header/);
  const long = new Uint8Array(bytes.length + 3);
  long.set(bytes);
  await assert.rejects(drain(long), /more bytes follow the last tensor/);
  // A bad header is refused by the same validation as a file on disk.
  const bad = bytes.slice();
  bad[8] = 0x5b; // "[": the header is no longer a JSON object
  await assert.rejects(drain(bad), /http:\/\/x\/weights\/unet: safetensors header/);
});

Deno.test("convertPiece: dtype conversion and the parameter offset of each piece", () => {
  const vals = Float32Array.from([1.5, -2.25, 3.0, 0.1, 65504, -0.0001, 7, 8]);
  const raw = new Uint8Array(vals.buffer);
  const toHalf = convertPiece({ key: "k", offset: 32, bytes: raw }, "F32", "f16", "w");
  assert.equal(toHalf.offset, 16);
  assert.deepEqual(
    new Uint16Array(toHalf.bytes.buffer, toHalf.bytes.byteOffset, 8),
    f32ToF16Bits(vals),
  );
  const halfBits = f32ToF16Bits(vals);
  const toF32 = convertPiece(
    { key: "k", offset: 16, bytes: new Uint8Array(halfBits.buffer) },
    "F16",
    "f32",
    "w",
  );
  assert.equal(toF32.offset, 32);
  assert.deepEqual(
    new Float32Array(toF32.bytes.buffer, toF32.bytes.byteOffset, 8),
    f16BitsToF32(halfBits),
  );
  const same = convertPiece({ key: "k", offset: 64, bytes: raw }, "F32", "f32", "w");
  assert.equal(same.bytes, raw);
  assert.equal(same.offset, 64);
  assert.throws(
    () => convertPiece({ key: "k", offset: 4, bytes: raw.subarray(0, 4) }, "F32", "f16", "w"),
    /w: tensor "k" piece at byte 4 does not start on a 4-byte boundary/,
  );
});

Deno.test("streamed load under tiny limits fills a UNet as the file loader does (f32, f16)", async () => {
  const gpu = await testGpu();
  const config = JSON.parse(await Deno.readTextFile(`${STUDENT}/config.json`));
  const ref = UNet2DConditionModel.create(gpu, config, 1);
  await loadModuleFile(ref, STUDENT_WEIGHTS);
  const want = await stateDict(ref);
  ref.dispose();
  const file = await Deno.readFile(STUDENT_WEIGHTS);
  // 128-byte bindings: every conv weight of the student is split into many 64-byte pieces.
  const limits = { maxBufferSize: 256, maxStorageBufferBindingSize: 128 };
  const dtypes: ("f32" | "f16")[] = gpu.hasF16 ? ["f32", "f16"] : ["f32"];
  for (const dtype of dtypes) {
    const unet = UNet2DConditionModel.create(gpu, config, 2).requiresGrad(false);
    if (dtype === "f16") unet.toDtype("f16");
    try {
      // Whole tensors over the limit are refused up front, naming the key.
      await assert.rejects(
        loadModuleFromStream(gpu, unet, new SafetensorsStream(chunked(file, 3, 4096), "mem://s"), {
          limits,
        }),
        /mem:\/\/s: tensor "\S+" needs \d+ bytes as f(16|32), more than the adapter's buffer limit of 128 bytes/,
      );
      // The student's largest tensor (73728 bytes as f32) fits an 80000-byte binding limit and
      // is uploaded in two pieces under it; with a 64-byte cap every tensor comes in many pieces.
      const settings = [
        { limits: { maxBufferSize: 1 << 20, maxStorageBufferBindingSize: 80000 }, piece: 40000 },
        {
          limits: { maxBufferSize: 1 << 20, maxStorageBufferBindingSize: 1 << 20 },
          pieceCap: 64,
          piece: 64,
        },
      ];
      for (const [i, o] of settings.entries()) {
        const st = new SafetensorsStream(chunked(file, 4 + i, 4096), "mem://student");
        const r = await loadModuleFromStream(gpu, unet, st, o);
        assert.equal(r.pieceBytes, o.piece);
        assert.equal(r.loaded, want.size);
        assert.equal(r.metadata.timestep_orientation, "original");
        const got = await stateDict(unet);
        for (const [name, w] of want) {
          const expect = dtype === "f32" ? w : f16BitsToF32(f32ToF16Bits(w));
          assert.deepEqual(got.get(name), expect, `${name} (${dtype}, pieces of ${o.piece})`);
        }
        // Scribble over the weights so the next setting must load them again.
        for (const p of unet.parameters()) {
          gpu.write(p.buffer, 0, new Uint8Array(p.bytes + (p.bytes % 4 ? 2 : 0)).fill(7));
        }
      }
    } finally {
      unet.dispose();
    }
  }
});

Deno.test("served weights: safetensors in f16 or f32, metadata kept, length known upfront", async () => {
  const src = await openSafetensors(STUDENT_WEIGHTS);
  const keys = src.keys();
  const values = new Map(
    await Promise.all(keys.map(async (k) => [k, await src.readF32(k)] as const)),
  );
  src.close();
  for (const dtype of ["F16", "F32"] as const) {
    const { length, body } = await servedWeights(STUDENT_WEIGHTS, dtype);
    const bytes = new Uint8Array(await new Response(body).arrayBuffer());
    assert.equal(bytes.length, length);
    await withTemp(async (dir) => {
      const path = join(dir, "served.safetensors");
      await Deno.writeFile(path, bytes);
      const st = await openSafetensors(path); // validates the whole layout
      try {
        assert.equal(st.metadata.timestep_orientation, "original");
        assert.deepEqual(st.keys().sort(), [...keys].sort());
        for (const k of keys) {
          assert.equal(st.info(k).dtype, dtype);
          const v = values.get(k)!;
          assert.deepEqual(
            await st.readF32(k),
            dtype === "F32" ? v : f16BitsToF32(f32ToF16Bits(v)),
            k,
          );
        }
      } finally {
        st.close();
      }
    });
  }
});
