// A small PNG decoder that yields the pixel values Pillow decodes, as RGBA bytes, so that the page's
// preprocessing starts from exactly the bytes `kerascnn validate` starts from. Browsers' own decoders
// are not used for PNGs: a canvas premultiplies alpha (losing the colour of transparent pixels) and may
// apply gAMA/ICC colour management, which Pillow does not.
//
// Supported: every colour type (gray, RGB, palette, gray+alpha, RGBA), bit depths 1/2/4/8/16, Adam7
// interlacing, tRNS. The values are those kerascnn.data.viewable composites over white (preprocess.js
// does that step):
// - 16-bit samples keep their most significant byte: Pillow's "RGB;16B" etc. for RGB/RGBA/LA, and
//   viewable's v >> 8 for 16-bit grayscale (which Pillow opens as "I;16").
// - tRNS becomes the alpha byte. Palette: one alpha per index, 255 past the chunk's end. Gray and RGB
//   colour keys (alpha 0 where a pixel matches) are matched as Pillow's convert("LA"/"RGBA") matches
//   them: the low byte of each key against the 8-bit value (for 2/4-bit gray the scaled value, for
//   16-bit RGB the most significant byte), a 1-bit key as 0 or 255; a 16-bit gray key not at all
//   (viewable reads the "I;16" samples without it). Pillow fails on a gray/RGB key shorter than 2/6
//   bytes and on a palette tRNS of more than 256 entries, so this decoder does too.
// Inflate uses DecompressionStream("deflate") (zlib format), available in browsers and node >= 18.

export class PngError extends Error {}

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];
export const CHANNELS = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 }; // samples per pixel of each colour type
export const ADAM7 = [
  [0, 0, 8, 8],
  [4, 0, 8, 8],
  [0, 4, 4, 8],
  [2, 0, 4, 4],
  [0, 2, 2, 4],
  [1, 0, 2, 2],
  [0, 1, 1, 2],
];

export function isPng(bytes) {
  return bytes.length >= 8 && SIGNATURE.every((b, i) => bytes[i] === b);
}

