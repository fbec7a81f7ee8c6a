// End-to-end: the PWA in Debian's Chromium (headless, phone-sized), driven by playwright-core.
//  - page top-1 and scores == Python's LiteRT interpreter on the same exported .tflite and image
//    (float32 model: every |difference| <= 1e-5; int8 model: exactly equal), and ONNX via
//    onnxruntime-web == Python onnxruntime (|difference| <= 1e-5);
//  - the page takes labels, normalization and color space from the standard TFLite Metadata: a copy of
//    the demo model without kerascnn's metadata.json (as MediaPipe Model Maker writes it) gives the same
//    results and labels; a .tflite without any metadata, or with disagreeing metadata, a clear error;
//  - after the service worker has taken control, the page works again offline (reload + classify);
//  - no request leaves the page's origin;
//  - a screenshot of the phone-sized page with a result: test-results/phone.png.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { after, before, describe, test } from "node:test";

import { parseLabels, zipStart } from "../app/lib/metadata.js";
import { packedFiles } from "../app/lib/zip.js";
import { staticServer } from "../scripts/server.mjs";
import { APP, CHROMIUM, FIXTURES, MODELS, WEB, appendStoredZip, manifest, replaceOnce, requireFile, runPython } from "./helpers.mjs";

// The flags the issue prescribes for Debian's Chromium.
export const CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"];
const PHONE = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 3, isMobile: true, hasTouch: true };
const IMAGES = readdirSync(join(FIXTURES, "images")).filter((f) => f.endsWith(".png")).sort().map((f) => join(FIXTURES, "images", f));
const TFLITE_FLOAT = "mobilenet_v2_float32.tflite";
const TFLITE_INT8 = "mobilenet_v2_int8.tflite";
const ONNX_FLOAT = "mobilenet_v2.onnx";
const ONNX_INT8 = "mobilenet_v2_int8.onnx";
const LABELS = parseLabels(readFileSync(join(MODELS, "labels.txt"), "utf8"));
const STANDARD = manifest().standard_metadata;

let server;
let origin;
let browser;
let context;
let page;
let reference; // reference.py: Python's scores per model and image
let tensors; // pillow_reference.py: Python's input tensor (base64) per image, for the demo model's config
let jpegs; // JPEG and WebP copies of a sample image (browser-decoder path)
let tmp;
const requests = []; // every URL the browser requested (page, workers, service worker)
const served = []; // every request line the server answered
const measured = {}; // model -> {maxAbsDiff, exact}

async function waitReady(name) {
  await page.waitForFunction(
    (n) => document.body.dataset.state === "error" || (["ready", "done"].includes(document.body.dataset.state) && window.app?.state.model?.name === n),
    name,
    { timeout: 60_000 },
  );
  const error = await page.evaluate(() => window.lastError);
  if (error) throw new Error(`page error: ${error}`);
}

async function selectModel(name) {
  const current = await page.evaluate(() => window.app?.state.model?.name);
  if (current !== name) await page.selectOption("#model", name);
  await waitReady(name);
}

async function classify(image) {
  const previous = await page.evaluate(() => window.lastResult?.seq ?? 0);
  await page.setInputFiles("#file", image);
  await page.waitForFunction((p) => (window.lastResult?.seq ?? 0) > p || window.lastError, previous, { timeout: 30_000 });
  const error = await page.evaluate(() => window.lastError);
  if (error) throw new Error(`page error: ${error}`);
  const result = await page.evaluate(() => window.lastResult);
  assert.equal(result.image, basename(image));
  return result;
}

function compare(model, image, page_, python, { exact, tol = 1e-5 }) {
  assert.equal(page_.model, model);
  assert.equal(page_.scores.length, python.scores.length, "number of classes");
  const diffs = page_.scores.map((s, i) => Math.abs(s - python.scores[i]));
  const maxAbsDiff = Math.max(...diffs);
  const m = (measured[model] ??= { maxAbsDiff: 0, exact: true, images: 0 });
  m.maxAbsDiff = Math.max(m.maxAbsDiff, maxAbsDiff);
  m.exact &&= maxAbsDiff === 0;
  m.images++;
  assert.equal(page_.top1, python.top1, `top-1 of ${model} on ${basename(image)}: page ${page_.top1}, Python ${python.top1}`);
  if (exact) assert.deepEqual(page_.scores, python.scores, `${model} on ${basename(image)}: scores must be exactly equal`);
  else assert.ok(maxAbsDiff <= tol, `${model} on ${basename(image)}: max |page - Python| = ${maxAbsDiff} > ${tol}`);
}

