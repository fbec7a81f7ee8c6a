package dev.kerascnn.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.fail
import org.junit.Test
import org.junit.runner.RunWith
import org.junit.runners.Parameterized
import java.nio.ByteBuffer
import java.nio.ByteOrder

/**
 * The golden test: for every "preprocess" case of mobile_demo/fixtures/manifest.json, the Kotlin
 * preprocessing of the decoded pixels must give exactly the bytes of the input tensor that Python's
 * `kerascnn validate` preprocessing (Pillow + NumPy) wrote.
 */
@RunWith(Parameterized::class)
class GoldenPreprocessTest(private val name: String, private val case: Map<String, Any?>) {
    companion object {
        @JvmStatic
        @Parameterized.Parameters(name = "{0}")
        fun cases(): Collection<Array<Any>> {
            val out = ArrayList<Array<Any>>()
            for (case in Fixtures.cases("preprocess")) {
                val name = (case["tensor"] as String).removePrefix("tensors/").removeSuffix(".bin")
                out.add(arrayOf<Any>(name, case))
            }
            return out
        }
    }

    private fun describe(dtype: String, data: ByteArray, index: Int): String {
        if (dtype != "float32") {
            val v = if (dtype == "int8") data[index].toInt() else data[index].toInt() and 0xFF
            return v.toString()
        }
        val element = index / 4
        val f = ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN).getFloat(element * 4)
        return "float $f (element $element)"
    }

    @Test
    fun kotlinPreprocessingGivesTheSameTensorBytesAsPython() {
        val width = Fixtures.int(case["width"])
        val height = Fixtures.int(case["height"])
        val argb = Fixtures.ints(Fixtures.bytes(case["pixels"] as String))
        assertEquals("pixel count", width * height, argb.size)
        val meta = Fixtures.configMetadata(case["config"] as String)
        val tensor = Preprocess.prepare(argb, width, height, meta)
        val expected = Fixtures.bytes(case["tensor"] as String)
        val dtype = case["dtype"] as String
        assertEquals("dtype", dtype, tensor.dtype)
        val shape = IntArray(Fixtures.list(case["shape"]).size)
        for (i in shape.indices) shape[i] = Fixtures.int(Fixtures.list(case["shape"])[i])
        assertArrayEquals("shape", shape, tensor.shape)
        assertEquals("tensor byte count", expected.size, tensor.bytes.size)
        for (i in expected.indices) {
            if (expected[i] != tensor.bytes[i]) {
                val byteInfo = "byte $i of ${expected.size}: expected ${expected[i].toInt() and 0xFF}, got ${tensor.bytes[i].toInt() and 0xFF}"
                fail(
                    "$name differs from the Python tensor at $byteInfo; value expected " +
                        "${describe(dtype, expected, if (dtype == "float32") i - i % 4 else i)}, got " +
                        describe(dtype, tensor.bytes, if (dtype == "float32") i - i % 4 else i)
                )
            }
        }
    }
}
