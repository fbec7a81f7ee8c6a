// A tiny static file server for app/ (used by `npm run serve` and by the end-to-end tests).
// It sends the cross-origin isolation headers (COOP/COEP) so that, on a secure origin (https or
// localhost), the page may use SharedArrayBuffer and the threaded WASM builds.
import { createReadStream, statSync } from "node:fs";
import { createServer } from "node:http";
import { extname, join, normalize, resolve, sep } from "node:path";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".webmanifest": "application/manifest+json; charset=utf-8",
  ".wasm": "application/wasm",
  ".png": "image/png",
  ".svg": "image/svg+xml",
  ".txt": "text/plain; charset=utf-8",
  ".tflite": "application/octet-stream",
  ".onnx": "application/octet-stream",
};

export const HEADERS = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
  "Cross-Origin-Resource-Policy": "same-origin",
  "X-Content-Type-Options": "nosniff",
  "Cache-Control": "no-cache",
};

/** An http.Server serving `root`; `log(line)` is called once per request when given. */
export function staticServer(root, { log } = {}) {
  const base = resolve(root);
  return createServer((req, res) => {
    const done = (status, headers = {}) => {
      log?.(`${status} ${req.method} ${req.url}`);
      res.writeHead(status, { ...HEADERS, ...headers });
    };
    if (req.method !== "GET" && req.method !== "HEAD") {
      done(405, { Allow: "GET, HEAD" });
      return res.end();
    }
    let path;
    try {
      path = decodeURIComponent(new URL(req.url, "http://x").pathname);
    } catch {
      done(400);
      return res.end();
    }
    let file = normalize(join(base, path));
    if (file !== base && !file.startsWith(base + sep)) {
      done(403);
      return res.end();
    }
    let stat;
    try {
      stat = statSync(file);
      if (stat.isDirectory()) {
        file = join(file, "index.html");
        stat = statSync(file);
      }
    } catch {
      done(404, { "Content-Type": "text/plain; charset=utf-8" });
      return res.end("not found\n");
    }
    done(200, {
      "Content-Type": TYPES[extname(file).toLowerCase()] ?? "application/octet-stream",
      "Content-Length": stat.size,
      ...(file.endsWith("sw.js") ? { "Service-Worker-Allowed": "/" } : {}),
    });
    if (req.method === "HEAD") return res.end();
    createReadStream(file).pipe(res);
  });
}
