package dev.kerascnn.core

import java.nio.ByteBuffer
import java.nio.ByteOrder

/** An 8-bit image: [data] holds `height * width * channels` values 0-255, row-major, channels last. */
class Image8(val width: Int, val height: Int, val channels: Int, val data: IntArray) {
    init {
        require(width > 0 && height > 0) { "image size must be > 0, got ${width}x$height" }
        require(channels == 1 || channels == 3) { "channels must be 1 or 3, got $channels" }
        require(data.size == width * height * channels) {
            "expected ${width * height * channels} values for ${width}x${height}x$channels, got ${data.size}"
        }
    }

    operator fun get(x: Int, y: Int, c: Int): Int = data[(y * width + x) * channels + c]
}

/**
 * A model input: [bytes] in NHWC order, little-endian (float32, int8 or uint8, per [dtype]), [shape] =
 * `[1, height, width, channels]`. [normalized] holds `(pixel - mean) / std` before quantization.
 */
class InputTensor(val dtype: String, val shape: IntArray, val bytes: ByteArray, val normalized: FloatArray) {
    /** The tensor's values as floats: the float32 values, or the int8/uint8 integers. */
    fun floats(): FloatArray {
        val n = normalized.size
        val out = FloatArray(n)
        if (dtype == "float32") {
            val b = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN)
            for (i in 0 until n) out[i] = b.getFloat(i * 4)
        } else if (dtype == "int8") {
            for (i in 0 until n) out[i] = bytes[i].toFloat()
        } else {
            for (i in 0 until n) out[i] = (bytes[i].toInt() and 0xFF).toFloat()
        }
        return out
    }

    /** [bytes] as a direct buffer in the platform's byte order, for an interpreter's input. */
    fun toDirectBuffer(): ByteBuffer {
        val buffer = ByteBuffer.allocateDirect(bytes.size).order(ByteOrder.nativeOrder())
        if (dtype == "float32" && ByteOrder.nativeOrder() != ByteOrder.LITTLE_ENDIAN) {
            val values = floats()
            for (v in values) buffer.putFloat(v)
        } else {
            buffer.put(bytes)
        }
        buffer.rewind()
        return buffer
    }
}

/**
 * The input preprocessing of `kerascnn validate`, bit for bit, from Android's `Bitmap.getPixels` ints
 * (0xAARRGGBB, not premultiplied):
 *
 * 1. the pixels over opaque white, as an image viewer shows them (`kerascnn.data.viewable`: Pillow's
 *    `Image.alpha_composite(white, image)`, see [overWhite]); opaque pixels are unchanged;
 * 2. Pillow's `convert("L")` (ITU-R 601-2 luma, `(R*19595 + G*38470 + B*7471 + 0x8000) >> 16`) for one
 *    channel, or `convert("RGB")` for three;
 * 3. when the size differs, Pillow 13's `resize((W, H), BILINEAR)`: a port of `ImagingResample` for
 *    8-bit images (src/libImaging/Resample.c), a separable two-pass filter whose support widens by
 *    the downscale factor (antialiasing), fixed-point coefficients with 22 fractional bits, the
 *    passes in Pillow's order;
 * 4. `(float32(pixel) - float32(mean)) / float32(std)` in float32;
 * 5. for int8/uint8 inputs, `clip(round_half_even(x / float32(scale)) + zero_point)`.
 */
object Preprocess {
    /** Pillow's PRECISION_BITS: 32 - 8 bits for the result - 2 bits for overflow. */
    private const val PRECISION_BITS = 32 - 8 - 2

    /**
     * Colour value [c] (0-255) with alpha [a] over opaque white: Pillow's `alpha_composite` in its own
     * integer arithmetic (the same result for all 65536 pairs); `a == 255` gives [c] back.
     */
    fun overWhite(c: Int, a: Int): Int {
        val t = (c * a + 255 * (255 - a)) * 128 + 16384
        return (((t shr 8) + t) shr 8) shr 7
    }

    /** ARGB pixels over white ([overWhite]), then Pillow's `convert("L" if channels == 1 else "RGB")`. */
    fun fromArgb(argb: IntArray, width: Int, height: Int, channels: Int): Image8 {
        require(width > 0 && height > 0) { "image size must be > 0, got ${width}x$height" }
        require(argb.size == width * height) { "expected ${width * height} pixels for ${width}x$height, got ${argb.size}" }
        require(channels == 1 || channels == 3) { "channels must be 1 or 3, got $channels" }
        val n = width * height
        val data = IntArray(n * channels)
        for (i in 0 until n) {
            val p = argb[i]
            val a = p ushr 24
            val r = overWhite((p shr 16) and 0xFF, a)
            val g = overWhite((p shr 8) and 0xFF, a)
            val b = overWhite(p and 0xFF, a)
            if (channels == 1) {
                data[i] = (r * 19595 + g * 38470 + b * 7471 + 0x8000) shr 16
            } else {
                data[i * 3] = r
                data[i * 3 + 1] = g
                data[i * 3 + 2] = b
            }
        }
        return Image8(width, height, channels, data)
    }