// Setup failures (Chromium or node_modules missing, ...) make every test below fail with the message
// saying how to install what is missing: loud failures, never skips or silent cancellations.
let setupError = null;
function setUp() {
  if (setupError) throw setupError;
}

/** The page's last model input tensor has exactly the bytes Python's preprocessing gives. */
async function sameInputTensor(image) {
  const got = await page.evaluate(() => {
    const t = window.app.state.lastInput.tensor;
    return Array.from(new Uint8Array(t.buffer, t.byteOffset, t.byteLength));
  });
  const expected = Buffer.from(tensors[basename(image)].data, "base64");
  assert.ok(Buffer.from(got).equals(expected), `${basename(image)}: the page's input tensor differs from Python's`);
}

before(async () => {
  try {
    await setup();
  } catch (e) {
    setupError = e;
  }
});

async function setup() {
  requireFile(CHROMIUM, "apt-get install -y chromium");
  requireFile(join(WEB, "node_modules", "playwright-core"), `cd ${WEB} && npm ci`);
  requireFile(join(APP, "vendor", "litertjs", "core.js"), `cd ${WEB} && npm ci (or node scripts/prepare.mjs)`);
  requireFile(join(APP, "models", "model.json"), `cd ${WEB} && node scripts/prepare.mjs`);
  const { chromium } = await import("playwright-core");

  // Python's answers (Pillow preprocessing, LiteRT interpreter, onnxruntime) run while the browser starts.
  tmp = mkdtempSync(join(tmpdir(), "kerascnn-web-e2e-"));
  const photo = IMAGES.find((p) => p.includes("photo")) ?? IMAGES[0];
  // Pillow's JPEG encoder: 4:2:0 chroma subsampling (its default) and 4:4:4; Pillow's WebP encoder (lossy).
  jpegs = [
    { path: join(tmp, "photo_420.jpg"), subsampling: 2, quality: 90 },
    { path: join(tmp, "photo_444.jpg"), subsampling: 0, quality: 95 },
    { path: join(tmp, "photo_q80.webp"), webp: true, quality: 80 },
  ];
  const config = { input_size: [32, 32], channels: 3, mean: [127.5], std: [127.5], input_dtype: "float32" };
  const pending = (async () => {
    const written = jpegs.map((j) => (j.webp
      ? { write_webp: j.path, from: photo, size: [183, 141], quality: j.quality }
      : { write_jpeg: j.path, from: photo, size: [183, 141], quality: j.quality, subsampling: j.subsampling }));
    const all = [...IMAGES, ...jpegs.map((j) => j.path)];
    const pre = await runPython(join(WEB, "tools", "pillow_reference.py"), [], [...written, ...all.map((png) => ({ png, config }))]);
    tensors = Object.fromEntries(all.map((p, i) => [basename(p), pre[written.length + i]]));
    return runPython(join(WEB, "tools", "reference.py"), [
      ...[TFLITE_FLOAT, TFLITE_INT8, ONNX_FLOAT, ONNX_INT8].map((m) => join(MODELS, m)),
      "--images",
      ...all,
    ]);
  })();
  pending.catch(() => {}); // awaited below; avoid an unhandled rejection while the browser starts

  server = staticServer(APP, { log: (line) => served.push(line) });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  origin = `http://127.0.0.1:${server.address().port}`;

  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS });
  context = await browser.newContext({ ...PHONE, serviceWorkers: "allow" });
  context.on("request", (r) => requests.push(r.url()));
  page = await context.newPage();
  page.on("request", (r) => requests.push(r.url()));
  page.on("pageerror", (e) => console.error("pageerror:", e.message));
  await page.goto(`${origin}/`);
  reference = await pending;
  await waitReady(TFLITE_FLOAT);
}

after(async () => {
  await browser?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  await new Promise((resolve) => (server ? server.close(resolve) : resolve()));
  if (Object.keys(measured).length) {
    const lines = Object.entries(measured).map(([m, v]) => `  ${m}: ${v.images} images, max |page - Python| = ${v.maxAbsDiff}${v.exact ? " (exactly equal)" : ""}`);
    console.log(`page vs Python:\n${lines.join("\n")}`);
  }
});

