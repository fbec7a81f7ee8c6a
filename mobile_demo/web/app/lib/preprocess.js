// The preprocessing of `kerascnn validate`, bit for bit (kerascnn/data/decode.py::decode_image, then
// export/runtime.py::Predictor.prepare):
//   viewable(): composite over white  ->  Pillow convert("L" | "RGB")  ->  Pillow resize((W, H),
//   BILINEAR)  ->  (float32(p) - mean) / std in float32  ->  for int8/uint8 inputs:
//   clip(round_half_even(x / scale) + zero_point).
// Input pixels are RGBA bytes, not premultiplied (canvas ImageData order, or the PNG decoder in png.js);
// transparent pixels show the white behind them, as in an image viewer.

/**
 * One colour value c over opaque white with alpha a: Pillow's Image.alpha_composite(white, src) in its
 * integer arithmetic (equal to Pillow for all 65536 (c, a) pairs; a = 255 gives c back).
 */
export function overWhite(c, a) {
  const t = (c * a + 255 * (255 - a)) * 128 + 16384;
  return (((t >> 8) + t) >> 8) >> 7;
}

/**
 * viewable()'s composite over white, then Pillow's ImagingConvert to "L" or "RGB", from RGBA bytes.
 * Returns {width, height, bands, data}: bands = 1 (L, one byte per pixel) or 3 (RGB, 3 bytes per pixel).
 * RGB->L is Pillow's L24 fixed-point formula: (R*19595 + G*38470 + B*7471 + 0x8000) >> 16.
 */
export function convertRGBA(rgba, width, height, channels) {
  const n = width * height;
  if (rgba.length < n * 4) throw new RangeError(`expected ${n * 4} RGBA bytes, got ${rgba.length}`);
  if (channels === 1) {
    const out = new Uint8Array(n);
    for (let i = 0, p = 0; i < n; i++, p += 4) {
      const a = rgba[p + 3];
      const r = overWhite(rgba[p], a);
      const g = overWhite(rgba[p + 1], a);
      const b = overWhite(rgba[p + 2], a);
      out[i] = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >>> 16;
    }
    return { width, height, bands: 1, data: out };
  }
  if (channels !== 3) throw new RangeError(`channels must be 1 or 3, got ${channels}`);
  const out = new Uint8Array(n * 3);
  for (let i = 0, p = 0, q = 0; i < n; i++, p += 4, q += 3) {
    const a = rgba[p + 3];
    out[q] = overWhite(rgba[p], a);
    out[q + 1] = overWhite(rgba[p + 1], a);
    out[q + 2] = overWhite(rgba[p + 2], a);
  }
  return { width, height, bands: 3, data: out };
}

/** Android Bitmap.getPixels ints (0xAARRGGBB; a Uint32Array or the little-endian bytes) -> RGBA bytes. */
export function argbToRGBA(argb) {
  const ints = argb instanceof Uint32Array ? argb : new Uint32Array(argb.buffer.slice(argb.byteOffset, argb.byteOffset + argb.byteLength));
  const out = new Uint8Array(ints.length * 4);
  for (let i = 0; i < ints.length; i++) {
    const v = ints[i];
    out[i * 4] = (v >>> 16) & 0xff;
    out[i * 4 + 1] = (v >>> 8) & 0xff;
    out[i * 4 + 2] = v & 0xff;
    out[i * 4 + 3] = v >>> 24;
  }
  return out;
}

// ---- Pillow's ImagingResample (src/libImaging/Resample.c), 8 bits per channel --------------------

const PRECISION_BITS = 32 - 8 - 2;

