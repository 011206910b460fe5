/**
 * Minimal reader for numpy .npy fixtures (format 1.0-3.0, little-endian f4/f8/i4/i8, C order).
 * Test-only: just enough to read the golden arrays copied into tests/fixtures/schedulers/.
 */

/** A parsed .npy array: shape plus values widened to float64. */
export interface NpyArray {
  shape: number[];
  data: Float64Array;
}

/** Parses the bytes of a .npy file. */
export function parseNpy(bytes: Uint8Array): NpyArray {
  const magic = String.fromCharCode(...bytes.subarray(1, 6));
  if (bytes[0] !== 0x93 || magic !== "NUMPY") throw new Error("not a .npy file");
  const major = bytes[6];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const headerStart = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(bytes.subarray(headerStart, headerStart + headerLen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || !fortran || shapeText === undefined) throw new Error(`bad npy header: ${header}`);
  if (fortran === "True") throw new Error("fortran-order npy not supported");
  const shape = shapeText.split(",").map((s) => s.trim()).filter((s) => s.length).map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const off = headerStart + headerLen;
  const data = new Float64Array(count);
  const readers: Record<string, [number, (o: number) => number]> = {
    "<f4": [4, (o) => view.getFloat32(o, true)],
    "<f8": [8, (o) => view.getFloat64(o, true)],
    "<i4": [4, (o) => view.getInt32(o, true)],
    "<i8": [8, (o) => Number(view.getBigInt64(o, true))],
  };
  const r = readers[descr];
  if (!r) throw new Error(`npy dtype ${descr} not supported`);
  for (let i = 0; i < count; i++) data[i] = r[1](off + i * r[0]);
  return { shape, data };
}

/** Reads a .npy file relative to tests/fixtures/schedulers/. */
export function readFixtureNpy(relPath: string): NpyArray {
  const url = new URL(`../fixtures/schedulers/${relPath}`, import.meta.url);
  return parseNpy(Deno.readFileSync(url));
}

/** Reads a JSON fixture relative to tests/fixtures/schedulers/. */
export function readFixtureJson<T = unknown>(relPath: string): T {
  const url = new URL(`../fixtures/schedulers/${relPath}`, import.meta.url);
  return JSON.parse(Deno.readTextFileSync(url)) as T;
}
