// Unit tests of the page's pure logic (app/lib) against the golden fixtures in mobile_demo/fixtures,
// written by tests/mobile/test_golden_fixtures.py from the Python preprocessing of `kerascnn validate`.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { MetadataError, checkMetadata, parseLabels, readOnnxMetadata, readTfliteMetadata, sidecarMetadata, tfliteModelMetadata, zipStart } from "../app/lib/metadata.js";
import { decodePng } from "../app/lib/png.js";
import { postprocess, topK } from "../app/lib/postprocess.js";
import { argbToRGBA, prepareInput, roundHalfEven } from "../app/lib/preprocess.js";
import { decodeMetadata, metaFromStandard, readStandardMetadata } from "../app/lib/tflite_metadata.js";
import { tfliteMetadataBuffer, tfliteMetadataNames } from "../app/lib/tflite.js";
import { packedFiles, zipEntries } from "../app/lib/zip.js";
import { MODELS, appendStoredZip, findAll, fixtureBytes, manifest, replaceOnce } from "./helpers.mjs";

const M = manifest();

function tensorBytes(tensor) {
  return new Uint8Array(tensor.buffer, tensor.byteOffset, tensor.byteLength);
}

function firstDifference(a, b) {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return -1;
}

test("fixtures cover float32, int8 and uint8 inputs", () => {
  assert.ok(M.preprocess.length >= 16, `${M.preprocess.length} preprocess cases`);
  assert.deepEqual(new Set(M.preprocess.map((c) => c.dtype)), new Set(["float32", "int8", "uint8"]));
});

for (const c of M.preprocess) {
  test(`preprocess ${c.tensor} from the ARGB pixels is byte-identical to Python`, () => {
    const config = M.configs[c.config];
    const rgba = argbToRGBA(fixtureBytes(c.pixels));
    assert.equal(rgba.length, c.width * c.height * 4);
    const { tensor, shape, dtype } = prepareInput(rgba, c.width, c.height, config);
    assert.deepEqual(shape, c.shape);
    assert.equal(dtype, c.dtype);
    const expected = fixtureBytes(c.tensor);
    const got = tensorBytes(tensor);
    assert.equal(got.length, expected.length, "tensor byte length");
    const at = firstDifference(got, expected);
    assert.equal(at, -1, `first differing byte ${at}`);
  });
}

for (const name of [...new Set(M.preprocess.map((c) => c.image))]) {
  const c = M.preprocess.find((p) => p.image === name);
  test(`PNG decoder gives the fixture pixels of ${name}`, async () => {
    const png = await decodePng(fixtureBytes(name));
    assert.equal(png.width, c.width);
    assert.equal(png.height, c.height);
    const expected = argbToRGBA(fixtureBytes(c.pixels));
    assert.equal(firstDifference(png.rgba, expected), -1);
  });
}

for (const c of M.preprocess) {
  test(`preprocess ${c.tensor} from the PNG file is byte-identical to Python`, async () => {
    const png = await decodePng(fixtureBytes(c.image));
    const { tensor } = prepareInput(png.rgba, png.width, png.height, M.configs[c.config]);
    assert.equal(firstDifference(tensorBytes(tensor), fixtureBytes(c.tensor)), -1);
  });
}

for (const c of M.postprocess) {
  test(`postprocess ${c.name}: scores within 1e-6, top-3 exact`, () => {
    const Raw = { float32: Float32Array, int8: Int8Array, uint8: Uint8Array }[c.output_dtype];
    const meta = { output: c.output, output_dtype: c.output_dtype, output_quantization: c.output_quantization, labels: c.labels };
    const { scores, top } = postprocess(Raw.from(c.raw), meta);
    assert.equal(scores.length, c.scores.length);
    for (let i = 0; i < scores.length; i++) {
      assert.ok(Math.abs(scores[i] - c.scores[i]) <= 1e-6, `score ${i}: ${scores[i]} vs ${c.scores[i]}`);
    }
    assert.deepEqual(top.map((t) => [t.index, t.label]), c.top3.map((t) => [t.index, t.label]));
    for (let i = 0; i < 3; i++) assert.ok(Math.abs(top[i].score - c.top3[i].score) <= 1e-6);
  });
}

test("top-k breaks ties by the lower index", () => {
  assert.deepEqual(topK([0.1, 0.5, 0.2, 0.5, 0.5], [], 3).map((t) => t.index), [1, 3, 4]);
});

