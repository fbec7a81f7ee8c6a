// Minimal reading (and one patch) of the TFLite flatbuffer (schema: tensorflow/lite/schema/schema.fbs).
//
// `kerascnn export` writes models whose input/output shape_signature has a dynamic batch dimension
// (-1, shape [1, H, W, C]). The Python interpreter (and Android's Interpreter) run them at batch 1,
// but LiteRT.js 2.5 compiles against the signature and then rejects a [1, H, W, C] input tensor
// ("does not match expected ranked tensor type Float32[-1, ...]") and has no resize. So before
// compiling, the page sets every -1 in a shape_signature to the tensor's static size in `shape`
// (batch 1), which is what the Python interpreter runs. Weights and ops are untouched.

const TFL3 = [0x54, 0x46, 0x4c, 0x33]; // file identifier "TFL3"

function reader(bytes) {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u32 = (p) => dv.getUint32(p, true);
  const field = (table, index) => {
    const vtable = table - dv.getInt32(table, true);
    const vtSize = dv.getUint16(vtable, true);
    const at = 4 + 2 * index;
    const off = at < vtSize ? dv.getUint16(vtable + at, true) : 0;
    return off ? table + off : 0;
  };
  const vector = (fieldPos) => {
    if (!fieldPos) return null;
    const start = fieldPos + u32(fieldPos);
    return { length: u32(start), data: start + 4 };
  };
  const tables = (fieldPos) => {
    const v = vector(fieldPos);
    if (!v) return [];
    return Array.from({ length: v.length }, (_, j) => {
      const e = v.data + 4 * j;
      return e + u32(e);
    });
  };
  const ints = (fieldPos) => {
    const v = vector(fieldPos);
    if (!v) return null;
    return { pos: v.data, values: Array.from({ length: v.length }, (_, j) => dv.getInt32(v.data + 4 * j, true)) };
  };
  return { dv, u32, field, tables, ints };
}

export function isTflite(bytes) {
  return bytes.length >= 8 && TFL3.every((b, i) => bytes[4 + i] === b);
}

const TYPES = { 0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8" };

/** Every tensor of every subgraph: {subgraph, index, name, type, shape, signature, shapePos, signaturePos}. */
function tensors(bytes) {
  if (!isTflite(bytes)) throw new Error("not a TFLite flatbuffer (no TFL3 identifier)");
  const r = reader(bytes);
  const model = r.u32(0);
  const out = [];
  r.tables(r.field(model, 2)).forEach((subgraph, s) => {
    r.tables(r.field(subgraph, 0)).forEach((tensor, index) => {
      const shape = r.ints(r.field(tensor, 0));
      const signature = r.ints(r.field(tensor, 7));
      const typeField = r.field(tensor, 1);
      out.push({
        subgraph: s,
        index,
        type: TYPES[typeField ? r.dv.getInt8(typeField) : 0] ?? "other",
        shape: shape?.values ?? [],
        signature: signature?.values ?? null,
        signaturePos: signature?.pos ?? null,
      });
    });
  });
  return { r, model, out };
}

/** The inputs and outputs of the first subgraph: [{type, shape, signature}]. */
export function tfliteIO(bytes) {
  const { r, model, out } = tensors(bytes);
  const subgraph = r.tables(r.field(model, 2))[0];
  const pick = (fieldIndex) => (r.ints(r.field(subgraph, fieldIndex))?.values ?? []).map((i) => {
    const t = out.find((x) => x.subgraph === 0 && x.index === i);
    return { type: t.type, shape: t.shape, signature: t.signature };
  });
  return { inputs: pick(1), outputs: pick(2) };
}

/**
 * A copy of the model bytes in which every dynamic (-1) entry of a tensor's shape_signature is set to
 * its static size from `shape`. Returns {bytes, patched: number of entries changed}.
 */
export function staticShapes(bytes) {
  const copy = bytes.slice();
  const { out } = tensors(copy);
  const dv = new DataView(copy.buffer, copy.byteOffset, copy.byteLength);
  let patched = 0;
  for (const t of out) {
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
