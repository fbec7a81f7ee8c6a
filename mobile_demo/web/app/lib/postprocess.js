// What the app shows for a raw output tensor, as the Python side computes it (export/runtime.py and
// tests/mobile/test_golden_fixtures.py): dequantize int8/uint8 outputs, softmax for "logits" outputs,
// top-k with ties broken by the lower class index.

/** runtime.dequantize: (float32(q) - float32(zero_point)) * float32(scale), in float32. */
export function dequantize(raw, params) {
  const scale = Math.fround(params.scale);
  const zero = Math.fround(params.zero_point);
  const out = new Float32Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = Math.fround(Math.fround(raw[i] - zero) * scale);
  return out;
}

/** Softmax computed in float64 (max subtracted), returned as float32, like the fixtures' _softmax. */
export function softmax(values) {
  let max = -Infinity;
  for (const v of values) if (v > max) max = v;
  const e = Array.from(values, (v) => Math.exp(v - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return Float32Array.from(e, (v) => v / sum);
}

/** Top-k entries [{index, label, score}] by descending score; equal scores: the lower index first. */
export function topK(scores, labels = [], k = 3) {
  const order = Array.from(scores, (_, i) => i);
  order.sort((a, b) => scores[b] - scores[a] || a - b);
  return order.slice(0, k).map((index) => ({ index, label: labels[index] ?? `class ${index}`, score: scores[index] }));
}

/**
 * Scores shown to the user from one raw output row: dequantized when the output is int8/uint8
 * (meta.output_dtype + meta.output_quantization), passed through softmax when meta.output is "logits".
 */
export function postprocess(raw, meta, k = 3) {
  const quantized = meta.output_dtype === "int8" || meta.output_dtype === "uint8";
  const values = quantized ? dequantize(raw, meta.output_quantization) : Float32Array.from(raw);
  const scores = meta.output === "logits" ? softmax(values) : values;
  return { scores, top: topK(scores, meta.labels, k) };
}