describe("phone-sized page in Debian's Chromium", () => {
  test("Chromium runs with the issue's flags, phone viewport, cross-origin isolated", async () => {
    setUp();
    const probeContext = await browser.newContext();
    const probe = await probeContext.newPage();
    await probe.goto("chrome://version");
    const commandLine = await probe.textContent("#command_line");
    await probeContext.close();
    for (const flag of CHROMIUM_FLAGS) assert.ok(commandLine.split(/\s+/).includes(flag), `${flag} not in ${commandLine}`);
    const info = await page.evaluate(() => ({ width: innerWidth, dpr: devicePixelRatio, touch: navigator.maxTouchPoints > 0, isolated: crossOriginIsolated }));
    assert.deepEqual(info, { width: 390, dpr: 3, touch: true, isolated: true });
  });

  for (const [model, exact] of [[TFLITE_FLOAT, false], [TFLITE_INT8, true]]) {
    for (const image of IMAGES) {
      test(`${model} on ${basename(image)}: page == Python LiteRT (${exact ? "exact" : "|diff| <= 1e-5"})`, async () => {
        setUp();
        await selectModel(model);
        const result = await classify(image);
        assert.match(result.runtime, /LiteRT\.js/);
        assert.equal(result.decoder, "PNG (exact, like Pillow)");
        compare(model, image, result, reference[model][basename(image)], { exact });
        if (model === TFLITE_FLOAT) await sameInputTensor(image);
      });
    }
  }

  test("JPEG and WebP photos (browser decoder): the same input tensor and scores as Python", async () => {
    setUp();
    for (const model of [TFLITE_FLOAT, TFLITE_INT8]) {
      await selectModel(model);
      for (const { path } of jpegs) {
        const result = await classify(path);
        assert.equal(result.decoder, "browser decoder");
        if (model === TFLITE_FLOAT) await sameInputTensor(path);
        const label = `${model} (${path.endsWith(".webp") ? "WebP" : "JPEG"})`;
        compare(label, path, { ...result, model: label }, reference[model][basename(path)], { exact: model === TFLITE_INT8 });
      }
    }
  });

  test("LiteRT.js with 2 threads (threaded WASM build) gives the same scores", async () => {
    setUp();
    const caps = await page.evaluate(() => window.capabilities);
    assert.ok(caps?.threads, "threads should be available on this cross-origin isolated localhost page");
    await page.click("#settings summary"); // the settings are in a <details>, as a user would open them
    const threadsOn = (n) => window.app.state.model?.name === n && /2 threads/.test(window.app.state.model.runner.runtime) && ["ready", "done"].includes(document.body.dataset.state);
    const current = await page.evaluate(() => window.app.state.model.name);
    await page.selectOption("#threads", "2");
    await page.waitForFunction(threadsOn, current, { timeout: 60_000 });
    for (const model of [TFLITE_FLOAT, TFLITE_INT8]) {
      if ((await page.evaluate(() => window.app.state.model.name)) !== model) await page.selectOption("#model", model);
      await page.waitForFunction(threadsOn, model, { timeout: 60_000 });
      const image = IMAGES[1];
      const result = await classify(image);
      assert.match(result.runtime, /2 threads/);
      compare(`${model}`, image, result, reference[model][basename(image)], { exact: model === TFLITE_INT8 });
    }
    await page.selectOption("#threads", "1");
    await page.waitForFunction(() => /1 thread$/.test(window.app.state.model?.runner.runtime ?? "") && ["ready", "done"].includes(document.body.dataset.state), null, { timeout: 60_000 });
    await page.click("#settings summary");
  });

  test("a .tflite opened from the device (embedded metadata only) gives the listed model's result", async () => {
    setUp();
    await page.click("#settings summary");
    await page.setInputFiles("#modelfile", join(MODELS, TFLITE_INT8));
    await page.waitForFunction(() => window.app.state.own && ["ready", "done"].includes(document.body.dataset.state) && window.app.state.model?.name === window.app.state.own.name, null, { timeout: 60_000 });
    assert.equal(await page.inputValue("#model"), `own:${TFLITE_INT8}`);
    assert.match(await page.textContent("#model-info"), /metadata: TFLite Metadata \+ kerascnn metadata\.json/);
    const image = IMAGES[0];
    const result = await classify(image);
    compare(TFLITE_INT8, image, result, reference[TFLITE_INT8][basename(image)], { exact: true });
    await page.click("#settings summary");
  });

  test("the exported .tflite: labels, normalization, color space, name and version from the standard TFLite Metadata", async () => {
    setUp();
    for (const model of [TFLITE_FLOAT, TFLITE_INT8]) {
      await selectModel(model);
      const { metaSource, standard, meta } = await page.evaluate(() => {
        const m = window.app.state.model;
        const { files, ...standard } = m.standard;
        return { metaSource: m.metaSource, standard, meta: m.meta };
      });
      assert.equal(metaSource, "TFLite Metadata + kerascnn metadata.json");
      assert.deepEqual(standard.metadata, STANDARD[model].metadata);
      assert.deepEqual(standard.output.labels, LABELS);
      assert.deepEqual(meta.labels, LABELS);
      assert.equal(standard.input.colorSpace, "RGB");
      assert.deepEqual([meta.mean, meta.std, meta.channel_order], [standard.input.mean, standard.input.std, "RGB"]);
      const info = await page.textContent("#model-info");
      const { name, version, author } = STANDARD[model].metadata;
      assert.ok(info.startsWith(`${name} version ${version} by ${author}: 10 classes, input 32×32×3 RGB float32`), info);
    }
  });

  test("a copy without kerascnn's metadata.json (standard metadata only, opened from the device): the same labels and results", async () => {
    setUp();
    await page.click("#settings summary");
    for (const [model, exact] of [[TFLITE_FLOAT, false], [TFLITE_INT8, true]]) {
      // the listed (exported) file
      await selectModel(model);
      const normal = [];
      for (const image of IMAGES) normal.push(await classify(image));
      // the "foreign" copy: the same flatbuffer, a stored zip with labels.txt only (what MediaPipe Model Maker packs)
      const bytes = new Uint8Array(readFileSync(join(MODELS, model)));
      const copy = appendStoredZip(bytes.slice(0, zipStart(bytes)), [["labels.txt", packedFiles(bytes).get("labels.txt")]]);
      const name = `foreign_${model}`;
      await page.setInputFiles("#modelfile", { name, mimeType: "application/octet-stream", buffer: Buffer.from(copy) });
      await page.waitForFunction((n) => window.lastError || (window.app.state.model?.name === n && ["ready", "done"].includes(document.body.dataset.state)), name, { timeout: 60_000 });
      assert.equal(await page.evaluate(() => window.lastError), null);
      const { metaSource, labels } = await page.evaluate(() => ({ metaSource: window.app.state.model.metaSource, labels: window.app.state.model.meta.labels }));
      assert.equal(metaSource, "TFLite Metadata (no kerascnn metadata.json)");
      assert.deepEqual(labels, LABELS);
      assert.match(await page.textContent("#model-info"), new RegExp(`^mobilenet_v2 version ${STANDARD[model].metadata.version} `));
      for (const [i, image] of IMAGES.entries()) {
        const result = await classify(image);
        assert.equal(result.model, name);
        assert.deepEqual(result.scores, normal[i].scores, `${name} on ${basename(image)}: scores differ from the exported file's`);
        assert.deepEqual(result.top3, normal[i].top3, `${name} on ${basename(image)}: top-3 (labels) differ`);
        const shown = await page.$$eval("#top li .label", (els) => els.map((e) => e.textContent));
        assert.deepEqual(shown, result.top3.map((t) => LABELS[t.index]));
        compare(model, image, { ...result, model }, reference[model][basename(image)], { exact });
      }
    }
    await page.click("#settings summary");
  });

  test("a .tflite with no metadata, or whose two metadata disagree: a clear message on the page", async () => {
    setUp();
    await page.click("#settings summary");
    const bytes = new Uint8Array(readFileSync(join(MODELS, TFLITE_INT8)));
    const flat = bytes.slice(0, zipStart(bytes));
    const files = packedFiles(bytes);
    const json = JSON.parse(new TextDecoder().decode(files.get("metadata.json")));
    const cases = [
      // neither the standard metadata (TFLITE_METADATA renamed) nor metadata.json (no archive)
      ["bare.tflite", replaceOnce(flat, "TFLITE_METADATA", "XFLITE_METADATA"), /^bare\.tflite has no metadata: neither the standard TFLite Metadata \(a TFLITE_METADATA entry/],
      ["labels_differ.tflite", appendStoredZip(flat, [["labels.txt", files.get("labels.txt")], ["metadata.json", JSON.stringify({ ...json, labels: json.labels.toReversed() })]]),
        /^labels_differ\.tflite: the standard TFLite Metadata and the packed metadata\.json disagree on labels: TFLite Metadata label 0 = "T-shirt\/top", metadata\.json label 0 = "Ankle boot"/],
      ["mean_differs.tflite", appendStoredZip(flat, [["labels.txt", files.get("labels.txt")], ["metadata.json", JSON.stringify({ ...json, mean: [0] })]]),
        /^mean_differs\.tflite: the standard TFLite Metadata and the packed metadata\.json disagree on normalization mean: TFLite Metadata \[127\.5\], metadata\.json \[0\]/],
    ];
    for (const [name, data, message] of cases) {
      await page.setInputFiles("#modelfile", { name, mimeType: "application/octet-stream", buffer: Buffer.from(data) });
      // (the page is still in the previous case's error state: wait for this file's error)
      await page.waitForFunction((n) => document.body.dataset.state === "error" && window.lastError?.startsWith(n), name, { timeout: 60_000 });
      assert.equal(await page.isVisible("#error"), true);
      assert.match(await page.textContent("#error"), message);
      assert.equal(await page.evaluate(() => window.app.state.model), null);
    }
    await page.click("#settings summary");
    await selectModel(TFLITE_FLOAT); // the page recovers with a listed model
  });

  // The int8 ONNX runs QLinear kernels whose requantization rounds differently in onnxruntime-web's
  // WASM build and in MLAS on x86: the same top-1, scores within 16 output steps (1/256 each).
  const ONNX_TOL = { [ONNX_FLOAT]: 1e-5, [ONNX_INT8]: 16 / 256 };
  for (const model of [ONNX_FLOAT, ONNX_INT8]) {
    test(`${model} via onnxruntime-web == Python onnxruntime (same top-1, |diff| <= ${ONNX_TOL[model]})`, async () => {
      setUp();
      await selectModel(model);
      for (const image of IMAGES) {
        const result = await classify(image);
        assert.match(result.runtime, /onnxruntime-web/);
        compare(model, image, result, reference[model][basename(image)], { exact: false, tol: ONNX_TOL[model] });
      }
    });
  }

  test("screenshot of the phone-sized page with a result", async () => {
    setUp();
    await selectModel(TFLITE_FLOAT);
    const result = await classify(IMAGES.find((p) => p.includes("photo")) ?? IMAGES[0]);
    const shown = await page.textContent("#top li:first-child .label");
    assert.equal(shown, result.top1Label);
    assert.match(await page.textContent("#timing"), /Inference \d+\.\d ms/);
    mkdirSync(join(WEB, "test-results"), { recursive: true });
    const path = join(WEB, "test-results", "phone.png");
    await page.screenshot({ path, fullPage: true });
    assert.ok(existsSync(path));
  });

  test("works offline after the first load (service worker, cache-first)", async () => {
    setUp();
    await page.waitForFunction(() => navigator.serviceWorker.controller && document.body.dataset.offline === "ready", null, { timeout: 60_000 });
    const precached = await page.evaluate(async () => {
      const keys = await caches.keys();
      const cache = await caches.open(keys.find((k) => k.startsWith("kerascnn-web-")));
      return (await cache.keys()).map((r) => new URL(r.url).pathname);
    });
    for (const path of ["/", "/index.html", "/app.js", "/manifest.webmanifest", "/icons/icon-512.png", "/vendor/litertjs/core.js", "/vendor/ort/ort-wasm-simd-threaded.wasm", "/models/mobilenet_v2_int8.tflite"]) {
      assert.ok(precached.includes(path), `${path} not precached`);
    }
    const image = IMAGES[2];
    await selectModel(TFLITE_INT8);
    const online = await classify(image);
    const before = served.length;
    await context.setOffline(true);
    try {
      const response = await page.reload();
      assert.ok(response.fromServiceWorker(), "the reloaded page should come from the service worker");
      await waitReady(TFLITE_FLOAT);
      await selectModel(TFLITE_INT8);
      const offline = await classify(image);
      assert.deepEqual(offline.scores, online.scores);
      assert.equal(offline.top1, online.top1);
      assert.equal(served.length, before, `the server was asked while offline: ${served.slice(before).join(", ")}`);
    } finally {
      await context.setOffline(false);
    }
  });

  test("no request left the page's origin", () => {
    setUp();
    assert.ok(requests.length > 10, `${requests.length} requests recorded`);
    // The recording sees the service worker's requests too: the compatibility WASM build is fetched
    // only by its precaching (this Chromium has relaxed SIMD, so the page itself never loads it).
    assert.ok(requests.includes(`${origin}/vendor/litertjs/wasm/litert_wasm_compat_internal.wasm`), "service worker requests were not recorded");
    const external = requests.filter((url) => !url.startsWith(`${origin}/`) && !/^(data|blob):/.test(url));
    assert.deepEqual(external, []);
  });
});
