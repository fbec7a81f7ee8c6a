package dev.kerascnn.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

class PreprocessTest {
    private fun argb(r: Int, g: Int, b: Int, a: Int = 255): Int = (a shl 24) or (r shl 16) or (g shl 8) or b

    private fun meta(dtype: String, channels: Int, h: Int, w: Int, q: QuantParams?, mean: List<Double>, std: List<Double>) =
        ModelMetadata(
            modelName = "t", labels = listOf("a"), inputSize = listOf(h, w), channels = channels, mean = mean,
            std = std, inputDtype = dtype, inputQuantization = q
        )

    @Test
    fun grayscaleIsPillowsFixedPointLuma() {
        val pixels = intArrayOf(argb(255, 0, 0), argb(0, 255, 0), argb(0, 0, 255), argb(255, 255, 255), argb(10, 200, 30))
        val image = Preprocess.fromArgb(pixels, 5, 1, 1)
        // (R*19595 + G*38470 + B*7471 + 0x8000) >> 16
        assertArrayEquals(intArrayOf(76, 150, 29, 255, (10 * 19595 + 200 * 38470 + 30 * 7471 + 0x8000) shr 16), image.data)
    }

    @Test
    fun overWhiteIsPillowsAlphaComposite() {
        // (c, a, Pillow's Image.alpha_composite(white, (c, c, c, a))), computed with Pillow 13
        val pillow = arrayOf(
            intArrayOf(0, 0, 255), intArrayOf(0, 1, 254), intArrayOf(1, 2, 253), intArrayOf(0, 128, 127),
            intArrayOf(128, 128, 191), intArrayOf(10, 200, 63), intArrayOf(100, 50, 225), intArrayOf(200, 100, 233),
            intArrayOf(250, 17, 255), intArrayOf(17, 254, 18), intArrayOf(255, 0, 255), intArrayOf(77, 255, 77)
        )
        for ((c, a, expected) in pillow) assertEquals("c=$c a=$a", expected, Preprocess.overWhite(c, a))
        for (c in 0..255) assertEquals("opaque c=$c", c, Preprocess.overWhite(c, 255))
    }

    @Test
    fun transparentPixelsAreCompositedOverWhite() {
        // Pillow: Image.alpha_composite(white, rgba).convert("RGB") and then .convert("L")
        val pixels = intArrayOf(argb(10, 200, 30, 0), argb(10, 200, 30, 128), argb(250, 128, 7, 17), argb(1, 2, 3))
        assertArrayEquals(
            intArrayOf(255, 255, 255, 132, 227, 142, 255, 247, 238, 1, 2, 3),
            Preprocess.fromArgb(pixels, 4, 1, 3).data
        )
        assertArrayEquals(intArrayOf(255, 189, 248, 2), Preprocess.fromArgb(pixels, 4, 1, 1).data)
    }

    @Test
    fun resizingAConstantImageKeepsItConstant() {
        for (size in listOf(intArrayOf(7, 5, 32, 32), intArrayOf(61, 47, 3, 9), intArrayOf(40, 40, 40, 24), intArrayOf(30, 90, 20, 10))) {
            val src = Image8(size[0], size[1], 3, IntArray(size[0] * size[1] * 3) { 173 })
            val out = Preprocess.resizeBilinear(src, size[2], size[3])
            assertEquals(size[2], out.width)
            assertEquals(size[3], out.height)
            for (v in out.data) assertEquals(173, v)
        }
    }

    @Test
    fun sameSizeIsACopy() {
        val data = IntArray(12) { it * 20 }
        val src = Image8(2, 2, 3, data)
        val out = Preprocess.resizeBilinear(src, 2, 2)
        assertArrayEquals(data, out.data)
        out.data[0] = 99
        assertEquals(0, src.data[0])
    }

    @Test
    fun upscalingTwoPixelsInterpolates() {
        // Pillow: Image.fromarray(np.uint8([[0, 255]]), "L").resize((4, 1), BILINEAR) -> [0, 64, 191, 255]
        val out = Preprocess.resizeBilinear(Image8(2, 1, 1, intArrayOf(0, 255)), 4, 1)
        assertArrayEquals(intArrayOf(0, 64, 191, 255), out.data)
    }

    @Test
    fun normalizeInFloat32PerChannel() {
        val image = Image8(1, 1, 3, intArrayOf(0, 128, 255))
        val x = Preprocess.normalize(image, listOf(123.675, 116.28, 103.53), listOf(58.395, 57.12, 57.375))
        assertEquals((0f - 123.675f) / 58.395f, x[0], 0f)
        assertEquals((128f - 116.28f) / 57.12f, x[1], 0f)
        assertEquals((255f - 103.53f) / 57.375f, x[2], 0f)
        val single = Preprocess.normalize(image, listOf(127.5), listOf(127.5))
        assertArrayEquals(floatArrayOf(-1f, 0.003921569f, 1f), single, 0f)
    }

