#!/usr/bin/env node
// Makes app/ a self-contained static site (run by `npm ci` via postinstall, and before `npm test`):
//  - app/vendor/: the runtime files from node_modules (LiteRT.js @litertjs/core + its WASM builds,
//    onnxruntime-web's WASM-only build, the flatbuffers runtime), so the page loads nothing from
//    another origin;
//  - app/models/: the exported model folder (default: ../models = mobile_demo/models, the demo model;
//    `node scripts/prepare.mjs --models DIR` to use your own `kerascnn export` output);
//  - app/precache-manifest.js: the list of files the service worker precaches, and a version hash
//    that changes whenever any of them changes (so an updated app replaces the cached one).
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const APP = join(WEB, "app");
const NM = join(WEB, "node_modules");

function fail(message) {
  console.error(`prepare: ${message}`);
  process.exit(1);
}

const args = process.argv.slice(2);
const modelsArg = args.indexOf("--models");
const MODELS = modelsArg >= 0 ? resolve(args[modelsArg + 1] ?? fail("--models needs a folder")) : join(WEB, "..", "models");

function need(path) {
  if (!existsSync(path)) fail(`${path} is missing: run \`npm ci\` in ${WEB}`);
  return path;
}

function copy(from, to, transform) {
  mkdirSync(dirname(to), { recursive: true });
  if (!transform) return copyFileSync(need(from), to);
  writeFileSync(to, transform(readFileSync(need(from), "utf8")));
}

const stripSourceMap = (text) => text.replace(/\n\/\/# sourceMappingURL=\S+\s*$/, "\n");

// --- vendor: LiteRT.js -----------------------------------------------------------------------
const vendor = join(APP, "vendor");
rmSync(vendor, { recursive: true, force: true });
const litert = join(vendor, "litertjs");
copy(join(NM, "@litertjs/core/dist/index.js"), join(litert, "core.js"), (text) => {
  const bare = 'from "@litertjs/wasm-utils"';
  if (!text.includes(bare)) fail("@litertjs/core no longer imports @litertjs/wasm-utils as expected; update prepare.mjs");
  return stripSourceMap(text.replace(bare, 'from "./wasm-utils.js"'));
});
copy(join(NM, "@litertjs/wasm-utils/dist/index.js"), join(litert, "wasm-utils.js"), (text) => {
  if (/^\s*import\s/m.test(text)) fail("@litertjs/wasm-utils imports other modules now; update prepare.mjs");
  return stripSourceMap(text);
});
// The WASM builds LiteRT.js picks from at run time: relaxed SIMD (most current browsers), the
// compatibility build (no relaxed SIMD, e.g. Safari), and the threaded build (cross-origin isolated).
for (const base of ["litert_wasm_internal", "litert_wasm_compat_internal", "litert_wasm_threaded_internal"]) {
  for (const ext of [".js", ".wasm"]) copy(join(NM, "@litertjs/core/wasm", base + ext), join(litert, "wasm", base + ext));
}

// --- vendor: onnxruntime-web (WASM backend only) ---------------------------------------------
const ort = join(vendor, "ort");
copy(join(NM, "onnxruntime-web/dist/ort.wasm.min.mjs"), join(ort, "ort.wasm.min.mjs"), stripSourceMap);
for (const name of ["ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"]) {
  copy(join(NM, "onnxruntime-web/dist", name), join(ort, name));
}

// --- vendor: flatbuffers (the official runtime; app/lib/flatbuf.js reads TFLite and its Metadata) ---
// Its ES module build, minus flexbuffers: plain modules that import only each other.
const fb = join(vendor, "flatbuffers");
const FB_FILES = ["flatbuffers.js", "builder.js", "byte-buffer.js", "constants.js", "encoding.js", "utils.js"];
for (const name of FB_FILES) {
  copy(join(NM, "flatbuffers/mjs", name), join(fb, name), (text) => {
    for (const [, spec] of text.matchAll(/(?:^|\s)(?:import|export)\s[^;]*?from\s+["']([^"']+)["']/g)) {
      if (!FB_FILES.includes(spec.replace(/^\.\//, ""))) fail(`flatbuffers/mjs/${name} imports ${spec} now; update prepare.mjs`);
    }
    return stripSourceMap(text);
  });
}
copy(join(NM, "flatbuffers/LICENSE"), join(fb, "LICENSE.txt"));

// --- models ----------------------------------------------------------------------------------
const models = join(APP, "models");
rmSync(models, { recursive: true, force: true });
if (!existsSync(join(MODELS, "model.json"))) fail(`${MODELS} has no model.json (a \`kerascnn export\` folder has one)`);
mkdirSync(models, { recursive: true });
const copied = [];
for (const name of readdirSync(MODELS).sort()) {
  if (/^(model\.json|labels\.txt)$|\.(tflite|onnx)$/.test(name) && statSync(join(MODELS, name)).isFile()) {
    copyFileSync(join(MODELS, name), join(models, name));
    copied.push(name);
  }
}
if (!copied.some((n) => /\.(tflite|onnx)$/.test(n))) fail(`${MODELS} has no .tflite or .onnx file`);

// --- precache manifest -----------------------------------------------------------------------
function walk(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
}
const skip = new Set(["sw.js", "precache-manifest.js"]);
const files = walk(APP)
  .map((p) => relative(APP, p).split(sep).join("/"))
  .filter((p) => !skip.has(p) && !p.split("/").some((part) => part.startsWith(".")))
  .sort();
const hash = createHash("sha256");
for (const f of files) hash.update(f).update("\0").update(readFileSync(join(APP, f))).update("\0");
hash.update(readFileSync(join(APP, "sw.js")));
const version = hash.digest("hex").slice(0, 16);
const urls = ["./", ...files];
const bytes = files.reduce((n, f) => n + statSync(join(APP, f)).size, 0);
writeFileSync(
  join(APP, "precache-manifest.js"),
  `// Written by scripts/prepare.mjs: the files the service worker precaches (${(bytes / 1e6).toFixed(1)} MB).\n` +
    `self.PRECACHE = ${JSON.stringify({ version, urls }, null, 1)};\n`,
);
console.log(`prepare: app/vendor (LiteRT.js, onnxruntime-web, flatbuffers), app/models (${copied.join(", ")} from ${relative(WEB, MODELS) || "."}), precache ${urls.length} files, ${(bytes / 1e6).toFixed(1)} MB, version ${version}`);
