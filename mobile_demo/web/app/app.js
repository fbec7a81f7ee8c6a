// The page: pick a model from models/model.json (or your own file), take or choose a photo, and see the
// top-3 classes with their scores and the inference time. The preprocessing reproduces
// `kerascnn validate` bit for bit (lib/preprocess.js); the model runs in LiteRT.js or onnxruntime-web.
//
// Metadata (lib/metadata.js): a .tflite's standard TFLite Metadata gives the labels, normalization and
// color space (kerascnn's packed metadata.json, when there, must agree); an .onnx's metadata_props; else
// the listed file's entry in models/model.json.
//
// For tests and curious users the last result is exposed as window.lastResult (and as JSON in
// #result[data-result]); document.body.dataset.state is loading | ready | busy | done | error.
import { decodeImageFile } from "./lib/decode.js";
import { checkMetadata, parseLabels, readOnnxMetadata, sidecarMetadata, tfliteModelMetadata } from "./lib/metadata.js";
import { postprocess } from "./lib/postprocess.js";
import { prepareInput } from "./lib/preprocess.js";
import { capabilities, loadModel } from "./lib/runtimes.js";

const $ = (id) => document.getElementById(id);
const state = {
  sidecar: null,
  labels: null,
  files: [], // [{name, kind, info}]
  own: null, // {name, bytes} of a model file the user opened
  model: null, // {name, kind, meta, metaSource, standard, runner}
  image: null, // {name, rgba, width, height, decoder, url}
  seq: 0,
  loading: Promise.resolve(),
};

function setState(s) {
  document.body.dataset.state = s;
}

function showError(error) {
  console.error(error);
  const box = $("error");
  box.textContent = error?.message ?? String(error);
  box.hidden = false;
  window.lastError = box.textContent;
  setState("error");
}

function clearError() {
  $("error").hidden = true;
  window.lastError = null;
}

const kindOf = (name) => (name.toLowerCase().endsWith(".tflite") ? "tflite" : name.toLowerCase().endsWith(".onnx") ? "onnx" : "other");
const fmtMB = (bytes) => (bytes ? `${(bytes / 1e6).toFixed(1)} MB` : "");

async function fetchBytes(url) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

// --- models ------------------------------------------------------------------------------------

async function loadCatalog() {
  const res = await fetch("models/model.json");
  if (!res.ok) throw new Error("models/model.json is missing: copy a `kerascnn export` folder to app/models (see README)");
  state.sidecar = await res.json();
  const labels = await fetch("models/labels.txt");
  state.labels = labels.ok ? parseLabels(await labels.text()) : null;
  const order = (n) => [/float32\.tflite$/, /\.tflite$/, /int8\.onnx$/, /\.onnx$/].findIndex((re) => re.test(n));
  state.files = Object.entries(state.sidecar.files ?? {})
    .filter(([name]) => kindOf(name) !== "other")
    .map(([name, info]) => ({ name, kind: kindOf(name), info }))
    .sort((a, b) => (order(a.name) < 0 ? 9 : order(a.name)) - (order(b.name) < 0 ? 9 : order(b.name)) || a.name.localeCompare(b.name));
  if (!state.files.length) throw new Error("models/model.json lists no .tflite or .onnx file");
  renderModelOptions();
}

function renderModelOptions(selected) {
  const select = $("model");
  select.replaceChildren(
    ...state.files.map(({ name, kind, info }) => {
      const q = info.metadata?.quantization ?? info.quantization ?? "none";
      const runtime = kind === "tflite" ? "LiteRT.js" : "onnxruntime-web";
      return new Option(`${name} · ${runtime} · ${q === "none" ? "float32" : q} · ${fmtMB(info.bytes)}`, name);
    }),
  );
  if (state.own) select.append(new Option(`${state.own.name} · your file`, `own:${state.own.name}`));
  select.value = selected ?? state.files[0].name;
  select.disabled = false;
}

function settings() {
  return { accelerator: $("accelerator").value, threads: Number($("threads").value) };
}