test("round half to even like numpy", () => {
  assert.deepEqual([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 2.4999, -3.5001].map(roundHalfEven), [-2, -2, -0, 0, 2, 2, 4, 2, -4]);
});

const tflites = readdirSync(MODELS).filter((f) => f.endsWith(".tflite")).sort();

test("fixtures list the metadata of every demo .tflite", () => {
  assert.deepEqual(Object.keys(M.tflite_metadata).sort(), tflites);
});

for (const name of tflites) {
  test(`embedded metadata of ${name} equals the fixture`, () => {
    const bytes = new Uint8Array(readFileSync(join(MODELS, name)));
    assert.ok(zipStart(bytes) > 0);
    const meta = readTfliteMetadata(bytes);
    assert.deepEqual(meta, M.tflite_metadata[name]);
    assert.deepEqual(checkMetadata(meta).labels, parseLabels(readFileSync(join(MODELS, "labels.txt"), "utf8")));
  });
}

for (const name of readdirSync(MODELS).filter((f) => f.endsWith(".onnx")).sort()) {
  test(`embedded metadata of ${name} agrees with model.json`, () => {
    const meta = readOnnxMetadata(new Uint8Array(readFileSync(join(MODELS, name))));
    const sidecar = JSON.parse(readFileSync(join(MODELS, "model.json"), "utf8"));
    const expected = sidecarMetadata(sidecar, name);
    assert.ok(meta, "no metadata_props kerascnn");
    for (const key of ["labels", "input_size", "channels", "mean", "std", "input_dtype", "output_dtype", "quantization", "format"]) {
      assert.deepEqual(meta[key], expected[key], key);
    }
  });
}

test("a .tflite without an appended archive has no metadata; the sidecar is the fallback", () => {
  const bytes = new Uint8Array(readFileSync(join(MODELS, "mobilenet_v2_float32.tflite")));
  const bare = bytes.subarray(0, zipStart(bytes));
  assert.equal(readTfliteMetadata(bare), null);
  const sidecar = JSON.parse(readFileSync(join(MODELS, "model.json"), "utf8"));
  const meta = checkMetadata(sidecarMetadata(sidecar, "mobilenet_v2_float32.tflite"));
  for (const key of ["labels", "input_size", "channels", "mean", "std", "input_dtype", "output_dtype"]) {
    assert.deepEqual(meta[key], M.tflite_metadata["mobilenet_v2_float32.tflite"][key], key);
  }
});

test("labels.txt parsing skips blank lines and strips CR", () => {
  assert.deepEqual(parseLabels("a\r\nb b\n\n c\n"), ["a", "b b", " c"]);
});

// --- the standard TFLite Metadata (TFLITE_METADATA, metadata_schema.fbs) ---------------------------

const LABELS = parseLabels(readFileSync(join(MODELS, "labels.txt"), "utf8"));
const modelBytes = (name) => new Uint8Array(readFileSync(join(MODELS, name)));
/** The flatbuffer alone (the bytes before the appended archive). */
const flatbuffer = (bytes) => bytes.slice(0, zipStart(bytes));
/** A copy as a tool without kerascnn's metadata.json writes it (MediaPipe Model Maker): labels.txt only. */
const foreign = (bytes, options) => appendStoredZip(flatbuffer(bytes), [["labels.txt", packedFiles(bytes).get("labels.txt")]], options);
/** A copy whose Model.metadata has no TFLITE_METADATA entry (its name changed, same length). */
const withoutStandard = (bytes) => replaceOnce(bytes, "TFLITE_METADATA", "XFLITE_METADATA");
/** A copy with kerascnn's metadata.json changed by `edit`. */
function withJson(bytes, edit) {
  const files = packedFiles(bytes);
  const json = JSON.parse(new TextDecoder().decode(files.get("metadata.json")));
  edit(json);
  return appendStoredZip(flatbuffer(bytes), [["labels.txt", files.get("labels.txt")], ["metadata.json", JSON.stringify(json)]]);
}
// What a model with only the standard metadata still gives (kerascnn's JSON adds quantization method,
// source, kerascnn version, schema).
const FROM_STANDARD = ["model_name", "labels", "input_size", "channels", "mean", "std", "channel_order", "layout", "output", "format",
  "input_dtype", "output_dtype", "input_quantization", "output_quantization", "model_version"];

test("fixtures list the standard metadata of every demo .tflite", () => {
  assert.deepEqual(Object.keys(M.standard_metadata).sort(), tflites);
});

