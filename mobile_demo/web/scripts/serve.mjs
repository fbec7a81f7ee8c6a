#!/usr/bin/env node
// `npm run serve [-- --port 8080 --host 0.0.0.0]`: serves app/ and prints the URLs to open.
// A phone on the same network can open the LAN address; note that browsers allow service workers
// (offline use) and threads only on secure origins: https, or http://localhost (e.g. via
// `adb reverse tcp:8080 tcp:8080` on Android). See README.md.
import { existsSync } from "node:fs";
import { networkInterfaces } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { staticServer } from "./server.mjs";

const APP = join(resolve(dirname(fileURLToPath(import.meta.url)), ".."), "app");
const args = process.argv.slice(2);
const opt = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
const port = Number(opt("--port", process.env.PORT ?? 8080));
const host = opt("--host", "0.0.0.0");

if (!existsSync(join(APP, "vendor")) || !existsSync(join(APP, "models"))) {
  console.error("app/vendor or app/models is missing: run `npm ci` (or `node scripts/prepare.mjs`) first");
  process.exit(1);
}

const server = staticServer(APP, { log: args.includes("--quiet") ? undefined : (line) => console.log(line) });
server.listen(port, host, () => {
  const { port: actual } = server.address();
  console.log(`Serving ${APP}`);
  console.log(`  http://localhost:${actual}/`);
  if (host === "0.0.0.0" || host === "::") {
    for (const addrs of Object.values(networkInterfaces())) {
      for (const a of addrs ?? []) if (a.family === "IPv4" && !a.internal) console.log(`  http://${a.address}:${actual}/  (same network)`);
    }
  }
  console.log("Ctrl+C to stop.");
});