async function selectModel(value) {
  const run = async () => {
    setState("loading");
    clearError();
    $("model").disabled = true;
    try {
      state.model?.runner?.delete();
      state.model = null;
      const own = value.startsWith("own:");
      const name = own ? state.own.name : value;
      const kind = kindOf(name);
      const bytes = own ? state.own.bytes : await fetchBytes(`models/${encodeURIComponent(name)}`);
      const found = embeddedMetadata(name, kind, bytes) ?? (own ? null : listedMetadata(name));
      if (!found) throw new Error(noMetadataMessage(name, kind));
      let raw = found.raw;
      if (!raw.labels && state.labels && !own) raw = { ...raw, labels: state.labels };
      const meta = checkMetadata(raw, name);
      const opts = settings();
      if (opts.accelerator !== "wasm" && kind !== "tflite") opts.accelerator = "wasm";
      const runner = await loadModel(bytes, kind, opts);
      const [H, W] = meta.input_size;
      // Warm-up run, so the first photo's inference time is not the compile time.
      const n = H * W * meta.channels;
      const zeros = meta.input_dtype === "float32" ? new Float32Array(n) : meta.input_dtype === "int8" ? new Int8Array(n) : new Uint8Array(n);
      await runner.run(zeros, [1, H, W, meta.channels]);
      state.model = { name, kind, meta, metaSource: found.source, standard: found.standard, runner, bytes: bytes.length };
      renderModelInfo();
      if (state.image) await classify(); // the shown photo, with the new model
      else setState("ready");
    } catch (e) {
      showError(e);
    } finally {
      $("model").disabled = false;
    }
  };
  state.loading = state.loading.then(run);
  return state.loading;
}

/** {raw, source, standard} from the model file itself, or null when it carries no metadata. */
function embeddedMetadata(name, kind, bytes) {
  if (kind === "tflite") return tfliteModelMetadata(bytes, name);
  const raw = kind === "onnx" ? readOnnxMetadata(bytes) : null;
  return raw ? { raw, source: "embedded in the file (metadata_props)", standard: null } : null;
}

/** The listed file's entry in models/model.json (a file exported without embedded metadata). */
function listedMetadata(name) {
  const raw = sidecarMetadata(state.sidecar, name);
  return raw ? { raw, source: "models/model.json", standard: null } : null;
}

function noMetadataMessage(name, kind) {
  if (kind === "tflite") {
    return (
      `${name} has no metadata: neither the standard TFLite Metadata (a TFLITE_METADATA entry with the labels file, ` +
      `as kerascnn export, MediaPipe Model Maker and tflite_support write it) nor kerascnn's packed metadata.json. ` +
      `The page needs its labels, normalization and color space: export it with \`kerascnn export\`, or add TFLite Metadata with a metadata writer.`
    );
  }
  return `${name} has no kerascnn metadata (export it with \`kerascnn export\`)`;
}

function renderModelInfo() {
  const { meta, metaSource, standard, runner, bytes } = state.model;
  const [H, W] = meta.input_size;
  const norm = (v) => (v.length === 1 ? String(v[0]) : `[${v.join(", ")}]`);
  const q = meta.input_quantization ? `, then ÷${meta.input_quantization.scale} + ${meta.input_quantization.zero_point}` : "";
  // The name and version the standard TFLite Metadata gives (what MediaPipe and Android Studio show).
  const title = standard
    ? `${standard.name ?? meta.model_name}${standard.version ? ` version ${standard.version}` : ""}${standard.author ? ` by ${standard.author}` : ""}`
    : meta.model_name;
  const color = standard && standard.input.colorSpace !== "UNKNOWN" ? standard.input.colorSpace : meta.channel_order;
  $("model-info").textContent =
    `${title}: ${meta.labels.length} classes, input ${H}×${W}×${meta.channels} ${color} ${meta.input_dtype}, ` +
    `(pixel − ${norm(meta.mean)}) / ${norm(meta.std)}${q}; ${meta.output}; metadata: ${metaSource}; ${fmtMB(bytes)}; ${runner.runtime}.`;
  $("modelview").width = W;
  $("modelview").height = H;
  $("modelview-caption").textContent = `model input ${W}×${H}`;
}

// --- images ------------------------------------------------------------------------------------

async function onImage(file) {
  if (!file) return;
  clearError();
  try {
    setState("busy");
    const decoded = await decodeImageFile(file, { exifRotate: $("exif").checked });
    if (state.image?.url) URL.revokeObjectURL(state.image.url);
    state.image = { name: file.name, ...decoded, url: URL.createObjectURL(file) };
    $("preview").src = state.image.url;
    await state.loading;
    if (!state.model) throw new Error("no model is loaded");
    await classify();
  } catch (e) {
    showError(e);
  }
}