for (const name of tflites) {
  test(`standard TFLite Metadata of ${name} equals the fixture`, () => {
    const bytes = modelBytes(name);
    assert.ok(tfliteMetadataNames(bytes).includes("TFLITE_METADATA"));
    const info = readStandardMetadata(bytes, name);
    const expected = M.standard_metadata[name];
    assert.deepEqual(info.metadata, expected.metadata);
    assert.deepEqual(info.packedFiles, expected.packed_files);
    // the fields the page uses, as the fixture gives them
    const image = expected.metadata.subgraph_metadata[0].input_tensor_metadata[0];
    const scores = expected.metadata.subgraph_metadata[0].output_tensor_metadata[0];
    assert.equal(info.name, expected.metadata.name);
    assert.equal(info.version, expected.metadata.version);
    assert.equal(info.author, expected.metadata.author);
    assert.equal(info.minParserVersion, expected.metadata.min_parser_version);
    assert.equal(info.input.colorSpace, image.content.content_properties.color_space);
    assert.deepEqual(info.input.defaultSize, image.content.content_properties.default_size);
    assert.deepEqual(info.input.mean, image.process_units[0].options.mean);
    assert.deepEqual(info.input.std, image.process_units[0].options.std);
    assert.deepEqual(info.input.stats, image.stats);
    assert.deepEqual(info.output.stats, scores.stats);
    assert.equal(info.output.labelsFile, "labels.txt");
    assert.deepEqual(info.output.labels, LABELS);
    assert.equal(info.output.kind, M.tflite_metadata[name].output);
  });

  test(`tensor info of ${name} (from the TFLite flatbuffer) equals the fixture's dtypes and quantization`, () => {
    const info = readStandardMetadata(modelBytes(name), name);
    const expected = M.tflite_metadata[name];
    assert.equal(info.input.tensor.type, expected.input_dtype);
    assert.equal(info.output.tensor.type, expected.output_dtype);
    assert.deepEqual(info.input.tensor.quantization, expected.input_quantization);
    assert.deepEqual(info.output.tensor.quantization, expected.output_quantization);
    assert.deepEqual(info.input.tensor.shape, [1, ...expected.input_size, expected.channels]);
    assert.deepEqual(info.output.tensor.shape, [1, expected.labels.length]);
  });

  test(`${name}: the page's metadata (standard + metadata.json, which agree) equals the fixture`, () => {
    const found = tfliteModelMetadata(modelBytes(name), name);
    assert.match(found.source, /^TFLite Metadata \+ kerascnn metadata\.json$/);
    assert.deepEqual(checkMetadata(found.raw, name), M.tflite_metadata[name]);
  });

  for (const absolute of [true, false]) {
    test(`${name}: a copy packing only labels.txt (no metadata.json; ${absolute ? "absolute" : "archive-relative"} zip offsets) still parses`, () => {
      const bytes = modelBytes(name);
      const copy = foreign(bytes, { absolute });
      assert.equal(zipStart(copy), zipStart(bytes));
      assert.equal(readTfliteMetadata(copy), null);
      const info = readStandardMetadata(copy, name);
      assert.deepEqual(info.metadata, M.standard_metadata[name].metadata);
      assert.deepEqual(info.packedFiles, ["labels.txt"]);
      assert.deepEqual(info.output.labels, LABELS);
      const found = tfliteModelMetadata(copy, name);
      assert.match(found.source, /^TFLite Metadata \(no kerascnn metadata\.json\)$/);
      assert.equal(found.kerascnn, null);
      const meta = checkMetadata(found.raw, name);
      for (const key of FROM_STANDARD) assert.deepEqual(meta[key], M.tflite_metadata[name][key], key);
    });
  }
}

test("a model without TFLITE_METADATA: no standard metadata (null, or MetadataError when required); metadata.json alone still works", () => {
  const bytes = withoutStandard(modelBytes("mobilenet_v2_int8.tflite"));
  assert.ok(!tfliteMetadataNames(bytes).includes("TFLITE_METADATA"));
  assert.equal(tfliteMetadataBuffer(bytes, "TFLITE_METADATA"), null);
  assert.equal(readStandardMetadata(bytes, "x.tflite"), null);
  assert.throws(() => readStandardMetadata(bytes, "x.tflite", { required: true }), (e) => e instanceof MetadataError && /^x\.tflite: no TFLite Metadata: Model\.metadata has no TFLITE_METADATA entry \(it has min_runtime_version, CONVERSION_METADATA, XFLITE_METADATA\)/.test(e.message));
  const found = tfliteModelMetadata(bytes, "x.tflite");
  assert.match(found.source, /no TFLite Metadata/);
  assert.deepEqual(checkMetadata(found.raw), M.tflite_metadata["mobilenet_v2_int8.tflite"]);
  // neither metadata: nothing (the page then says so)
  assert.equal(tfliteModelMetadata(flatbuffer(bytes), "x.tflite"), null);
});

