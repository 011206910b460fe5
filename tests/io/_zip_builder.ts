/** A tiny ZIP writer for tests: stored or deflated entries, optionally ZIP64. */

import { crc32, deflateRawSync } from "node:zlib";

/** One entry; by default stored with its true size and CRC. */
export interface ZipBuilderFile {
  name: string;
  data: Uint8Array;
  /** Deflate `data` (method 8). */
  deflate?: boolean;
  /**
   * Bytes to store as a deflated entry's data as they are (a hand-made deflate stream); `data`
   * is then ignored and `declaredSize` / `crc` say what the directory claims.
   */
  rawDeflate?: Uint8Array;
  /** Uncompressed size the headers declare (default: the true one). */
  declaredSize?: number;
  /** CRC-32 the headers declare (default: the true one). */
  crc?: number;
}

/**
 * Hand-built stored-entry archive, optionally in ZIP64 form (saturated classic fields, 64-bit
 * values in the central extra field, a zip64 end record and its locator), as large torch files are.
 */
export function buildZip(files: ZipBuilderFile[], zip64 = false): Uint8Array {
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let at = 0;
  const enc = new TextEncoder();
  for (const entry of files) {
    const method = entry.deflate || entry.rawDeflate ? 8 : 0;
    const payload = entry.rawDeflate ??
      (entry.deflate ? new Uint8Array(deflateRawSync(entry.data)) : entry.data);
    const size = entry.declaredSize ?? entry.data.length;
    const crc = entry.crc ?? (crc32(entry.data) >>> 0);
    const f = { data: payload };
    const name = enc.encode(entry.name);
    const local = new Uint8Array(30 + name.length + 3); // 3 bytes of extra padding, as torch pads
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(8, method, true);
    lv.setUint32(14, crc, true);
    lv.setUint32(18, f.data.length, true);
    lv.setUint32(22, size, true);
    lv.setUint16(26, name.length, true);
    lv.setUint16(28, 3, true);
    local.set(name, 30);
    const extra = zip64 ? 28 : 0;
    const c = new Uint8Array(46 + name.length + extra);
    const cv = new DataView(c.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(10, method, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, zip64 ? 0xffffffff : f.data.length, true);
    cv.setUint32(24, zip64 ? 0xffffffff : size, true);
    cv.setUint16(28, name.length, true);
    cv.setUint16(30, extra, true);
    cv.setUint32(42, zip64 ? 0xffffffff : at, true);
    c.set(name, 46);
    if (zip64) {
      const x = 46 + name.length;
      cv.setUint16(x, 1, true);
      cv.setUint16(x + 2, 24, true);
      cv.setBigUint64(x + 4, BigInt(size), true); // uncompressed
      cv.setBigUint64(x + 12, BigInt(f.data.length), true); // compressed
      cv.setBigUint64(x + 20, BigInt(at), true); // local header offset
    }
    parts.push(local, f.data);
    central.push(c);
    at += local.length + f.data.length;
  }
  const cdOffset = at;
  const cdSize = central.reduce((s, c) => s + c.length, 0);
  parts.push(...central);
  at += cdSize;
  if (zip64) {
    const r = new Uint8Array(56);
    const rv = new DataView(r.buffer);
    rv.setUint32(0, 0x06064b50, true);
    rv.setBigUint64(4, 44n, true);
    rv.setBigUint64(24, BigInt(files.length), true);
    rv.setBigUint64(32, BigInt(files.length), true);
    rv.setBigUint64(40, BigInt(cdSize), true);
    rv.setBigUint64(48, BigInt(cdOffset), true);
    const loc = new Uint8Array(20);
    const lv = new DataView(loc.buffer);
    lv.setUint32(0, 0x07064b50, true);
    lv.setBigUint64(8, BigInt(at), true);
    lv.setUint32(16, 1, true);
    parts.push(r, loc);
  }
  const end = new Uint8Array(22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, zip64 ? 0xffff : files.length, true);
  ev.setUint16(10, zip64 ? 0xffff : files.length, true);
  ev.setUint32(12, zip64 ? 0xffffffff : cdSize, true);
  ev.setUint32(16, zip64 ? 0xffffffff : cdOffset, true);
  parts.push(end);
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let p = 0;
  for (const part of parts) {
    out.set(part, p);
    p += part.length;
  }
  return out;
}
