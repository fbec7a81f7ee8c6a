// WebP parity: the page takes what the browser decodes (app/lib/decode.js: createImageBitmap with
// premultiplyAlpha "none" and colorSpaceConversion "none", then a canvas), and kerascnn reads WebP with
// Pillow's libwebp. In Debian's headless Chromium, for lossless and lossy WebP (quality 50, 75, 90), with
// and without alpha, photo-like and noise images: the decoded pixels (composited over white, as
// `viewable` does) are identical to Pillow's, and so are the model input tensors (float32, int8, uint8,
// gray and RGB, resized up and down) byte for byte. The parity reached: exact, 0 levels.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { after, before, test } from "node:test";

import { staticServer } from "../scripts/server.mjs";
import { APP, CHROMIUM, FIXTURES, WEB, requireFile, runPython } from "./helpers.mjs";

const SCRIPT = join(WEB, "tools", "pillow_reference.py");
// The flags of the e2e tests (e2e.test.mjs; not imported from there, which would run its tests here too).
const CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"];
const CONFIGS = [
  { input_size: [32, 32], channels: 3, mean: [127.5], std: [127.5], input_dtype: "float32" },
  { input_size: [224, 200], channels: 3, mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375], input_dtype: "int8", input_quantization: { scale: 0.018658447265625, zero_point: -14 } },
  { input_size: [28, 28], channels: 1, mean: [0.0], std: [255.0], input_dtype: "uint8", input_quantization: { scale: 0.003921568859368563, zero_point: 0 } },
];

let dir;
let server;
let browser;
let page;
let setupError = null;
const webps = [];
const measured = {}; // file -> {maxDiff, exact, pixels}

before(async () => {
  try {
    requireFile(CHROMIUM, "apt-get install -y chromium");
    requireFile(join(WEB, "node_modules", "playwright-core"), `cd ${WEB} && npm ci`);
    dir = mkdtempSync(join(tmpdir(), "kerascnn-web-webp-"));
    const photo = join(FIXTURES, "images", "photo_61x47.png");
    const noise = join(FIXTURES, "images", "rgba_40x40.png"); // random-looking colours: hard for lossy WebP
    const jobs = [];
    for (const [from, size] of [[photo, [183, 141]], [noise, [64, 48]]]) {
      const stem = basename(from, ".png");
      for (const kind of [{ lossless: true }, { quality: 90 }, { quality: 75 }, { quality: 50 }]) {
        for (const alpha of [false, true]) {
          const name = `${stem}_${kind.lossless ? "lossless" : `q${kind.quality}`}${alpha ? "_alpha" : ""}.webp`;
          jobs.push({ write_webp: join(dir, name), from, size, alpha, ...kind });
        }
      }
    }
    const decodes = jobs.map((j) => ({ decoded: j.write_webp }));
    const tensors = jobs.flatMap((j) => CONFIGS.map((config) => ({ png: j.write_webp, config })));
    const ref = await runPython(SCRIPT, [], [...jobs, ...decodes, ...tensors]);
    jobs.forEach((j, i) => {
      webps.push({
        path: j.write_webp,
        pixels: ref[jobs.length + i],
        tensors: CONFIGS.map((_, k) => ref[2 * jobs.length + i * CONFIGS.length + k]),
      });
    });
    server = staticServer(APP);
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { chromium } = await import("playwright-core");
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS });
    page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${server.address().port}/manifest.webmanifest`); // an app-origin page
  } catch (e) {
    setupError = e;
  }
});

after(async () => {
  await browser?.close();
  await new Promise((resolve) => (server ? server.close(resolve) : resolve()));
  if (dir) rmSync(dir, { recursive: true, force: true });
  const rows = Object.entries(measured).map(([f, m]) => `  ${f}: ${m.pixels} px, max |browser - Pillow| = ${m.maxDiff}${m.exact ? " (exactly equal)" : ""}`);
  if (rows.length) console.log(`WebP, Chromium's decoder vs Pillow:\n${rows.join("\n")}`);
});

/** In the page: decode.js + preprocess.js on the file's bytes: the pixels over white and each tensor. */
async function inBrowser(path) {
  return page.evaluate(
    async ({ b64, configs }) => {
      const { decodeImageFile } = await import("/lib/decode.js");
      const { convertRGBA, prepareInput } = await import("/lib/preprocess.js");
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const decoded = await decodeImageFile(new Blob([bytes], { type: "image/webp" }));
      const toB64 = (u8) => {
        let s = "";
        for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode(...u8.subarray(i, i + 0x8000));
        return btoa(s);
      };
      const rgb = convertRGBA(decoded.rgba, decoded.width, decoded.height, 3);
      const tensors = configs.map((config) => {
        const { tensor, shape, dtype } = prepareInput(decoded.rgba, decoded.width, decoded.height, config);
        return { dtype, shape, data: toB64(new Uint8Array(tensor.buffer, tensor.byteOffset, tensor.byteLength)) };
      });
      return { decoder: decoded.decoder, width: decoded.width, height: decoded.height, pixels: toB64(rgb.data), tensors };
    },
    { b64: readFileSync(path).toString("base64"), configs: CONFIGS },
  );
}

test("Python wrote the WebP cases (lossless and lossy, with and without alpha)", () => {
  if (setupError) throw setupError;
  assert.equal(webps.length, 16);
});

test("WebP in Chromium: the same pixels as Pillow, exactly, and the same input tensors byte for byte", async () => {
  if (setupError) throw setupError;
  const failures = [];
  for (const w of webps) {
    const got = await inBrowser(w.path);
    const name = basename(w.path);
    assert.equal(got.decoder, "browser decoder", name);
    assert.deepEqual([got.width, got.height], [w.pixels.width, w.pixels.height], name);
    const a = Buffer.from(got.pixels, "base64");
    const b = Buffer.from(w.pixels.data, "base64");
    assert.equal(a.length, got.width * got.height * 3, name);
    let maxDiff = 0;
    for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
    measured[name] = { maxDiff, exact: a.equals(b), pixels: got.width * got.height };
    if (!a.equals(b)) failures.push(`${name}: pixels differ by up to ${maxDiff}`);
    got.tensors.forEach((t, k) => {
      const ref = w.tensors[k];
      const same = t.dtype === ref.dtype && JSON.stringify(t.shape) === JSON.stringify(ref.shape) && Buffer.from(t.data, "base64").equals(Buffer.from(ref.data, "base64"));
      if (!same) failures.push(`${name} -> ${CONFIGS[k].input_size} ch${CONFIGS[k].channels} ${CONFIGS[k].input_dtype}: tensor differs`);
    });
  }
  assert.deepEqual(failures, [], `${failures.length} differences`);
});

test("a truncated WebP, or a file that is no image, gets an error that names it", async () => {
  if (setupError) throw setupError;
  const whole = readFileSync(webps[0].path);
  const cases = [
    ["cut.webp", whole.subarray(0, 60)],
    ["notes.webp", Buffer.from("these are notes, not pixels")],
  ];
  for (const [name, bytes] of cases) {
    const message = await page.evaluate(
      async ({ name, b64 }) => {
        const { decodeImageFile } = await import("/lib/decode.js");
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        try {
          await decodeImageFile(new File([bytes], name, { type: "image/webp" }));
          return "decoded";
        } catch (e) {
          return e.message;
        }
      },
      { name, b64: bytes.toString("base64") },
    );
    assert.ok(message.startsWith(`'${name}' (image/webp): this browser cannot decode it`), message);
  }
});
