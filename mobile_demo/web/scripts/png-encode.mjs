// A small PNG encoder (node): any colour type, bit depth 1-16, optional Adam7 interlacing, and every
// scanline filter type, so the tests can exercise the page's PNG decoder; also draws the app icons.
import { deflateSync } from "node:zlib";

import { ADAM7, CHANNELS } from "../app/lib/png.js";

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, body) {
  const out = Buffer.alloc(12 + body.length);
  out.writeUInt32BE(body.length, 0);
  out.write(type, 4, "latin1");
  Buffer.from(body).copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + body.length)), 8 + body.length);
  return out;
}

function paeth(a, b, c) {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/** Scanlines of a (sub)image, each filtered with type (row + filterOffset) % 5 (or `filter` if given). */
function scanlines(width, height, channels, bitDepth, sample, xy, filter, filterOffset) {
  const bitsPerPixel = channels * bitDepth;
  const stride = Math.ceil((width * bitsPerPixel) / 8);
  const bpp = Math.max(1, bitsPerPixel >> 3);
  const rows = [];
  let prev = new Uint8Array(stride);
  for (let y = 0; y < height; y++) {
    const raw = new Uint8Array(stride);
    for (let x = 0; x < width; x++) {
      const [sx, sy] = xy(x, y);
      const values = sample(sx, sy);
      for (let c = 0; c < channels; c++) {
        const v = values[c];
        if (bitDepth === 16) {
          const i = (x * channels + c) * 2;
          raw[i] = v >> 8;
          raw[i + 1] = v & 0xff;
        } else if (bitDepth === 8) {
          raw[x * channels + c] = v;
        } else {
          const bit = (x * channels + c) * bitDepth;
          raw[bit >> 3] |= v << (8 - bitDepth - (bit & 7));
        }
      }
    }
    const type = filter ?? (y + filterOffset) % 5;
    const out = new Uint8Array(stride + 1);
    out[0] = type;
    for (let i = 0; i < stride; i++) {
      const a = i >= bpp ? raw[i - bpp] : 0;
      const b = prev[i];
      const c = i >= bpp ? prev[i - bpp] : 0;
      const pred = [0, a, b, (a + b) >> 1, paeth(a, b, c)][type];
      out[i + 1] = (raw[i] - pred) & 0xff;
    }
    rows.push(out);
    prev = raw;
  }
  return rows;
}

/**
 * PNG bytes. `sample(x, y)` returns the channel values (palette index for colour type 3) at the
 * image's bit depth. Options: palette (flat RGB bytes), trns (bytes), interlace, filter.
 */
export function encodePng({ width, height, colorType = 6, bitDepth = 8, sample, palette, trns, interlace = false, filter }) {
  const channels = CHANNELS[colorType];
  const parts = [];
  if (!interlace) {
    parts.push(...scanlines(width, height, channels, bitDepth, sample, (x, y) => [x, y], filter, 0));
  } else {
    ADAM7.forEach(([x0, y0, dx, dy], pass) => {
      const w = Math.ceil((width - x0) / dx);
      const h = Math.ceil((height - y0) / dy);
      if (w <= 0 || h <= 0) return;
      parts.push(...scanlines(w, h, channels, bitDepth, sample, (x, y) => [x0 + x * dx, y0 + y * dy], filter, pass));
    });
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = bitDepth;
  header[9] = colorType;
  header[12] = interlace ? 1 : 0;
  const chunks = [chunk("IHDR", header)];
  if (palette) chunks.push(chunk("PLTE", palette));
  if (trns) chunks.push(chunk("tRNS", trns));
  chunks.push(chunk("IDAT", deflateSync(Buffer.concat(parts.map((p) => Buffer.from(p))))));
  chunks.push(chunk("IEND", new Uint8Array(0)));
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), ...chunks]);
}