async function inflate(data) {
  const stream = new Blob([data]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function paeth(a, b, c) {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  if (pa <= pb && pa <= pc) return a;
  if (pb <= pc) return b;
  return c;
}

/** Undo the scanline filters of one (sub)image in place; returns the raw scanlines (without filter bytes). */
function unfilter(data, pos, width, height, bpp, bitsPerPixel) {
  const stride = Math.ceil((width * bitsPerPixel) / 8);
  const out = new Uint8Array(stride * height);
  for (let y = 0; y < height; y++) {
    if (pos >= data.length) throw new PngError("png: image data too short");
    const type = data[pos++];
    const row = y * stride;
    const prev = row - stride;
    for (let x = 0; x < stride; x++) {
      const raw = data[pos + x];
      const a = x >= bpp ? out[row + x - bpp] : 0;
      const b = y > 0 ? out[prev + x] : 0;
      const c = y > 0 && x >= bpp ? out[prev + x - bpp] : 0;
      let v;
      switch (type) {
        case 0: v = raw; break;
        case 1: v = raw + a; break;
        case 2: v = raw + b; break;
        case 3: v = raw + ((a + b) >> 1); break;
        case 4: v = raw + paeth(a, b, c); break;
        default: throw new PngError(`png: bad filter type ${type}`);
      }
      out[row + x] = v & 0xff;
    }
    pos += stride;
  }
  return { rows: out, stride, pos };
}

/**
 * Decode PNG bytes to {width, height, rgba, colorType, bitDepth, interlaced}: rgba holds the colour
 * values Pillow's convert("RGBA") would see (gray replicated to R=G=B, palette looked up) and the alpha
 * of the alpha channel or tRNS chunk (255 where the image has neither).
 */
export async function decodePng(bytes) {
  if (!isPng(bytes)) throw new PngError("not a PNG file");
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 8;
  let header = null;
  let palette = null;
  let trns = null;
  const idat = [];
  while (pos + 8 <= bytes.length) {
    const len = dv.getUint32(pos);
    const type = String.fromCharCode(...bytes.subarray(pos + 4, pos + 8));
    const body = bytes.subarray(pos + 8, pos + 8 + len);
    if (body.length !== len) throw new PngError(`png: truncated ${type} chunk`);
    if (type === "IHDR") {
      header = {
        width: dv.getUint32(pos + 8),
        height: dv.getUint32(pos + 12),
        bitDepth: body[8],
        colorType: body[9],
        interlace: body[12],
      };
    } else if (type === "PLTE") {
      palette = body;
    } else if (type === "tRNS") {
      trns = body;
    } else if (type === "IDAT") {
      idat.push(body);
    } else if (type === "IEND") {
      break;
    }
    pos += 12 + len;
  }
  if (!header) throw new PngError("png: no IHDR");
  const { width, height, bitDepth, colorType, interlace } = header;
  const channels = CHANNELS[colorType];
  if (!channels) throw new PngError(`png: bad colour type ${colorType}`);
  if (![1, 2, 4, 8, 16].includes(bitDepth)) throw new PngError(`png: bad bit depth ${bitDepth}`);
  if (colorType === 3 && !palette) throw new PngError("png: palette image without PLTE");
  if (!idat.length) throw new PngError("png: no IDAT");
  const total = idat.reduce((n, c) => n + c.length, 0);
  const joined = new Uint8Array(total);
  let off = 0;
  for (const c of idat) {
    joined.set(c, off);
    off += c.length;
  }
  const data = await inflate(joined);

  const bitsPerPixel = channels * bitDepth;
  const bpp = Math.max(1, bitsPerPixel >> 3);
  const rgba = new Uint8Array(width * height * 4);
  const maxSample = (1 << Math.min(bitDepth, 8)) - 1;

  // sample(rows, rowStart, x, channel) for this bit depth
  const sample = (rows, rowStart, x, ch) => {
    if (bitDepth === 8) return rows[rowStart + x * channels + ch];
    if (bitDepth === 16) {
      const i = rowStart + (x * channels + ch) * 2;
      return (rows[i] << 8) | rows[i + 1];
    }
    const bit = (x * channels + ch) * bitDepth;
    return (rows[rowStart + (bit >> 3)] >> (8 - bitDepth - (bit & 7))) & maxSample;
  };
  const to8 = (v) => {
    if (bitDepth === 16) return v >> 8;
    if (bitDepth === 8) return v;
    return Math.round((v * 255) / maxSample); // 1/2/4-bit gray: 0..255 in equal steps (x255, x85, x17)
  };
  // tRNS: the palette's alpha table, or the colour key as 8-bit values (null: none; see the header).
  const alpha = new Uint8Array(256).fill(255);
  let key = null;
  if (trns && colorType === 3) {
    if (trns.length > 256) throw new PngError("png: tRNS chunk with more than 256 entries");
    alpha.set(trns);
  } else if (trns && (colorType === 0 || colorType === 2)) {
    if (trns.length < (colorType === 2 ? 6 : 2)) throw new PngError("png: truncated tRNS chunk");
    const raw = (i) => (trns[i * 2] << 8) | trns[i * 2 + 1];
    if (colorType === 2) key = [raw(0) & 0xff, raw(1) & 0xff, raw(2) & 0xff];
    else if (bitDepth === 1) key = raw(0) ? 255 : 0;
    else if (bitDepth !== 16) key = raw(0) & 0xff;
  }
  const put = (rows, rowStart, x, target) => {
    const o = target * 4;
    if (colorType === 3) {
      const idx = sample(rows, rowStart, x, 0);
      if (idx * 3 + 2 < palette.length) {
        rgba[o] = palette[idx * 3];
        rgba[o + 1] = palette[idx * 3 + 1];
        rgba[o + 2] = palette[idx * 3 + 2];
      } // indices past the palette decode as black, like Pillow's zero-filled palette
      rgba[o + 3] = alpha[idx];
      return;
    }
    if (colorType === 0 || colorType === 4) {
      const g = to8(sample(rows, rowStart, x, 0));
      rgba[o] = rgba[o + 1] = rgba[o + 2] = g;
      rgba[o + 3] = colorType === 4 ? to8(sample(rows, rowStart, x, 1)) : g === key ? 0 : 255;
    } else {
      const r = (rgba[o] = to8(sample(rows, rowStart, x, 0)));
      const g = (rgba[o + 1] = to8(sample(rows, rowStart, x, 1)));
      const b = (rgba[o + 2] = to8(sample(rows, rowStart, x, 2)));
      if (colorType === 6) rgba[o + 3] = to8(sample(rows, rowStart, x, 3));
      else rgba[o + 3] = key && r === key[0] && g === key[1] && b === key[2] ? 0 : 255;
    }
  };

  if (interlace === 0) {
    const { rows, stride } = unfilter(data, 0, width, height, bpp, bitsPerPixel);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) put(rows, y * stride, x, y * width + x);
    }
  } else if (interlace === 1) {
    let p = 0;
    for (const [x0, y0, dx, dy] of ADAM7) {
      const w = Math.ceil((width - x0) / dx);
      const h = Math.ceil((height - y0) / dy);
      if (w <= 0 || h <= 0) continue;
      const { rows, stride, pos: next } = unfilter(data, p, w, h, bpp, bitsPerPixel);
      p = next;
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) put(rows, y * stride, x, (y0 + y * dy) * width + x0 + x * dx);
      }
    }
  } else {
    throw new PngError(`png: bad interlace method ${interlace}`);
  }
  return { width, height, rgba, colorType, bitDepth, interlaced: interlace === 1 };
}