test("a TFLITE_METADATA buffer that is not TFLite Metadata (no M001) is an error", () => {
  const bytes = modelBytes("mobilenet_v2_float32.tflite");
  const buffer = tfliteMetadataBuffer(bytes, "TFLITE_METADATA");
  assert.equal(new TextDecoder().decode(buffer.subarray(4, 8)), "M001");
  const copy = bytes.slice();
  copy[buffer.byteOffset - bytes.byteOffset + 7] = "9".charCodeAt(0); // M009
  assert.throws(() => readStandardMetadata(copy, "m.tflite"), (e) => e instanceof MetadataError && /^m\.tflite: not a TFLite Metadata buffer \(file identifier M001 missing\)/.test(e.message));
  assert.throws(() => decodeMetadata(new Uint8Array(6)), MetadataError);
});

test("truncated models give a MetadataError naming the file, never garbage", () => {
  const bytes = modelBytes("mobilenet_v2_float32.tflite");
  const buffer = tfliteMetadataBuffer(bytes, "TFLITE_METADATA");
  const metaAt = buffer.byteOffset - bytes.byteOffset;
  const start = zipStart(bytes);
  const cuts = [0, 3, 7, 8, 16, 64, 1000, metaAt + 10, metaAt + buffer.length - 1, Math.floor(bytes.length / 2), start - 1, start, start + 40, bytes.length - 23, bytes.length - 1];
  for (const n of cuts) {
    assert.throws(() => readStandardMetadata(bytes.subarray(0, n), "cut.tflite"), (e) => e instanceof MetadataError && e.message.startsWith("cut.tflite: "), `cut at ${n}`);
  }
  // the metadata buffer itself, truncated
  for (const n of [8, 12, 40, Math.floor(buffer.length / 2), buffer.length - 4]) {
    assert.throws(() => decodeMetadata(buffer.subarray(0, n)), MetadataError, `metadata cut at ${n}`);
  }
  // cut where the flatbuffer reads past the end: the message says so
  assert.throws(() => readStandardMetadata(bytes.subarray(0, 64), "cut.tflite"), /truncated or corrupt/);
  assert.throws(() => readStandardMetadata(bytes.subarray(0, 7), "cut.tflite"), /not a TFLite model/);
  // only the archive cut off: the labels file the metadata names is missing
  assert.throws(() => readStandardMetadata(bytes.subarray(0, start), "cut.tflite"), /names the labels file labels\.txt \(TENSOR_AXIS_LABELS\), but the file packs no labels\.txt/);
});

test("standard metadata and metadata.json that disagree: an error naming the field", () => {
  const bytes = modelBytes("mobilenet_v2_int8.tflite");
  const cases = [
    [(j) => (j.labels[3] = "Gown"), /disagree on labels: TFLite Metadata label 3 = "Dress", metadata\.json label 3 = "Gown"/],
    [(j) => j.labels.pop(), /disagree on labels: TFLite Metadata has 10 labels, metadata\.json has 9/],
    [(j) => (j.mean = [128]), /disagree on normalization mean: TFLite Metadata \[127\.5\], metadata\.json \[128\]/],
    [(j) => (j.std = [127.5, 127.5, 64]), /disagree on normalization std/],
    [(j) => Object.assign(j, { channels: 1, channel_order: "GRAY" }), /disagree on color space: TFLite Metadata RGB/],
  ];
  for (const [edit, message] of cases) {
    assert.throws(() => tfliteModelMetadata(withJson(bytes, edit), "m.tflite"), (e) => e instanceof MetadataError && message.test(e.message) && e.message.startsWith("m.tflite: "), String(message));
  }
  // values that agree in float32 are no disagreement (the standard metadata stores float32)
  const same = withJson(bytes, (j) => Object.assign(j, { mean: [127.5, 127.5, 127.5], std: [127.50000000001] }));
  assert.deepEqual(tfliteModelMetadata(same, "m.tflite").raw.mean, [127.5]);
});

