// The uncompressed (STORED) ZIP archive appended to a .tflite flatbuffer: the associated files of the
// standard TFLite Metadata (`labels.txt`, ...) and kerascnn's `metadata.json`. This is how the
// schema's MetadataPopulator packs them; the TFLite runtime ignores the trailing bytes.
//
// Found from the end-of-central-directory record. Local header offsets in the central directory are
// either absolute (Python's zipfile appending to a file, as `kerascnn export` and the populator do) or
// relative to the archive's start (`cat model.tflite files.zip`): the central directory really starts
// at eocd - cdSize, so (that - the recorded cdOffset) is the base to add to every offset, 0 or the
// archive's start.
import { MetadataError } from "./errors.js";

const EOCD = 0x06054b50; // "PK\x05\x06"
const LOCAL = 0x04034b50; // "PK\x03\x04"
const CENTRAL = 0x02014b50; // "PK\x01\x02"
const MAX_COMMENT = 0xffff;

function view(bytes) {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** The end-of-central-directory record: {eocd, count, cdStart, base}, or null when there is none. */
function endRecord(bytes) {
  if (bytes.length < 22) return null;
  const dv = view(bytes);
  const stop = Math.max(0, bytes.length - 22 - MAX_COMMENT);
  for (let i = bytes.length - 22; i >= stop; i--) {
    if (dv.getUint32(i, true) !== EOCD) continue;
    if (i + 22 + dv.getUint16(i + 20, true) !== bytes.length) continue; // comment must reach the end
    const count = dv.getUint16(i + 10, true);
    const cdSize = dv.getUint32(i + 12, true);
    const cdOffset = dv.getUint32(i + 16, true);
    const cdStart = i - cdSize;
    if (cdStart < 0 || (count > 0 && dv.getUint32(cdStart, true) !== CENTRAL)) continue;
    return { eocd: i, count, cdStart, base: cdStart - cdOffset };
  }
  return null;
}

/**
 * The entries of the archive appended to `bytes` (Uint8Array): [{name, method, size, header, data}]
 * with absolute offsets (`header`: local file header, `data`: the entry's bytes), in directory order;
 * [] when there is no archive. Throws MetadataError when the archive is there but inconsistent.
 */
export function zipEntries(bytes) {
  const end = endRecord(bytes);
  if (!end) return [];
  const dv = view(bytes);
  const decoder = new TextDecoder();
  const entries = [];
  let p = end.cdStart;
  for (let i = 0; i < end.count; i++) {
    if (p + 46 > end.eocd || dv.getUint32(p, true) !== CENTRAL) {
      throw new MetadataError(`packed files: central directory entry ${i} is corrupt`);
    }
    const method = dv.getUint16(p + 10, true);
    const compressed = dv.getUint32(p + 20, true);
    const size = dv.getUint32(p + 24, true);
    const nameLen = dv.getUint16(p + 28, true);
    const extraLen = dv.getUint16(p + 30, true);
    const commentLen = dv.getUint16(p + 32, true);
    const header = dv.getUint32(p + 42, true) + end.base;
    const name = decoder.decode(bytes.subarray(p + 46, p + 46 + nameLen));
    p += 46 + nameLen + extraLen + commentLen;
    if (header < 0 || header + 30 > bytes.length || dv.getUint32(header, true) !== LOCAL) {
      throw new MetadataError(`packed files: no local file header for ${name} where the directory says`);
    }
    const data = header + 30 + dv.getUint16(header + 26, true) + dv.getUint16(header + 28, true);
    if (data + compressed > end.cdStart) throw new MetadataError(`packed files: ${name} runs past the archive`);
    entries.push({ name, method, size, compressed, header, data });
  }
  return entries;
}

/** Offset of the first local file header of the archive appended to `bytes`, or -1 when there is none. */
export function zipStart(bytes) {
  const entries = zipEntries(bytes);
  return entries.length ? Math.min(...entries.map((e) => e.header)) : -1;
}

/**
 * The packed files as a Map name -> bytes (views, no copy), in archive order; a compressed entry maps to
 * null (the TFLite Metadata packs files uncompressed; a reader that needs it says so). Empty when there
 * is no archive.
 */
export function packedFiles(bytes) {
  const files = new Map();
  for (const e of zipEntries(bytes)) {
    files.set(e.name, e.method === 0 && e.compressed === e.size ? bytes.subarray(e.data, e.data + e.size) : null);
  }
  return files;
}
