// Shared paths and checks for the tests.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const WEB = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const REPO = resolve(WEB, "..", "..");
export const FIXTURES = join(REPO, "mobile_demo", "fixtures");
export const MODELS = join(REPO, "mobile_demo", "models");
export const APP = join(WEB, "app");
export const PYTHON = join(REPO, ".venv", "bin", "python");
export const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

export function manifest() {
  return JSON.parse(readFileSync(join(FIXTURES, "manifest.json"), "utf8"));
}

export function fixtureBytes(rel) {
  const b = readFileSync(join(FIXTURES, rel));
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** Fails loudly (never skips) when something the tests need is missing, saying how to install it. */
export function requireFile(path, howToInstall) {
  if (!existsSync(path)) {
    throw new Error(`${path} is missing. Install it: ${howToInstall}`);
  }
}

/** Runs REPO/.venv/bin/python on a script with JSON on stdin; resolves to the parsed JSON it prints. */
export async function runPython(script, args = [], input = null) {
  const { spawn } = await import("node:child_process");
  requireFile(PYTHON, "create the project's venv (see the repository README), e.g. python -m venv .venv && .venv/bin/pip install -e .");
  return new Promise((resolvePromise, reject) => {
    const child = spawn(PYTHON, [script, ...args], { cwd: REPO, stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) return reject(new Error(`${script} exited ${code}:\n${err}`));
      try {
        resolvePromise(JSON.parse(out));
      } catch (e) {
        reject(new Error(`${script} printed no JSON (${e.message}):\n${out.slice(0, 500)}\n${err}`));
      }
    });
    child.stdin.end(input === null ? "" : JSON.stringify(input));
  });
}
