// Parity of the page's image pipeline with Pillow beyond the golden fixtures: PNG files of every colour
// type, bit depth and interlacing, with and without transparency (written by this test's encoder, and by
// Pillow itself), random sizes and target sizes (both resize pass orders, up- and downscaling), grayscale
// and RGB, float32/int8/uint8 inputs. Python computes the reference tensors exactly as `kerascnn
// validate` does (tools/pillow_reference.py); the JS pipeline (app/lib/png.js + app/lib/preprocess.js)
// must give the same bytes.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { decodePng } from "../app/lib/png.js";
import { prepareInput, verticalFirst } from "../app/lib/preprocess.js";
import { encodePng } from "../scripts/png-encode.mjs";
import { WEB, runPython } from "./helpers.mjs";

const SCRIPT = join(WEB, "tools", "pillow_reference.py");

// A deterministic PRNG (mulberry32) so failures reproduce.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CONFIGS = [
  { channels: 3, mean: [127.5], std: [127.5], input_dtype: "float32" },
  { channels: 1, mean: [72.94], std: [90.02], input_dtype: "float32" },
  { channels: 3, mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375], input_dtype: "int8", input_quantization: { scale: 0.018658447265625, zero_point: -14 } },
  { channels: 1, mean: [0.0], std: [255.0], input_dtype: "uint8", input_quantization: { scale: 0.003921568859368563, zero_point: 0 } },
];

const DEPTHS = { 0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16] };

let dir;
const cases = [];

/** A tRNS colour key: each sample as 2 big-endian bytes. */
const keyBytes = (samples) => Uint8Array.from(samples.flatMap((v) => [v >> 8, v & 0xff]));

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "kerascnn-web-parity-"));
  const random = rng(20240607);
  const int = (lo, hi) => lo + Math.floor(random() * (hi - lo + 1));
  const files = [];
  // PNGs from this test's encoder: every colour type / bit depth, half of them interlaced.
  let n = 0;
  for (const [colorType, depths] of Object.entries(DEPTHS)) {
    for (const bitDepth of depths) {
      for (const interlace of [false, true]) {
        const width = int(1, 70);
        const height = int(1, 70);
        const channels = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 }[colorType];
        const max = colorType === "3" ? (1 << Math.min(bitDepth, 8)) - 1 : 2 ** bitDepth - 1;
        const entries = Math.min(max + 1, 256);
        const palette = colorType === "3" ? Uint8Array.from({ length: entries * 3 }, () => int(0, 255)) : undefined;
        const pixels = Array.from({ length: width * height }, () => Array.from({ length: channels }, () => int(0, max)));
        // tRNS: alpha for the first palette entries; for gray and RGB, in the interlaced files (the others
        // have none), a random pixel's samples as the colour key, 2 bytes each.
        let trns;
        if (colorType === "3") {
          trns = Uint8Array.from({ length: Math.min(entries, 7) }, () => int(0, 255));
        } else if ((colorType === "0" || colorType === "2") && interlace) {
          trns = keyBytes(pixels[int(0, pixels.length - 1)]);
        }
        const png = encodePng({ width, height, colorType: Number(colorType), bitDepth, interlace, palette, trns, sample: (x, y) => pixels[y * width + x] });
        const path = join(dir, `enc_${n++}_ct${colorType}_d${bitDepth}${interlace ? "_i" : ""}.png`);
        writeFileSync(path, png);
        files.push(path);
      }
    }
  }
  // Colour keys that Pillow matches unlike the PNG spec (the key's low byte against the 8-bit value): a
  // 2/4-bit gray key equal to a scaled value, 1-bit keys, a 16-bit RGB key whose low bytes are a pixel's
  // high bytes, and a 16-bit gray key (ignored).
  const keyed = [
    [0, 2, [85], [[0], [1], [2], [3]]],
    [0, 2, [1], [[0], [1], [2], [3]]],
    [0, 4, [17], [[0], [1], [15], [2]]],
    [0, 1, [1], [[0], [1]]],
    [0, 1, [0], [[0], [1]]],
    [0, 16, [0x1234], [[0x1234], [0x8000]]],
    [2, 16, [0x12, 0x34, 0x56], [[0x1200, 0x3400, 0x5600], [0x1234, 0x3456, 0x5678], [0x12, 0x34, 0x56]]],
  ];
  for (const [colorType, bitDepth, key, samples] of keyed) {
    const sample = (x, y) => samples[(x + y) % samples.length];
    const png = encodePng({ width: 5, height: 3, colorType, bitDepth, trns: keyBytes(key), sample });
    const path = join(dir, `key_${n++}_ct${colorType}_d${bitDepth}.png`);
    writeFileSync(path, png);
    files.push(path);
  }
  // PNGs written by Pillow itself.
  const written = [];
  const modes = ["L", "LA", "RGB", "RGBA", "P", "1", "I;16"].map((mode) => [mode, false]);
  modes.push(["P", true], ["RGB", true], ["L", true], ["I;16", true]); // with a tRNS chunk
  for (const [i, [mode, transparent]] of modes.entries()) {
    const path = join(dir, `pil_${i}.png`);
    written.push({ write_png: path, mode, transparent, size: [int(2, 80), int(2, 80)], seed: i });
    files.push(path);
  }
  // Target sizes: random, plus sizes that exercise both pass orders and one-pass resizes.
  const jobs = [];
  for (const [i, png] of files.entries()) {
    for (let k = 0; k < 3; k++) {
      const config = { ...CONFIGS[(i + k) % CONFIGS.length], input_size: [int(1, 64), int(1, 64)] };
      jobs.push({ png, config });
    }
  }
  const reference = await runPython(SCRIPT, [], [...written, ...jobs]);
  reference.slice(written.length).forEach((ref, i) => cases.push({ ...jobs[i], ref }));
});

after(() => dir && rmSync(dir, { recursive: true, force: true }));

test("Python computed reference tensors for the parity cases", () => {
  assert.ok(cases.length >= 100, `${cases.length} cases`);
});

test("the parity cases cover both resize pass orders, upscaling and downscaling", async () => {
  let v = 0;
  let h = 0;
  for (const c of cases) {
    const png = await decodePng(new Uint8Array(readFileSync(c.png)));
    const [H, W] = c.config.input_size;
    if (W !== png.width && H !== png.height) verticalFirst(png.width, png.height, W, H) ? v++ : h++;
  }
  assert.ok(v >= 5 && h >= 5, `vertical-first ${v}, horizontal-first ${h}`);
});

test("PNG decode + preprocessing give Pillow's bytes for every colour type, depth, size and dtype", async () => {
  const failures = [];
  for (const c of cases) {
    const png = await decodePng(new Uint8Array(readFileSync(c.png)));
    const { tensor, shape, dtype } = prepareInput(png.rgba, png.width, png.height, c.config);
    const got = Buffer.from(tensor.buffer, tensor.byteOffset, tensor.byteLength);
    const expected = Buffer.from(c.ref.data, "base64");
    if (dtype !== c.ref.dtype || JSON.stringify(shape) !== JSON.stringify(c.ref.shape) || !got.equals(expected)) {
      failures.push(`${c.png.split("/").pop()} ${png.width}x${png.height} -> ${c.config.input_size} ch${c.config.channels} ${c.config.input_dtype}`);
    }
  }
  assert.deepEqual(failures, [], `${failures.length} of ${cases.length} differ`);
});