    @Test
    fun quantizeRoundsHalfToEvenAndClips() {
        val q = QuantParams(0.5, 0)
        // x / 0.5 = 2.5 -> 2, 3.5 -> 4, -2.5 -> -2, -3.5 -> -4, 1.2 -> 1
        assertArrayEquals(intArrayOf(2, 4, -2, -4, 1), Preprocess.quantize(floatArrayOf(1.25f, 1.75f, -1.25f, -1.75f, 0.6f), q, "int8"))
        assertArrayEquals(intArrayOf(127, -128, 0), Preprocess.quantize(floatArrayOf(1000f, -1000f, Float.NaN), q, "int8"))
        assertArrayEquals(intArrayOf(255, 0, 13), Preprocess.quantize(floatArrayOf(1000f, -1000f, 3f), QuantParams(0.25, 1), "uint8"))
        // in float32, 1 / float32(1 / 127.5) = 127.49999 -> 127 - 10 = 117 (NumPy gives the same);
        // -127.49999 -> -127 - 10 = -137 -> clipped to -128
        assertArrayEquals(intArrayOf(-128, 117), Preprocess.quantize(floatArrayOf(-1f, 1f), QuantParams(1.0 / 127.5, -10), "int8"))
    }

    @Test
    fun quantizedInputBytes() {
        val m = meta("uint8", 3, 1, 1, QuantParams(0.003921568859368563, 0), listOf(0.0), listOf(255.0))
        val t = Preprocess.prepare(intArrayOf(argb(0, 128, 255)), 1, 1, m)
        assertEquals("uint8", t.dtype)
        assertArrayEquals(intArrayOf(1, 1, 1, 3), t.shape)
        assertArrayEquals(byteArrayOf(0, 128.toByte(), 255.toByte()), t.bytes)
        assertArrayEquals(floatArrayOf(0f, 128f, 255f), t.floats(), 0f)
        val s = meta("int8", 1, 1, 2, QuantParams(1.0 / 128, -1), listOf(127.5), listOf(127.5))
        val ti = Preprocess.prepare(intArrayOf(argb(0, 0, 0), argb(255, 255, 255)), 2, 1, s)
        assertArrayEquals(byteArrayOf(-128, 127), ti.bytes)
        assertArrayEquals(floatArrayOf(-128f, 127f), ti.floats(), 0f)
    }

    @Test
    fun floatInputIsLittleEndianNhwc() {
        val m = meta("float32", 3, 1, 2, null, listOf(127.5), listOf(127.5))
        val t = Preprocess.prepare(intArrayOf(argb(0, 255, 0), argb(255, 0, 255)), 2, 1, m)
        assertArrayEquals(intArrayOf(1, 1, 2, 3), t.shape)
        assertEquals(24, t.bytes.size)
        // -1.0f = 0xBF800000 -> 00 00 80 BF
        assertArrayEquals(byteArrayOf(0, 0, 0x80.toByte(), 0xBF.toByte()), t.bytes.copyOfRange(0, 4))
        assertArrayEquals(floatArrayOf(-1f, 1f, -1f, 1f, -1f, 1f), t.floats(), 0f)
        assertArrayEquals(t.normalized, t.floats(), 0f)
        assertEquals(24, t.toDirectBuffer().remaining())
    }

    @Test
    fun badInputsAreRejected() {
        try {
            Preprocess.fromArgb(IntArray(5), 2, 2, 3)
            fail("pixel count")
        } catch (e: IllegalArgumentException) {
            assertTrue(messageOf(e).contains("expected 4 pixels"))
        }
        try {
            Preprocess.prepare(IntArray(4), 2, 2, meta("float32", 4, 2, 2, null, listOf(0.0), listOf(1.0)))
            fail("4 channels")
        } catch (e: MetadataException) {
            assertTrue(messageOf(e).contains("channels must be 1 or 3"))
        }
    }

    @Test
    fun aCameraSizedFrameIsFast() {
        val w = 640
        val h = 480
        val pixels = IntArray(w * h) { argb(it % 256, (it / 7) % 256, (it / 13) % 256) }
        val m = meta("float32", 3, 32, 32, null, listOf(127.5), listOf(127.5))
        Preprocess.prepare(pixels, w, h, m)
        val start = System.nanoTime()
        val t = Preprocess.prepare(pixels, w, h, m)
        val ms = (System.nanoTime() - start) / 1e6
        assertEquals(32 * 32 * 3 * 4, t.bytes.size)
        assertTrue("preprocessing a 640x480 frame took $ms ms", ms < 2000)
    }
}
