// The static parts of the PWA (no browser): the web manifest and its icons, the service worker's
// precache list, the vendored runtimes, the TFLite shape patch the page applies before LiteRT.js
// compiles a model, and the static server (headers, content types, no path traversal).
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import vm from "node:vm";

import { decodePng } from "../app/lib/png.js";
import { staticShapes, tfliteIO } from "../app/lib/tflite.js";
import { staticServer } from "../scripts/server.mjs";
import { APP, FIXTURES, MODELS, WEB, requireFile } from "./helpers.mjs";

const bytes = (path) => new Uint8Array(readFileSync(path));

test("web manifest: name, standalone display, start_url, 192 and 512 PNG icons of those sizes", async () => {
  const manifest = JSON.parse(readFileSync(join(APP, "manifest.webmanifest"), "utf8"));
  assert.ok(manifest.name && manifest.short_name);
  assert.equal(manifest.display, "standalone");
  assert.equal(manifest.start_url, "./");
  const sizes = new Set();
  for (const icon of manifest.icons) {
    const png = await decodePng(bytes(join(APP, icon.src)));
    assert.equal(`${png.width}x${png.height}`, icon.sizes, icon.src);
    assert.equal(icon.type, "image/png");
    sizes.add(icon.sizes);
  }
  assert.ok(sizes.has("192x192") && sizes.has("512x512"));
});