function bilinearFilter(x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

export const FILTERS = {
  bilinear: { filter: bilinearFilter, support: 1.0 },
  box: { filter: (x) => (x > -0.5 && x <= 0.5 ? 1.0 : 0.0), support: 0.5 },
};

/** precompute_coeffs: per output pixel, the first input index, the count, and double coefficients. */
export function precomputeCoeffs(inSize, in0, in1, outSize, filterp = FILTERS.bilinear) {
  // (double)(in1 - in0) / outSize, with in0/in1 C floats (box coordinates).
  const scale = Math.fround(Math.fround(in1) - Math.fround(in0)) / outSize;
  const filterscale = scale < 1.0 ? 1.0 : scale;
  const support = filterp.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const kk = new Float64Array(outSize * ksize);
  const bounds = new Int32Array(outSize * 2);
  for (let xx = 0; xx < outSize; xx++) {
    const center = Math.fround(in0) + (xx + 0.5) * scale;
    let ww = 0.0;
    const ss = 1.0 / filterscale;
    let xmin = Math.trunc(center - support + 0.5); // C (int) cast truncates toward zero
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    const base = xx * ksize;
    for (let x = 0; x < xmax; x++) {
      const w = filterp.filter((x + xmin - center + 0.5) * ss);
      kk[base + x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      if (ww !== 0.0) kk[base + x] /= ww;
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

/** normalize_coeffs_8bpc: doubles -> fixed point with PRECISION_BITS fractional bits (C truncation). */
function normalizeCoeffs8bpc(kk) {
  const out = new Int32Array(kk.length);
  const one = 1 << PRECISION_BITS;
  for (let i = 0; i < kk.length; i++) {
    out[i] = kk[i] < 0 ? Math.trunc(-0.5 + kk[i] * one) : Math.trunc(0.5 + kk[i] * one);
  }
  return out;
}

function clip8(ss) {
  const v = ss >> PRECISION_BITS; // the C code indexes a -640..639 lookup table with this
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

function resampleHorizontal(src, outWidth, rows, offset, coeffs) {
  const { bands, width: inWidth } = src;
  const { ksize, bounds } = coeffs;
  const k = normalizeCoeffs8bpc(coeffs.kk);
  const out = new Uint8Array(outWidth * rows * bands);
  const half = 1 << (PRECISION_BITS - 1);
  for (let yy = 0; yy < rows; yy++) {
    const rowIn = (yy + offset) * inWidth * bands;
    const rowOut = yy * outWidth * bands;
    for (let xx = 0; xx < outWidth; xx++) {
      const xmin = bounds[xx * 2];
      const xmax = bounds[xx * 2 + 1];
      const kb = xx * ksize;
      for (let b = 0; b < bands; b++) {
        let ss = half;
        for (let x = 0; x < xmax; x++) {
          ss = (ss + src.data[rowIn + (x + xmin) * bands + b] * k[kb + x]) | 0;
        }
        out[rowOut + xx * bands + b] = clip8(ss);
      }
    }
  }
  return { width: outWidth, height: rows, bands, data: out };
}

function resampleVertical(src, outHeight, coeffs) {
  const { bands, width } = src;
  const { ksize, bounds } = coeffs;
  const k = normalizeCoeffs8bpc(coeffs.kk);
  const out = new Uint8Array(width * outHeight * bands);
  const half = 1 << (PRECISION_BITS - 1);
  const stride = width * bands;
  for (let yy = 0; yy < outHeight; yy++) {
    const ymin = bounds[yy * 2];
    const ymax = bounds[yy * 2 + 1];
    const kb = yy * ksize;
    for (let xx = 0; xx < width; xx++) {
      for (let b = 0; b < bands; b++) {
        let ss = half;
        for (let y = 0; y < ymax; y++) {
          ss = (ss + src.data[(y + ymin) * stride + xx * bands + b] * k[kb + y]) | 0;
        }
        out[yy * stride + xx * bands + b] = clip8(ss);
      }
    }
  }
  return { width, height: outHeight, bands, data: out };
}

/**
 * Pillow's Image.resize((outWidth, outHeight), BILINEAR) of an image {width, height, bands, data}
 * (ImagingResampleInner with box (0, 0, width, height)): two separable passes, each skipped when its
 * size does not change.
 *
 * Pass order. Pillow 13 does not always run the horizontal pass first: measured against Pillow 13.0
 * (thousands of random sizes, every boundary case exact), it runs the vertical pass first exactly when
 * the height shrinks and it shrinks by more than twice what the width shrinks:
 *     outHeight < height  &&  height - outHeight > 2 * (width - outWidth)
 * The order matters: each pass rounds to 8 bits, so the two orders differ by 1 in some pixels.
 * In horizontal-first order only the input rows the vertical pass reads are resampled (ybox), as in C.
 */
export function resize(img, outWidth, outHeight, filter = FILTERS.bilinear) {
  if (img.width === outWidth && img.height === outHeight) {
    return { ...img, data: img.data.slice() };
  }
  const { width, height } = img;
  const needHorizontal = outWidth !== width;
  const needVertical = outHeight !== height;
  const vert = precomputeCoeffs(height, 0, height, outHeight, filter);
  const horiz = needHorizontal ? precomputeCoeffs(width, 0, width, outWidth, filter) : null;
  if (needHorizontal && needVertical && verticalFirst(width, height, outWidth, outHeight)) {
    const tmp = resampleVertical(img, outHeight, vert);
    return resampleHorizontal(tmp, outWidth, outHeight, 0, horiz);
  }
  let current = img;
  if (needHorizontal) {
    const yboxFirst = vert.bounds[0];
    const yboxLast = vert.bounds[outHeight * 2 - 2] + vert.bounds[outHeight * 2 - 1];
    for (let i = 0; i < outHeight; i++) vert.bounds[i * 2] -= yboxFirst;
    current = resampleHorizontal(img, outWidth, yboxLast - yboxFirst, yboxFirst, horiz);
  }
  if (needVertical) current = resampleVertical(current, outHeight, vert);
  return current;
}

/** Whether Pillow 13 runs the vertical pass before the horizontal one (see resize). */
export function verticalFirst(width, height, outWidth, outHeight) {
  return outHeight < height && height - outHeight > 2 * (width - outWidth);
}

// ---- normalization and quantization (float32 arithmetic, like numpy on float32 arrays) -----------

const RANGES = { int8: [-128, 127], uint8: [0, 255] };

/** numpy's np.round: round half to even. */
export function roundHalfEven(x) {
  const r = Math.round(x); // rounds .5 up (toward +inf)
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** (float32(pixel) - float32(mean[c])) / float32(std[c]), each step rounded to float32. NHWC order. */
export function normalize(pixels, bands, mean, std) {
  const out = new Float32Array(pixels.length);
  const m = Array.from({ length: bands }, (_, c) => Math.fround(mean.length === 1 ? mean[0] : mean[c]));
  const s = Array.from({ length: bands }, (_, c) => Math.fround(std.length === 1 ? std[0] : std[c]));
  for (let i = 0; i < pixels.length; i++) {
    const c = i % bands;
    out[i] = Math.fround(Math.fround(pixels[i] - m[c]) / s[c]);
  }
  return out;
}

/** runtime.quantize: clip(np.round(x / float32(scale)) + zero_point) as int8/uint8. */
export function quantize(x, params, dtype) {
  const [lo, hi] = RANGES[dtype] ?? (() => { throw new RangeError(`cannot quantize to ${dtype}`); })();
  const scale = Math.fround(params.scale);
  const zero = Math.trunc(params.zero_point);
  const out = dtype === "int8" ? new Int8Array(x.length) : new Uint8Array(x.length);
  for (let i = 0; i < x.length; i++) {
    // np.round(x / scale) is a float32 value; adding the integer zero point is exact for these ranges.
    const q = roundHalfEven(Math.fround(x[i] / scale)) + zero;
    out[i] = q < lo ? lo : q > hi ? hi : q;
  }
  return out;
}

/**
 * The model input tensor for RGBA pixels and a metadata object (input_size [H, W], channels, mean, std,
 * input_dtype, input_quantization): a Float32Array, Int8Array or Uint8Array in NHWC order, plus the
 * resized 8-bit image it was computed from.
 */
export function prepareInput(rgba, width, height, meta) {
  const [H, W] = meta.input_size;
  const converted = convertRGBA(rgba, width, height, meta.channels);
  const resized = resize(converted, W, H);
  const x = normalize(resized.data, resized.bands, meta.mean, meta.std);
  const dtype = meta.input_dtype ?? "float32";
  const tensor = dtype === "float32" ? x : quantize(x, meta.input_quantization, dtype);
  return { tensor, shape: [1, H, W, meta.channels], dtype, resized };
}
