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

// --- building model variants in the tests ------------------------------------------------------

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

export function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * `prefix` followed by an uncompressed (STORED) ZIP archive of `entries` ([[name, bytes or string]]).
 * absolute: local header offsets counted from the start of the file (as Python's zipfile writes when
 * it appends, and so `kerascnn export` and the TFLite MetadataPopulator), else from the archive's start
 * (as `cat model.tflite files.zip` gives).
 */
export function appendStoredZip(prefix, entries, { absolute = true } = {}) {
  const enc = new TextEncoder();
  const base = absolute ? prefix.length : 0;
  const locals = [];
  const centrals = [];
  let offset = 0;
  for (const [name, content] of entries) {
    const n = enc.encode(name);
    const data = typeof content === "string" ? enc.encode(content) : content;
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed
    local.writeUInt16LE(0x21, 12); // date 1980-01-01
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(n.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x21, 14);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(n.length, 28);
    central.writeUInt32LE(base + offset, 42);
    locals.push(local, n, data);
    centrals.push(central, n);
    offset += 30 + n.length + data.length;
  }
  const cd = Buffer.concat(centrals);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(entries.length, 8);
  eocd.writeUInt16LE(entries.length, 10);
  eocd.writeUInt32LE(cd.length, 12);
  eocd.writeUInt32LE(base + offset, 16);
  return new Uint8Array(Buffer.concat([prefix, ...locals, cd, eocd]));
}

/** Every offset at which `needle` (a string) occurs in `bytes`. */
export function findAll(bytes, needle) {
  const n = new TextEncoder().encode(needle);
  const found = [];
  outer: for (let i = 0; i + n.length <= bytes.length; i++) {
    for (let j = 0; j < n.length; j++) if (bytes[i + j] !== n[j]) continue outer;
    found.push(i);
  }
  return found;
}

/** A copy of `bytes` in which the one occurrence of `from` is replaced by `to` (same length). */
export function replaceOnce(bytes, from, to) {
  if (from.length !== to.length) throw new Error("replaceOnce: same length only");
  const at = findAll(bytes, from);
  if (at.length !== 1) throw new Error(`replaceOnce: ${JSON.stringify(from)} occurs ${at.length} times`);
  const copy = bytes.slice();
  copy.set(new TextEncoder().encode(to), at[0]);
  return copy;
}