test("the service worker precaches the app shell, vendor/ and models/ (precache-manifest.js)", () => {
  requireFile(join(APP, "precache-manifest.js"), "npm ci (or node scripts/prepare.mjs)");
  const sandbox = { self: {} };
  vm.runInNewContext(readFileSync(join(APP, "precache-manifest.js"), "utf8"), sandbox);
  const { version, urls } = sandbox.self.PRECACHE;
  assert.match(version, /^[0-9a-f]{16}$/);
  for (const url of ["./", "index.html", "app.js", "style.css", "manifest.webmanifest", "lib/preprocess.js", "icons/icon-192.png",
    "vendor/litertjs/core.js", "vendor/litertjs/wasm/litert_wasm_internal.wasm", "vendor/litertjs/wasm/litert_wasm_compat_internal.wasm",
    "vendor/ort/ort.wasm.min.mjs", "vendor/ort/ort-wasm-simd-threaded.wasm", "vendor/flatbuffers/flatbuffers.js",
    "vendor/flatbuffers/byte-buffer.js", "lib/flatbuf.js", "lib/zip.js", "lib/tflite.js", "lib/tflite_metadata.js", "lib/metadata.js",
    "models/model.json", "models/labels.txt",
    "models/mobilenet_v2_float32.tflite", "models/mobilenet_v2_int8.tflite", "models/mobilenet_v2.onnx"]) {
    assert.ok(urls.includes(url), `${url} is not precached`);
  }
  assert.ok(!urls.some((u) => /^(https?:)?\/\//.test(u)), "precache list names another origin");
});

test("the page loads no script, style or module from another origin", () => {
  const files = ["index.html", "app.js", "sw.js", ...readdirSync(join(APP, "lib")).map((f) => `lib/${f}`), "vendor/litertjs/core.js", "vendor/litertjs/wasm-utils.js",
    ...readdirSync(join(APP, "vendor", "flatbuffers")).filter((f) => f.endsWith(".js")).map((f) => `vendor/flatbuffers/${f}`)];
  for (const f of files) {
    const text = readFileSync(join(APP, f), "utf8");
    assert.doesNotMatch(text, /(src|href)=["']https?:|import\s*\(?\s*["']https?:|cdn\.jsdelivr|unpkg\.com/, f);
    assert.doesNotMatch(text, /from\s+["'](?![./])[^"']+["']/, `${f} has a bare module import`);
  }
});

test("flatbuffers: the pinned npm package, vendored unchanged (ES modules importing only each other)", () => {
  const pinned = JSON.parse(readFileSync(join(WEB, "package.json"), "utf8")).dependencies.flatbuffers;
  const lock = JSON.parse(readFileSync(join(WEB, "package-lock.json"), "utf8"));
  assert.match(pinned, /^\d+\.\d+\.\d+$/, "flatbuffers must be pinned to an exact version");
  assert.equal(lock.packages[""].dependencies.flatbuffers, pinned);
  assert.equal(lock.packages["node_modules/flatbuffers"].version, pinned);
  const installed = JSON.parse(readFileSync(join(WEB, "node_modules", "flatbuffers", "package.json"), "utf8")).version;
  assert.equal(installed, pinned, "node_modules is out of date: npm ci");
  const vendored = readdirSync(join(APP, "vendor", "flatbuffers")).filter((f) => f.endsWith(".js"));
  assert.ok(vendored.includes("flatbuffers.js") && vendored.includes("byte-buffer.js"));
  for (const f of vendored) {
    const strip = (t) => t.replace(/\n\/\/# sourceMappingURL=\S+\s*$/, "\n");
    assert.equal(readFileSync(join(APP, "vendor", "flatbuffers", f), "utf8"), strip(readFileSync(join(WEB, "node_modules", "flatbuffers", "mjs", f), "utf8")), f);
    for (const [, spec] of readFileSync(join(APP, "vendor", "flatbuffers", f), "utf8").matchAll(/from\s+["']([^"']+)["']/g)) {
      assert.ok(vendored.includes(spec.replace(/^\.\//, "")), `${f} imports ${spec}, which is not vendored`);
    }
  }
});

for (const name of ["mobilenet_v2_float32.tflite", "mobilenet_v2_int8.tflite"]) {
  test(`${name}: a phone file (batch fixed at 1 by kerascnn export) passes the static-shape patch unchanged`, () => {
    const original = bytes(join(MODELS, name));
    const io = tfliteIO(original);
    assert.deepEqual(io.inputs[0].shape, [1, 32, 32, 3]);
    for (const t of [...io.inputs, ...io.outputs]) assert.ok(!t.signature || !t.signature.includes(-1), t.name);
    const { bytes: patched, patched: count } = staticShapes(original);
    assert.equal(count, 0);
    assert.deepEqual(patched, original);
  });
}

test("a free-batch file (export --dynamic-batch, other tools): the static-shape patch fixes the batch to 1 and changes nothing else", () => {
  const path = join(FIXTURES, "tflite", "flatten_dynamic_batch.tflite");
  const original = bytes(path);
  assert.ok(tfliteIO(original).inputs[0].signature.includes(-1));
  const { bytes: patched, patched: count } = staticShapes(original);
  assert.ok(count >= 2);
  const fixed = tfliteIO(patched);
  for (const t of [...fixed.inputs, ...fixed.outputs]) assert.deepEqual(t.signature, t.shape);
  assert.deepEqual(bytes(path), original, "the input bytes were modified");
  let changed = 0;
  for (let i = 0; i < original.length; i++) if (original[i] !== patched[i]) changed++;
  assert.ok(changed <= count * 4, `${changed} bytes changed for ${count} int32 entries`);
});

let server;
let base;
before(async () => {
  server = staticServer(APP);
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${server.address().port}`;
});
after(() => new Promise((resolve) => server.close(resolve)));

test("static server: cross-origin isolation headers, content types, no path traversal", async () => {
  const page = await fetch(`${base}/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-type"), /text\/html/);
  assert.equal(page.headers.get("cross-origin-opener-policy"), "same-origin");
  assert.equal(page.headers.get("cross-origin-embedder-policy"), "require-corp");
  assert.equal((await fetch(`${base}/manifest.webmanifest`)).headers.get("content-type"), "application/manifest+json; charset=utf-8");
  assert.equal((await fetch(`${base}/app.js`)).headers.get("content-type"), "text/javascript; charset=utf-8");
  const wasm = await fetch(`${base}/vendor/litertjs/wasm/litert_wasm_internal.wasm`, { method: "HEAD" });
  assert.equal(wasm.headers.get("content-type"), "application/wasm");
  for (const path of ["/../package.json", "/%2e%2e/package.json", "/..%2fpackage.json"]) {
    const res = await fetch(`${base}${path}`);
    assert.ok([403, 404].includes(res.status), `${path}: ${res.status}`);
    await res.arrayBuffer();
  }
  assert.equal((await fetch(`${base}/nope.txt`)).status, 404);
});
