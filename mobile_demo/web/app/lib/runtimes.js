// The two in-browser runtimes behind one interface (browser only):
//   .tflite -> LiteRT.js (@litertjs/core), CPU via its WASM build (XNNPACK), WebGPU when available;
//   .onnx   -> onnxruntime-web, WASM backend.
// Both are loaded from ./vendor/ on this origin (copied there by scripts/prepare.mjs), never from a CDN.

import { staticShapes, tfliteIO } from "./tflite.js";

const VENDOR = new URL("../vendor/", import.meta.url);
const LITERT = new URL("litertjs/core.js", VENDOR).href;
const LITERT_WASM = new URL("litertjs/wasm/", VENDOR).href;
const ORT = new URL("ort/ort.wasm.min.mjs", VENDOR).href;
const ORT_WASM = new URL("ort/", VENDOR).href;

let loadedLiteRt = null; // {threads} of the loaded WASM build

/** What this browser offers: relaxed SIMD, WASM threads (needs cross-origin isolation), WebGPU. */
export async function capabilities() {
  const lib = await import(LITERT);
  const relaxedSimd = await lib.supportsFeature("relaxedSimd");
  const threads = globalThis.crossOriginIsolated === true && relaxedSimd && (await lib.supportsFeature("threads"));
  let webgpu = false;
  if (lib.isWebGPUSupported()) {
    try {
      webgpu = !!(await navigator.gpu.requestAdapter());
    } catch {
      webgpu = false;
    }
  }
  return { relaxedSimd, threads, webgpu, cores: navigator.hardwareConcurrency || 1 };
}

async function liteRt(threaded) {
  const lib = await import(LITERT);
  if (loadedLiteRt && loadedLiteRt.threads === threaded) return lib;
  if (loadedLiteRt) lib.unloadLiteRt();
  loadedLiteRt = null;
  await lib.loadLiteRt(LITERT_WASM, threaded ? { threads: true } : {});
  loadedLiteRt = { threads: threaded };
  return lib;
}

const LITERT_DTYPES = new Set(["float32", "uint8", "int32"]);

async function loadTflite(bytes, { threads = 1, accelerator = "wasm" } = {}) {
  const io = tfliteIO(bytes);
  const unsupported = [...io.inputs, ...io.outputs].find((t) => !LITERT_DTYPES.has(t.type));
  if (unsupported) {
    throw new Error(`LiteRT.js (2.5) cannot run a model with ${unsupported.type} input/output tensors (it supports ${[...LITERT_DTYPES].join(", ")}): export it with --io-type float32 or uint8, or use the .onnx`);
  }
  const threaded = threads > 1;
  const lib = await liteRt(threaded);
  // LiteRT.js needs static shapes: run the batch-1 shapes the Python interpreter runs (see tflite.js).
  const { bytes: staticBytes } = staticShapes(bytes);
  const model = await lib.loadAndCompile(staticBytes, {
    accelerator,
    cpuOptions: { numThreads: threads },
  });
  const input = model.getInputDetails()[0];
  const output = model.getOutputDetails()[0];
  return {
    runtime: `LiteRT.js, ${accelerator === "wasm" ? "CPU (WASM, XNNPACK)" : accelerator}${accelerator === "wasm" ? `, ${threads} thread${threads > 1 ? "s" : ""}` : ""}`,
    input: { dtype: input.dtype, shape: Array.from(input.shape) },
    output: { dtype: output.dtype, shape: Array.from(output.shape) },
    async run(data, shape) {
      const tensor = new lib.Tensor(data, shape);
      try {
        const outputs = await model.run([tensor]);
        try {
          return (await outputs[0].data()).slice();
        } finally {
          for (const t of outputs) t.delete();
        }
      } finally {
        tensor.delete();
      }
    },
    delete: () => model.delete(),
  };
}

let ortThreads = null;

async function loadOnnx(bytes, { threads = 1 } = {}) {
  const ort = await import(ORT);
  if (ortThreads === null) {
    // onnxruntime-web reads these once, when it initializes its WASM module.
    ort.env.wasm.wasmPaths = ORT_WASM;
    ort.env.wasm.numThreads = globalThis.crossOriginIsolated ? threads : 1;
    ort.env.wasm.proxy = false;
    ortThreads = ort.env.wasm.numThreads;
  }
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  const inputName = session.inputNames[0];
  const outputName = session.outputNames[0];
  const meta = session.inputMetadata?.[0];
  return {
    runtime: `onnxruntime-web ${ort.env.versions?.web ?? ""}, CPU (WASM), ${ortThreads} thread${ortThreads > 1 ? "s" : ""}`.replace("  ", " "),
    input: { dtype: meta?.type ?? "?", shape: meta?.shape ?? [] },
    output: { dtype: "?", shape: [] },
    async run(data, shape) {
      const dtype = data instanceof Float32Array ? "float32" : data instanceof Int8Array ? "int8" : "uint8";
      const out = await session.run({ [inputName]: new ort.Tensor(dtype, data, shape) });
      return out[outputName].data.slice();
    },
    delete: () => session.release(),
  };
}

/** Load a model from its bytes; kind is "tflite" or "onnx". */
export function loadModel(bytes, kind, options) {
  if (kind === "tflite") return loadTflite(bytes, options);
  if (kind === "onnx") return loadOnnx(bytes, options);
  throw new Error(`cannot run a .${kind} file in the browser (use .tflite or .onnx)`);
}
