// Model metadata read in the browser (or node) from the model bytes.
//
// - .tflite: the standard TFLite Metadata (lib/tflite_metadata.js: the TFLITE_METADATA buffer, labels in
//   the packed labels.txt, the tensors' types and quantization from the flatbuffer) is what the page
//   uses for labels, normalization and color space; kerascnn's own `metadata.json`, packed in the same
//   appended ZIP archive (lib/zip.js), is an optional extra, and must agree with it. A model made
//   elsewhere (MediaPipe Model Maker, tflite_support) has only the standard metadata; one exported by an
//   older kerascnn has only metadata.json.
// - .onnx: ModelProto.metadata_props["kerascnn"] (kerascnn's JSON).
// - anything else, or a file without embedded metadata: the folder's model.json sidecar
//   ({"model": {...}, "files": {name: {"metadata": {...}}}}) merged like export.metadata.read_metadata.
import { MetadataError } from "./errors.js";
import { metaFromStandard, parseLabels, readStandardMetadata } from "./tflite_metadata.js";
import { zipEntries, zipStart } from "./zip.js";

export { MetadataError, parseLabels, zipStart };

const ZIP_ENTRY = "metadata.json";
const REQUIRED = ["model_name", "labels", "input_size", "channels"];

/**
 * kerascnn's metadata.json packed in a .tflite file's bytes (Uint8Array), or null when there is none.
 * Throws MetadataError when it is there but cannot be read.
 */
export function readTfliteMetadata(bytes, where = "model") {
  const entry = zipEntries(bytes).find((e) => e.name === ZIP_ENTRY);
  if (!entry) return null;
  if (entry.method !== 0) {
    throw new MetadataError(`${where}: the packed ${ZIP_ENTRY} is compressed (method ${entry.method}); kerascnn stores it`);
  }
  let raw;
  try {
    raw = JSON.parse(new TextDecoder().decode(bytes.subarray(entry.data, entry.data + entry.size)));
  } catch (e) {
    throw new MetadataError(`${where}: the packed ${ZIP_ENTRY} is not JSON (${e.message})`);
  }
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) throw new MetadataError(`${where}: the packed ${ZIP_ENTRY} is not a JSON object`);
  return raw;
}

const fmt = (v) => (Array.isArray(v) ? `[${v.join(", ")}]` : String(v));

/** Per-channel float32 values of a mean/std list (one value applies to every channel). */
function perChannel(values, channels) {
  return Array.from({ length: channels }, (_, c) => Math.fround(Number(values.length === 1 ? values[0] : values[c])));
}

/** Throws MetadataError naming the first field on which the standard metadata and metadata.json disagree. */
function checkAgreement(standard, json, where) {
  const fail = (field, a, b) => {
    throw new MetadataError(
      `${where}: the standard TFLite Metadata and the packed ${ZIP_ENTRY} disagree on ${field}: ` +
        `TFLite Metadata ${a}, ${ZIP_ENTRY} ${b}. Re-export the model (kerascnn export) so that they match.`,
    );
  };
  if (standard.labels && Array.isArray(json.labels)) {
    const a = standard.labels;
    const b = json.labels.map(String);
    if (a.length !== b.length) fail("labels", `has ${a.length} labels`, `has ${b.length}`);
    const i = a.findIndex((label, k) => label !== b[k]);
    if (i >= 0) fail("labels", `label ${i} = ${JSON.stringify(a[i])}`, `label ${i} = ${JSON.stringify(b[i])}`);
  }
  const channels = standard.channels;
  for (const [name, fallback] of [["mean", [127.5]], ["std", [127.5]]]) {
    const theirs = Array.isArray(json[name]) ? json[name] : fallback;
    if (![1, channels].includes(theirs.length)) fail(`normalization ${name}`, fmt(standard[name]), fmt(theirs));
    const a = perChannel(standard[name], channels);
    const b = perChannel(theirs, channels);
    if (a.some((v, c) => v !== b[c])) fail(`normalization ${name}`, fmt(standard[name]), fmt(theirs));
  }
  const order = json.channel_order || (Number(json.channels) === 1 ? "GRAY" : "RGB");
  if ("channels" in json && order !== standard.channel_order) {
    fail("color space", `${standard.channel_order === "GRAY" ? "GRAYSCALE" : "RGB"} (${channels} channel(s))`, `channel_order ${order}`);
  }
}

/**
 * The metadata of a .tflite file's bytes for the page: {raw, source, standard, kerascnn}, or null when
 * the file has neither the standard TFLite Metadata nor kerascnn's metadata.json.
 *
 * raw: the object checkMetadata completes. With the standard metadata, its labels, normalization and
 * color space, the input size from the input tensor, the tensors' dtypes and quantization from the
 * flatbuffer, its name and version; metadata.json adds what the standard metadata does not carry
 * (quantization method, source, kerascnn version) and must agree on labels, normalization and color
 * space (else MetadataError naming the field). standard: readStandardMetadata's result (or null);
 * kerascnn: the metadata.json object (or null); source: where the metadata came from, in words.
 */
export function tfliteModelMetadata(bytes, where = "model") {
  const standard = readStandardMetadata(bytes, where);
  const kerascnn = readTfliteMetadata(bytes, where);
  if (!standard && !kerascnn) return null;
  if (!standard) return { raw: kerascnn, source: `kerascnn ${ZIP_ENTRY} (no TFLite Metadata)`, standard, kerascnn };
  const fromStandard = metaFromStandard(standard, where);
  if (kerascnn) checkAgreement(fromStandard, kerascnn, where);
  const raw = { ...(kerascnn ?? {}), ...fromStandard };
  raw.model_name ||= where.replace(/^.*[\/]/, "").replace(/\.tflite$/i, "");
  const source = kerascnn ? `TFLite Metadata + kerascnn ${ZIP_ENTRY}` : `TFLite Metadata (no kerascnn ${ZIP_ENTRY})`;
  return { raw, source, standard, kerascnn };
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
