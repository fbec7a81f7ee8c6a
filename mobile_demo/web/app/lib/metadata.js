// Model metadata as `kerascnn export` writes it, read in the browser (or node) from the model bytes.
//
// - .tflite: a stored (uncompressed) ZIP archive appended to the flatbuffer, with one entry
//   `metadata.json` (see export/metadata.py). Found from the end-of-central-directory record.
// - .onnx: ModelProto.metadata_props["kerascnn"] (the same JSON).
// - anything else, or a file without embedded metadata: the folder's model.json sidecar
//   ({"model": {...}, "files": {name: {"metadata": {...}}}}) merged like export.metadata.read_metadata.

const ZIP_ENTRY = "metadata.json";
const EOCD = 0x06054b50; // "PK\x05\x06"
const LOCAL = 0x04034b50; // "PK\x03\x04"
const CENTRAL = 0x02014b50; // "PK\x01\x02"
const REQUIRED = ["model_name", "labels", "input_size", "channels"];

export class MetadataError extends Error {}

function view(bytes) {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function lastIndexOfU32(dv, value, from, stopAt) {
  for (let i = from; i >= stopAt; i--) {
    if (dv.getUint32(i, true) === value) return i;
  }
  return -1;
}

/** Offset of the first local file header of a ZIP archive appended to `bytes`, or -1. */
export function zipStart(bytes) {
  const dv = view(bytes);
  if (bytes.length < 22) return -1;
  const eocd = lastIndexOfU32(dv, EOCD, bytes.length - 22, Math.max(0, bytes.length - 65557));
  if (eocd < 0) return -1;
  const cdSize = dv.getUint32(eocd + 12, true);
  const cdOffset = dv.getUint32(eocd + 16, true);
  const start = eocd - cdSize - cdOffset; // > 0 when the archive was appended to other data
  if (start >= 0 && dv.getUint32(start, true) === LOCAL) return start;
  // Archives written with absolute offsets: the first local header is at cdOffset itself.
  const from = Math.min(eocd - cdSize, bytes.length - 4);
  return from >= 0 ? lastIndexOfU32(dv, LOCAL, from, 0) : -1;
}

/** The entries of the appended ZIP archive: [{name, method, offset, size}], read from the central directory. */
function zipEntries(bytes, start) {
  const dv = view(bytes);
  const eocd = lastIndexOfU32(dv, EOCD, bytes.length - 22, Math.max(0, bytes.length - 65557));
  const count = dv.getUint16(eocd + 10, true);
  const cdSize = dv.getUint32(eocd + 12, true);
  let p = eocd - cdSize;
  const decoder = new TextDecoder();
  const entries = [];
  for (let i = 0; i < count && p + 46 <= eocd; i++) {
    if (dv.getUint32(p, true) !== CENTRAL) break;
    const method = dv.getUint16(p + 10, true);
    const size = dv.getUint32(p + 20, true);
    const nameLen = dv.getUint16(p + 28, true);
    const extraLen = dv.getUint16(p + 30, true);
    const commentLen = dv.getUint16(p + 32, true);
    const localOffset = dv.getUint32(p + 42, true);
    const name = decoder.decode(bytes.subarray(p + 46, p + 46 + nameLen));
    entries.push({ name, method, size, local: localOffset });
    p += 46 + nameLen + extraLen + commentLen;
  }
  // Local header offsets are relative to the archive start (appended archive) or absolute.
  const firstLocal = entries.length ? Math.min(...entries.map((e) => e.local)) : 0;
  const base = start - firstLocal;
  return entries.map((e) => ({ ...e, local: e.local + base }));
}

function readLocalEntry(bytes, offset) {
  const dv = view(bytes);
  if (offset < 0 || offset + 30 > bytes.length || dv.getUint32(offset, true) !== LOCAL) {
    throw new MetadataError("metadata archive: no local file header where the directory says");
  }
  const method = dv.getUint16(offset + 8, true);
  const size = dv.getUint32(offset + 18, true);
  const nameLen = dv.getUint16(offset + 26, true);
  const extraLen = dv.getUint16(offset + 28, true);
  const name = new TextDecoder().decode(bytes.subarray(offset + 30, offset + 30 + nameLen));
  const data = offset + 30 + nameLen + extraLen;
  return { name, method, data: bytes.subarray(data, data + size) };
}

/**
 * The metadata.json object embedded in a .tflite file's bytes (Uint8Array), or null when there is none.
 * Throws MetadataError when an archive is there but cannot be read.
 */
export function readTfliteMetadata(bytes) {
  const start = zipStart(bytes);
  if (start < 0) return null;
  let entry = null;
  const listed = zipEntries(bytes, start).find((e) => e.name === ZIP_ENTRY);
  if (listed) entry = readLocalEntry(bytes, listed.local);
  else {
    const first = readLocalEntry(bytes, start);
    if (first.name !== ZIP_ENTRY) return null;
    entry = first;
  }
  if (entry.method !== 0) {
    throw new MetadataError(`${ZIP_ENTRY} is compressed (method ${entry.method}); kerascnn stores it`);
  }
  try {
    return JSON.parse(new TextDecoder().decode(entry.data));
  } catch (e) {
    throw new MetadataError(`the embedded ${ZIP_ENTRY} is not JSON (${e.message})`);
  }
}

// --- ONNX: a minimal protobuf walk to ModelProto.metadata_props (field 14) ---------------------

function varint(bytes, pos) {
  let result = 0;
  let shift = 0;
  for (;;) {
    if (pos >= bytes.length) throw new MetadataError("onnx: truncated varint");
    const b = bytes[pos++];
    result += (b & 0x7f) * 2 ** shift;
    if (!(b & 0x80)) return [result, pos];
    shift += 7;
    if (shift > 63) throw new MetadataError("onnx: bad varint");
  }
}

function* fields(bytes, start = 0, end = bytes.length) {
  let pos = start;
  while (pos < end) {
    let key;
    [key, pos] = varint(bytes, pos);
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (wire === 0) {
      let v;
      [v, pos] = varint(bytes, pos);
      yield { field, wire, value: v };
    } else if (wire === 1) {
      pos += 8;
    } else if (wire === 5) {
      pos += 4;
    } else if (wire === 2) {
      let len;
      [len, pos] = varint(bytes, pos);
      if (pos + len > end) throw new MetadataError("onnx: truncated field");
      yield { field, wire, start: pos, end: pos + len };
      pos += len;
    } else {
      throw new MetadataError(`onnx: unsupported wire type ${wire}`);
    }
  }
}

/** ModelProto.metadata_props of an .onnx file's bytes as a plain {key: value} object. */
export function onnxMetadataProps(bytes) {
  const props = {};
  const decoder = new TextDecoder();
  for (const f of fields(bytes)) {
    if (f.field !== 14 || f.wire !== 2) continue;
    let key = "";
    let value = "";
    for (const g of fields(bytes, f.start, f.end)) {
      if (g.wire !== 2) continue;
      const text = decoder.decode(bytes.subarray(g.start, g.end));
      if (g.field === 1) key = text;
      else if (g.field === 2) value = text;
    }
    props[key] = value;
  }
  return props;
}

/** The kerascnn metadata object embedded in an .onnx file's bytes, or null. */
export function readOnnxMetadata(bytes) {
  const props = onnxMetadataProps(bytes);
  if (!("kerascnn" in props)) return null;
  try {
    return JSON.parse(props.kerascnn);
  } catch (e) {
    throw new MetadataError(`metadata_props["kerascnn"] is not JSON (${e.message})`);
  }
}

/** Metadata of `fileName` from a model.json sidecar object, as export.metadata.read_metadata merges it. */
export function sidecarMetadata(sidecar, fileName) {
  const entry = sidecar?.files?.[fileName];
  if (!sidecar?.model || !entry) return null;
  return { ...sidecar.model, ...(entry.metadata ?? {}) };
}

/** labels.txt: one label per line, in class-index order (blank lines skipped, like read_labels_txt). */
export function parseLabels(text) {
  return text
    .split(/\r\n|\n|\r/)
    .filter((line) => line.trim() !== "")
    .map((line) => line.replace(/[\r\n]+$/, ""));
}

/** Checks and completes a metadata object the way ModelMetadata.__post_init__ does; returns a new object. */
export function checkMetadata(raw, where = "metadata") {
  if (!raw || typeof raw !== "object") throw new MetadataError(`${where}: no metadata`);
  const missing = REQUIRED.filter((k) => !(k in raw));
  if (missing.length) throw new MetadataError(`${where}: metadata lacks ${missing.sort().join(", ")}`);
  const meta = {
    mean: [127.5],
    std: [127.5],
    channel_order: "",
    layout: "NHWC",
    output: "probabilities",
    input_dtype: "float32",
    output_dtype: "float32",
    input_quantization: null,
    output_quantization: null,
    ...raw,
  };
  meta.input_size = meta.input_size.map(Number);
  meta.channels = Number(meta.channels);
  meta.mean = meta.mean.map(Number);
  meta.std = meta.std.map(Number);
  meta.labels = meta.labels.map(String);
  if (!meta.channel_order) meta.channel_order = meta.channels === 1 ? "GRAY" : "RGB";
  if (meta.std.some((s) => s === 0)) throw new MetadataError(`${where}: normalization std must not be 0`);
  for (const name of ["mean", "std"]) {
    if (meta[name].length !== 1 && meta[name].length !== meta.channels) {
      throw new MetadataError(`${where}: normalization ${name} has ${meta[name].length} values for ${meta.channels} channel(s)`);
    }
  }
  if (![1, 3].includes(meta.channels)) throw new MetadataError(`${where}: ${meta.channels} channels (1 or 3 supported)`);
  if (meta.layout !== "NHWC") throw new MetadataError(`${where}: layout ${meta.layout} (NHWC supported)`);
  for (const side of ["input", "output"]) {
    const dtype = meta[`${side}_dtype`];
    if (!["float32", "int8", "uint8"].includes(dtype)) throw new MetadataError(`${where}: ${side}_dtype ${dtype}`);
    if (dtype !== "float32" && !meta[`${side}_quantization`]) {
      throw new MetadataError(`${where}: ${side}_dtype ${dtype} without ${side}_quantization`);
    }
  }
  return meta;
}