    /** The bilinear filter of Pillow (support 1). */
    private fun bilinear(x: Double): Double {
        val a = if (x < 0.0) -x else x
        return if (a < 1.0) 1.0 - a else 0.0
    }

    /** Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`: per output index, the first input index,
     * the number of taps and `ksize` fixed-point weights. */
    private class Coefficients(val ksize: Int, val bounds: IntArray, val weights: IntArray)

    private fun precomputeCoefficients(inSize: Int, in0: Float, in1: Float, outSize: Int): Coefficients {
        val scale = (in1 - in0).toDouble() / outSize
        val filterScale = if (scale < 1.0) 1.0 else scale
        val support = 1.0 * filterScale
        val ksize = Math.ceil(support).toInt() * 2 + 1
        val bounds = IntArray(outSize * 2)
        val weights = IntArray(outSize * ksize)
        val k = DoubleArray(ksize)
        for (xx in 0 until outSize) {
            val center = in0 + (xx + 0.5) * scale
            val ss = 1.0 / filterScale
            var xmin = (center - support + 0.5).toInt()
            if (xmin < 0) xmin = 0
            var xmax = (center + support + 0.5).toInt()
            if (xmax > inSize) xmax = inSize
            xmax -= xmin
            var ww = 0.0
            for (x in 0 until ksize) k[x] = 0.0
            for (x in 0 until xmax) {
                val w = bilinear((x + xmin - center + 0.5) * ss)
                k[x] = w
                ww += w
            }
            for (x in 0 until xmax) {
                if (ww != 0.0) k[x] /= ww
            }
            for (x in 0 until ksize) {
                val v = k[x] * (1 shl PRECISION_BITS)
                weights[xx * ksize + x] = if (k[x] < 0) (-0.5 + v).toInt() else (0.5 + v).toInt()
            }
            bounds[xx * 2] = xmin
            bounds[xx * 2 + 1] = xmax
        }
        return Coefficients(ksize, bounds, weights)
    }

    /** Pillow's `clip8`: the fixed-point sum shifted back to 0-255. */
    private fun clip8(value: Int): Int {
        val v = value shr PRECISION_BITS
        return if (v < 0) 0 else if (v > 255) 255 else v
    }

    /**
     * Pillow 13's `Image.resize((outWidth, outHeight), Image.Resampling.BILINEAR)` for an 8-bit image
     * (`ImagingResampleInner`). A pass whose dimension is unchanged is skipped. The horizontal pass
     * runs first, over only the rows the vertical pass reads (Pillow crops them to `bounds_vert`),
     * unless the height shrinks by more than twice what the width does: then the vertical pass runs
     * first (Pillow 13 does so; earlier releases always ran the horizontal pass first). The order
     * changes the rounding of the 8-bit intermediate image, so it must be Pillow's to match bit for bit.
     */
    fun resizeBilinear(src: Image8, outWidth: Int, outHeight: Int): Image8 {
        require(outWidth > 0 && outHeight > 0) { "output size must be > 0, got ${outWidth}x$outHeight" }
        val needHorizontal = outWidth != src.width
        val needVertical = outHeight != src.height
        val shrinkY = src.height - outHeight
        val horizontalFirst = !(shrinkY > 0 && shrinkY > (src.width - outWidth) * 2)
        if (!needHorizontal && !needVertical) return Image8(src.width, src.height, src.channels, src.data.copyOf())
        val vert = precomputeCoefficients(src.height, 0f, src.height.toFloat(), outHeight)
        val horiz = precomputeCoefficients(src.width, 0f, src.width.toFloat(), outWidth)
        var image = src
        if (horizontalFirst) {
            if (needHorizontal) {
                // Only the source rows the vertical pass reads; its bounds shift to the cropped rows.
                val yFirst = vert.bounds[0]
                val yLast = vert.bounds[outHeight * 2 - 2] + vert.bounds[outHeight * 2 - 1]
                for (i in 0 until outHeight) vert.bounds[i * 2] -= yFirst
                image = horizontalPass(image, yFirst, yLast - yFirst, horiz)
            }
            if (needVertical) image = verticalPass(image, outHeight, vert)
        } else {
            if (needVertical) image = verticalPass(image, outHeight, vert)
            if (needHorizontal) image = horizontalPass(image, 0, image.height, horiz)
        }
        return image
    }

    /** Pillow's `ImagingResampleHorizontal_8bpc`: [rows] rows from [rowOffset] to the output width. */
    private fun horizontalPass(src: Image8, rowOffset: Int, rows: Int, c: Coefficients): Image8 {
        val channels = src.channels
        val outWidth = c.bounds.size / 2
        val out = IntArray(outWidth * rows * channels)
        val input = src.data
        val half = 1 shl (PRECISION_BITS - 1)
        for (yy in 0 until rows) {
            val rowStart = (yy + rowOffset) * src.width
            for (xx in 0 until outWidth) {
                val xmin = c.bounds[xx * 2]
                val xmax = c.bounds[xx * 2 + 1]
                val kOffset = xx * c.ksize
                for (ch in 0 until channels) {
                    var ss = half
                    for (x in 0 until xmax) {
                        ss += input[(rowStart + x + xmin) * channels + ch] * c.weights[kOffset + x]
                    }
                    out[(yy * outWidth + xx) * channels + ch] = clip8(ss)
                }
            }
        }
        return Image8(outWidth, rows, channels, out)
    }

