// Unit tests of the page's pure logic (app/lib) against the golden fixtures in mobile_demo/fixtures,
// written by tests/mobile/test_golden_fixtures.py from the Python preprocessing of `kerascnn validate`.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { checkMetadata, parseLabels, readOnnxMetadata, readTfliteMetadata, sidecarMetadata, zipStart } from "../app/lib/metadata.js";
import { decodePng } from "../app/lib/png.js";
import { postprocess, topK } from "../app/lib/postprocess.js";
import { argbToRGBA, prepareInput, roundHalfEven } from "../app/lib/preprocess.js";
import { MODELS, fixtureBytes, manifest } from "./helpers.mjs";

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
