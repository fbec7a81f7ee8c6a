// Reading (and one patch) of the TFLite flatbuffer (schema: tensorflow/lite/schema/schema.fbs), with the
// `flatbuffers` runtime (lib/flatbuf.js): the input/output tensors (name, type, shape, quantization),
// the buffer of a Model.metadata entry (the standard TFLite Metadata is the one named TFLITE_METADATA),
// and the static-shape patch below.
//
// `kerascnn export` writes a fixed batch of 1 (nothing to patch), but `--dynamic-batch` and other tools
// write models whose input/output shape_signature has a dynamic batch dimension (-1, shape
// [1, H, W, C]). The Python interpreter (and Android's Interpreter) run them at batch 1, but LiteRT.js
// 2.5 compiles against the signature and then rejects a [1, H, W, C] input tensor ("does not match
// expected ranked tensor type Float32[-1, ...]") and has no resize. So before compiling, the page sets
// every -1 in a shape_signature to the tensor's static size in `shape` (batch 1), which is what the
// Python interpreter runs. Weights and ops are untouched.
import { MetadataError } from "./errors.js";
import { Table } from "./flatbuf.js";

const TFL3 = [0x54, 0x46, 0x4c, 0x33]; // file identifier "TFL3"

// schema.fbs slots
const MODEL = { subgraphs: 2, buffers: 4, metadata: 6 };
const SUBGRAPH = { tensors: 0, inputs: 1, outputs: 2 };
const TENSOR = { shape: 0, type: 1, buffer: 2, name: 3, quantization: 4, shape_signature: 7 };
const QUANTIZATION = { scale: 2, zero_point: 3 };
const BUFFER = { data: 0, offset: 1, size: 2 };
const METADATA = { name: 0, buffer: 1 };

// TensorType
const TYPES = { 0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool", 7: "int16", 9: "int8", 10: "float64" };

export function isTflite(bytes) {
  return bytes.length >= 8 && TFL3.every((b, i) => bytes[4 + i] === b);
}

function root(bytes) {
  if (!isTflite(bytes)) throw new MetadataError("not a TFLite model (no TFL3 file identifier)");
  return Table.root(bytes, "TFL3");
}

/** A tensor table as {name, type, shape, signature, quantization, signaturePos}. */
function tensorInfo(t) {
  const type = TYPES[t.scalar(TENSOR.type, "byte")] ?? "other";
  const signature = t.scalarsAt(TENSOR.shape_signature, "int");
  const q = t.table(TENSOR.quantization);
  const scale = q?.scalars(QUANTIZATION.scale, "float") ?? [];
  const zero = q?.scalars(QUANTIZATION.zero_point, "long") ?? [];
  return {
    name: t.string(TENSOR.name) ?? "",
    type,
    shape: t.scalars(TENSOR.shape, "int") ?? [],
    signature: signature?.values ?? null,
    // As the Python interpreter reports it (export/tflite.py::io_details): the first scale and zero
    // point, for int8/uint8 tensors only.
    quantization: (type === "int8" || type === "uint8") && scale.length ? { scale: scale[0], zero_point: zero[0] ?? 0 } : null,
    signaturePos: signature?.pos ?? null,
  };
}

/** Every tensor of every subgraph (with the position of its shape_signature, for the patch). */
function tensors(bytes) {
  const model = root(bytes);
  return model.tables(MODEL.subgraphs).flatMap((subgraph, s) => subgraph.tables(SUBGRAPH.tensors).map((t, index) => ({ subgraph: s, index, ...tensorInfo(t) })));
}

/**
 * The inputs and outputs of the first subgraph: {inputs: [{name, type, shape, signature, quantization}],
 * outputs: [...]}. Throws MetadataError for a file that is not a (complete) TFLite model.
 */
export function tfliteIO(bytes) {
  const subgraph = root(bytes).tables(MODEL.subgraphs)[0];
  if (!subgraph) throw new MetadataError("the TFLite model has no subgraph");
  const all = subgraph.tables(SUBGRAPH.tensors);
  const pick = (slot) =>
    (subgraph.scalars(slot, "int") ?? []).map((i) => {
      if (!all[i]) throw new MetadataError(`the TFLite model names tensor ${i}, which does not exist`);
      const { signaturePos, ...info } = tensorInfo(all[i]);
      return info;
    });
  return { inputs: pick(SUBGRAPH.inputs), outputs: pick(SUBGRAPH.outputs) };
}

/** The names of the Model.metadata entries ("min_runtime_version", "TFLITE_METADATA", ...). */
export function tfliteMetadataNames(bytes) {
  return root(bytes).tables(MODEL.metadata).map((m) => m.string(METADATA.name));
}

/**
 * The bytes of the Model.metadata entry called `name` (a view into `bytes`), or null when the model
 * has no such entry or its buffer is empty.
 */
export function tfliteMetadataBuffer(bytes, name) {
  const model = root(bytes);
  const entry = model.tables(MODEL.metadata).find((m) => m.string(METADATA.name) === name);
  if (!entry) return null;
  const index = entry.scalar(METADATA.buffer, "uint");
  const buffer = model.tables(MODEL.buffers)[index];
  if (!buffer) throw new MetadataError(`Model.metadata ${name} names buffer ${index}, which does not exist`);
  const offset = buffer.scalar(BUFFER.offset, "ulong");
  if (offset > 1) {
    // A model over 2 GB keeps its buffers after the flatbuffer, at absolute offsets.
    const size = buffer.scalar(BUFFER.size, "ulong");
    if (offset + size > bytes.length) throw new MetadataError(`buffer ${index} (${name}) runs past the end of the file: truncated`);
    return bytes.subarray(offset, offset + size);
  }
  const data = buffer.bytes(BUFFER.data);
  return data && data.length ? data : null;
}

/**
 * A copy of the model bytes in which every dynamic (-1) entry of a tensor's shape_signature is set to
 * its static size from `shape`. Returns {bytes, patched: number of entries changed}.
 */
export function staticShapes(bytes) {
  const copy = bytes.slice();
  const dv = new DataView(copy.buffer, copy.byteOffset, copy.byteLength);
  let patched = 0;
  for (const t of tensors(copy)) {
    if (!t.signature || t.signature.length !== t.shape.length) continue;
    t.signature.forEach((v, i) => {
      if (v === -1 && t.shape[i] > 0) {
        dv.setInt32(t.signaturePos + 4 * i, t.shape[i], true);
        patched++;
      }
    });
  }
  return { bytes: copy, patched };
}
