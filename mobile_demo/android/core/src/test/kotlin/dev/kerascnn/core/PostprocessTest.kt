package dev.kerascnn.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import org.junit.runners.Parameterized

/** The "postprocess" cases of mobile_demo/fixtures/manifest.json: scores within 1e-6, top-3 exactly. */
@RunWith(Parameterized::class)
class GoldenPostprocessTest(private val name: String, private val case: Map<String, Any?>) {
    companion object {
        @JvmStatic
        @Parameterized.Parameters(name = "{0}")
        fun cases(): Collection<Array<Any>> {
            val out = ArrayList<Array<Any>>()
            for (case in Fixtures.cases("postprocess")) out.add(arrayOf<Any>(case["name"] as String, case))
            return out
        }
    }

    @Test
    fun scoresAndTop3AsPythonComputesThem() {
        val raw = Fixtures.list(case["raw"])
        val dtype = case["output_dtype"] as String
        val q = case["output_quantization"]
        val values: FloatArray
        if (dtype == "float32") {
            values = FloatArray(raw.size)
            for (i in raw.indices) values[i] = (raw[i] as Double).toFloat()
        } else {
            val bytes = ByteArray(raw.size)
            for (i in raw.indices) bytes[i] = Fixtures.int(raw[i]).toByte()
            val qm = Fixtures.obj(q)
            values = Postprocess.decode(bytes, dtype, QuantParams(qm["scale"] as Double, Fixtures.int(qm["zero_point"])))
        }
        val scores = Postprocess.scores(values, case["output"] as String)
        val expected = Fixtures.list(case["scores"])
        assertEquals(expected.size, scores.size)
        for (i in expected.indices) {
            assertEquals("$name score $i", expected[i] as Double, scores[i].toDouble(), 1e-6)
        }
        @Suppress("UNCHECKED_CAST")
        val labels = case["labels"] as List<String>
        val top = Postprocess.topK(scores, labels, 3)
        val expectedTop = Fixtures.list(case["top3"])
        assertEquals(expectedTop.size, top.size)
        for (i in expectedTop.indices) {
            val e = Fixtures.obj(expectedTop[i])
            assertEquals("$name top-3 #$i index", Fixtures.int(e["index"]), top[i].index)
            assertEquals("$name top-3 #$i label", e["label"], top[i].label)
            assertEquals("$name top-3 #$i score", e["score"] as Double, top[i].score.toDouble(), 1e-6)
        }
    }
}

class PostprocessTest {
    @Test
    fun dequantizeInFloat32() {
        val out = Postprocess.dequantize(intArrayOf(-128, 0, 127), QuantParams(0.00390625, -128))
        assertArrayEquals(floatArrayOf(0f, 0.5f, 0.99609375f), out, 0f)
        val u = Postprocess.decode(byteArrayOf(0, 128.toByte(), 255.toByte()), "uint8", QuantParams(0.5, 0))
        assertArrayEquals(floatArrayOf(0f, 64f, 127.5f), u, 0f)
    }

    @Test
    fun float32OutputBytesAreLittleEndian() {
        val out = Postprocess.decode(byteArrayOf(0, 0, 0x80.toByte(), 0x3F, 0, 0, 0, 0), "float32", null)
        assertArrayEquals(floatArrayOf(1f, 0f), out, 0f)
    }

    @Test
    fun softmaxIsStableForLargeLogits() {
        val p = Postprocess.softmax(floatArrayOf(1000f, 1001f, 1002f))
        var sum = 0.0
        for (v in p) {
            assertTrue(!v.isNaN())
            sum += v
        }
        assertEquals(1.0, sum, 1e-6)
        assertEquals(0.66524096, p[2].toDouble(), 1e-6)
        assertEquals(0, Postprocess.softmax(FloatArray(0)).size)
    }

    @Test
    fun probabilitiesAreKeptAndUnknownKindsRejected() {
        val x = floatArrayOf(0.2f, 0.8f)
        assertArrayEquals(x, Postprocess.scores(x, "probabilities"), 0f)
        try {
            Postprocess.scores(x, "sigmoid")
            throw AssertionError("expected an error")
        } catch (e: IllegalArgumentException) {
            assertTrue(messageOf(e).contains("logits"))
        }
    }

    @Test
    fun topKBreaksTiesByLowerIndexAndPutsNaNLast() {
        val scores = floatArrayOf(0.1f, 0.5f, Float.NaN, 0.5f, 0.3f)
        val top = Postprocess.topK(scores, listOf("a", "b", "c", "d", "e"), 4)
        assertEquals(listOf(1, 3, 4, 0), top.map { it.index })
        assertEquals(listOf("b", "d", "e", "a"), top.map { it.label })
        assertEquals(2, Postprocess.topK(scores, listOf("a"), 5)[4].index)
    }

    @Test
    fun topKWithMissingLabelsAndSmallOutputs() {
        val top = Postprocess.topK(floatArrayOf(0.25f, 0.75f), listOf("only"), 3)
        assertEquals(2, top.size)
        assertEquals(Recognition(1, "class 1", 0.75f), top[0])
        assertEquals(Recognition(0, "only", 0.25f), top[1])
        assertEquals(0, Postprocess.topK(floatArrayOf(1f), listOf("a"), 0).size)
    }

    @Test
    fun scoresFromRawBytesFollowTheMetadata() {
        val meta = ModelMetadata(
            modelName = "m", labels = listOf("a", "b"), inputSize = listOf(1, 1), channels = 3, output = "logits",
            outputDtype = "int8", outputQuantization = QuantParams(1.0, 0)
        )
        val s = Postprocess.scores(byteArrayOf(0, 0), meta)
        assertArrayEquals(floatArrayOf(0.5f, 0.5f), s, 0f)
    }
}