test("appended zip: absolute and archive-relative offsets, compressed entries named", () => {
  const flat = flatbuffer(modelBytes("mobilenet_v2_int8.tflite"));
  for (const absolute of [true, false]) {
    const bytes = appendStoredZip(flat, [["a.txt", "A"], ["b.bin", new Uint8Array([1, 2, 3])]], { absolute });
    assert.equal(zipStart(bytes), flat.length);
    const files = packedFiles(bytes);
    assert.deepEqual([...files.keys()], ["a.txt", "b.bin"]);
    assert.deepEqual(Array.from(files.get("b.bin")), [1, 2, 3]);
  }
  assert.equal(zipStart(flat), -1);
  assert.deepEqual([...packedFiles(flat)], []);
  // labels.txt marked as deflated (method 8): listed, not read, and the reader says why
  const bytes = foreign(modelBytes("mobilenet_v2_int8.tflite"));
  const [entry] = zipEntries(bytes);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  dv.setUint16(entry.header + 8, 8, true);
  const cd = findAll(bytes.subarray(entry.header), "PK\x01\x02")[0] + entry.header; // the central directory entry
  dv.setUint16(cd + 10, 8, true);
  assert.equal(packedFiles(bytes).get("labels.txt"), null);
  assert.throws(() => readStandardMetadata(bytes, "z.tflite"), /z\.tflite: the packed labels\.txt is compressed/);
});

test("standard metadata -> the page's metadata: grayscale, logits, uint8 tensors, no normalization, dynamic size, mismatches", () => {
  const tensor = (type, shape, quantization = null) => ({ name: "t", type, shape, signature: null, quantization });
  const info = (over = {}) => ({
    name: "m", version: "7", input: { colorSpace: "GRAYSCALE", defaultSize: { width: 40, height: 24 }, mean: [72.94], std: [90.02], tensor: tensor("uint8", [1, 28, 28, 1], { scale: 0.5, zero_point: 3 }) },
    output: { kind: "logits", labels: ["a", "b"], tensor: tensor("int8", [1, 2], { scale: 0.25, zero_point: -1 }) }, ...over,
  });
  const meta = checkMetadata(metaFromStandard(info(), "g.tflite"), "g.tflite");
  assert.deepEqual(
    [meta.model_name, meta.model_version, meta.input_size, meta.channels, meta.channel_order, meta.mean, meta.std, meta.output, meta.labels],
    ["m", "7", [28, 28], 1, "GRAY", [72.94], [90.02], "logits", ["a", "b"]],
  );
  assert.deepEqual([meta.input_dtype, meta.input_quantization, meta.output_dtype, meta.output_quantization], ["uint8", { scale: 0.5, zero_point: 3 }, "int8", { scale: 0.25, zero_point: -1 }]);
  // no NormalizationOptions: raw pixels (mean 0, std 1), as export/metadata.py::from_standard_metadata
  const raw = metaFromStandard(info({ input: { ...info().input, mean: null, std: null } }));
  assert.deepEqual([raw.mean, raw.std], [[0], [1]]);
  // a dynamic H/W takes the metadata's default_size; none at all is an error
  const dynamic = { ...info().input, tensor: tensor("float32", [1, -1, -1, 1]) };
  assert.deepEqual(metaFromStandard(info({ input: dynamic })).input_size, [24, 40]);
  assert.throws(() => metaFromStandard(info({ input: { ...dynamic, defaultSize: null } }), "d.tflite"), /^MetadataError: d\.tflite: the input tensor's size is dynamic/);
  // color space and channels must agree; UNKNOWN follows the channels
  assert.throws(() => metaFromStandard(info({ input: { ...info().input, tensor: tensor("float32", [1, 28, 28, 3]) } }), "c.tflite"), /c\.tflite: the TFLite Metadata says color space GRAYSCALE but the input tensor has 3 channel\(s\)/);
  assert.equal(metaFromStandard(info({ input: { ...info().input, colorSpace: "UNKNOWN", tensor: tensor("float32", [1, 8, 8, 3]) } })).channel_order, "RGB");
  assert.throws(() => metaFromStandard(info({ input: { ...info().input, tensor: tensor("float32", [1, 784]) } })), /shape \[1,784\]; an image classifier takes \[1, H, W, C\]/);
  // no name or version in the metadata: nothing invented here (tfliteModelMetadata names it after the file)
  const anonymous = metaFromStandard(info({ name: null, version: null }));
  assert.ok(!("model_name" in anonymous) && !("model_version" in anonymous));
});