    /** Pillow's `ImagingResampleVertical_8bpc`: to [outHeight] rows. */
    private fun verticalPass(src: Image8, outHeight: Int, c: Coefficients): Image8 {
        val channels = src.channels
        val width = src.width
        val input = src.data
        val out = IntArray(width * outHeight * channels)
        val half = 1 shl (PRECISION_BITS - 1)
        for (yy in 0 until outHeight) {
            val ymin = c.bounds[yy * 2]
            val ymax = c.bounds[yy * 2 + 1]
            val kOffset = yy * c.ksize
            for (xx in 0 until width) {
                for (ch in 0 until channels) {
                    var ss = half
                    for (y in 0 until ymax) {
                        ss += input[((y + ymin) * width + xx) * channels + ch] * c.weights[kOffset + y]
                    }
                    out[(yy * width + xx) * channels + ch] = clip8(ss)
                }
            }
        }
        return Image8(width, outHeight, channels, out)
    }

    /** `(float32(pixel) - float32(mean[c])) / float32(std[c])`, one mean/std value or one per channel. */
    fun normalize(image: Image8, mean: List<Double>, std: List<Double>): FloatArray {
        val channels = image.channels
        require(mean.size == 1 || mean.size == channels) { "mean has ${mean.size} values for $channels channel(s)" }
        require(std.size == 1 || std.size == channels) { "std has ${std.size} values for $channels channel(s)" }
        val m = FloatArray(channels)
        val s = FloatArray(channels)
        for (c in 0 until channels) {
            m[c] = (if (mean.size == 1) mean[0] else mean[c]).toFloat()
            s[c] = (if (std.size == 1) std[0] else std[c]).toFloat()
        }
        val data = image.data
        val out = FloatArray(data.size)
        for (i in data.indices) {
            val c = i % channels
            out[i] = (data[i].toFloat() - m[c]) / s[c]
        }
        return out
    }

    /**
     * NumPy's `clip(np.round(x / float32(scale)) + zero_point, min, max)`: the division in float32,
     * rounding half to even, for "int8" (-128..127) or "uint8" (0..255). Returns the integer values.
     */
    fun quantize(x: FloatArray, q: QuantParams, dtype: String): IntArray {
        val lo: Int
        val hi: Int
        if (dtype == "int8") {
            lo = -128
            hi = 127
        } else if (dtype == "uint8") {
            lo = 0
            hi = 255
        } else {
            throw IllegalArgumentException("cannot quantize to '$dtype' (int8 or uint8)")
        }
        val scale = q.scale.toFloat()
        val zero = q.zeroPoint.toFloat()
        val out = IntArray(x.size)
        for (i in x.indices) {
            // float32 / float32, then rint (half to even) on the exact float value; + zero_point in float32.
            val v = (Math.rint((x[i] / scale).toDouble()).toFloat() + zero).toDouble()
            out[i] = if (v.isNaN()) 0 else if (v < lo) lo else if (v > hi) hi else v.toInt()
        }
        return out
    }

    /** Float32 values as little-endian bytes. */
    fun floatBytes(values: FloatArray): ByteArray {
        val buffer = ByteBuffer.allocate(values.size * 4).order(ByteOrder.LITTLE_ENDIAN)
        for (v in values) buffer.putFloat(v)
        return buffer.array()
    }

    /** The model input for ARGB pixels ([width] x [height], row-major) as [meta] describes it. */
    fun prepare(argb: IntArray, width: Int, height: Int, meta: ModelMetadata): InputTensor {
        if (meta.channels != 1 && meta.channels != 3) {
            throw MetadataException("channels must be 1 or 3 for an image input, got ${meta.channels}")
        }
        if (meta.layout != "NHWC") throw MetadataException("only the NHWC layout is supported, got ${meta.layout}")
        var image = fromArgb(argb, width, height, meta.channels)
        if (image.width != meta.inputWidth || image.height != meta.inputHeight) {
            image = resizeBilinear(image, meta.inputWidth, meta.inputHeight)
        }
        val x = normalize(image, meta.mean, meta.std)
        val shape = intArrayOf(1, meta.inputHeight, meta.inputWidth, meta.channels)
        if (meta.inputDtype == "float32") return InputTensor("float32", shape, floatBytes(x), x)
        val q = meta.inputQuantization
            ?: throw MetadataException("an ${meta.inputDtype} input needs input_quantization")
        val ints = quantize(x, q, meta.inputDtype)
        val bytes = ByteArray(ints.size)
        for (i in ints.indices) bytes[i] = ints[i].toByte()
        return InputTensor(meta.inputDtype, shape, bytes, x)
    }
}