async function classify() {
  const { meta, runner, name, kind } = state.model;
  const image = state.image;
  setState("busy");
  const t0 = performance.now();
  const input = prepareInput(image.rgba, image.width, image.height, meta);
  const t1 = performance.now();
  const raw = await runner.run(input.tensor, input.shape);
  const t2 = performance.now();
  const { scores, top } = postprocess(raw, meta, 3);
  drawModelInput(input.resized);
  const result = {
    seq: ++state.seq,
    model: name,
    kind,
    runtime: runner.runtime,
    image: image.name,
    width: image.width,
    height: image.height,
    decoder: image.decoder,
    inputDtype: input.dtype,
    top1: top[0].index,
    top1Label: top[0].label,
    top3: top,
    scores: Array.from(scores),
    rawOutput: Array.from(raw),
    inferenceMs: t2 - t1,
    preprocessMs: t1 - t0,
  };
  renderResult(result);
  state.lastInput = input; // the model input tensor (the e2e tests compare its bytes with Python's)
  window.lastResult = result;
  $("result").dataset.result = JSON.stringify(result);
  setState("done");
  return result;
}

function drawModelInput(resized) {
  const { width, height, bands, data } = resized;
  const canvas = $("modelview");
  canvas.width = width;
  canvas.height = height;
  const img = new ImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    img.data[i * 4] = data[i * bands];
    img.data[i * 4 + 1] = data[i * bands + (bands === 3 ? 1 : 0)];
    img.data[i * 4 + 2] = data[i * bands + (bands === 3 ? 2 : 0)];
    img.data[i * 4 + 3] = 255;
  }
  canvas.getContext("2d").putImageData(img, 0, 0);
}

function renderResult(r) {
  $("result").hidden = false;
  $("top").replaceChildren(
    ...r.top3.map((t) => {
      const li = document.createElement("li");
      const label = Object.assign(document.createElement("span"), { className: "label", textContent: t.label });
      const score = Object.assign(document.createElement("span"), { className: "score", textContent: `${(t.score * 100).toFixed(1)}%` });
      const meter = Object.assign(document.createElement("span"), { className: "meter" });
      const fill = document.createElement("span");
      fill.style.width = `${Math.max(0, Math.min(1, t.score)) * 100}%`;
      meter.append(fill);
      li.append(label, score, meter);
      li.dataset.index = t.index;
      return li;
    }),
  );
  $("timing").textContent = `Inference ${r.inferenceMs.toFixed(1)} ms · preprocessing ${r.preprocessMs.toFixed(1)} ms`;
  $("details").textContent = `${r.image} (${r.width}×${r.height}, ${r.decoder}) → ${r.model}, ${r.runtime}`;
}

// --- settings, offline -------------------------------------------------------------------------

async function setupCapabilities() {
  try {
    const caps = await capabilities();
    const threads = $("threads");
    if (caps.threads) {
      for (const n of [2, 4, 8].filter((n) => n <= Math.max(2, caps.cores))) threads.append(new Option(String(n), String(n)));
    }
    $("accelerator").querySelector('[value="webgpu"]').disabled = !caps.webgpu;
    $("caps").textContent =
      `WASM relaxed SIMD ${caps.relaxedSimd ? "yes" : "no"}; threads ${caps.threads ? `yes (${caps.cores} cores)` : "no (needs a cross-origin isolated, secure page)"}; ` +
      `WebGPU ${caps.webgpu ? "yes" : "no"}. onnxruntime-web keeps the thread count it started with.`;
    window.capabilities = caps;
  } catch (e) {
    $("caps").textContent = `capability check failed: ${e.message}`;
  }
}

async function setupOffline() {
  if (!("serviceWorker" in navigator)) {
    $("offline").hidden = true;
    return;
  }
  try {
    await navigator.serviceWorker.register("sw.js");
    const reg = await navigator.serviceWorker.ready;
    const mark = () => {
      if (navigator.serviceWorker.controller) {
        $("offline").hidden = false;
        document.body.dataset.offline = "ready";
      }
    };
    mark();
    navigator.serviceWorker.addEventListener("controllerchange", mark);
    window.swScope = reg.scope;
  } catch (e) {
    console.warn("service worker not available:", e);
  }
}

async function main() {
  for (const id of ["file", "camera"]) {
    $(id).addEventListener("change", (e) => {
      const file = e.target.files[0];
      e.target.value = ""; // so that choosing the same photo again classifies it again
      onImage(file);
    });
  }
  $("model").addEventListener("change", (e) => selectModel(e.target.value));
  for (const id of ["accelerator", "threads"]) $(id).addEventListener("change", () => selectModel($("model").value));
  $("modelfile").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    state.own = { name: file.name, bytes: new Uint8Array(await file.arrayBuffer()) };
    renderModelOptions(`own:${file.name}`);
    selectModel(`own:${file.name}`);
  });
  setupOffline();
  await setupCapabilities();
  try {
    await loadCatalog();
  } catch (e) {
    return showError(e);
  }
  await selectModel($("model").value);
}

window.app = { selectModel, classify, state };
main();
