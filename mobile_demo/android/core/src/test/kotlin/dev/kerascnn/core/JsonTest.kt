package dev.kerascnn.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

class JsonTest {
    private fun parseError(text: String): JsonException {
        try {
            Json.parse(text)
        } catch (e: JsonException) {
            return e
        }
        fail("expected a JsonException for: $text")
        throw AssertionError()
    }

    @Test
    fun scalarsAndEmptyContainers() {
        assertEquals(true, Json.parse("true"))
        assertEquals(false, Json.parse(" false "))
        assertNull(Json.parse("null"))
        assertEquals("", Json.parse("\"\""))
        assertEquals(emptyMap<String, Any?>(), Json.parse("{}"))
        assertEquals(emptyList<Any?>(), Json.parse("[ ]"))
    }

    @Test
    fun numbersWithSignsFractionsAndExponents() {
        assertEquals(0.0, Json.parse("0"))
        assertEquals(-0.0, Json.parse("-0") as Double, 0.0)
        assertEquals(127.5, Json.parse("127.5"))
        assertEquals(-14.0, Json.parse("-14"))
        assertEquals(1000.0, Json.parse("1e3"))
        assertEquals(-0.0025, Json.parse("-2.5E-3"))
        assertEquals(100.0, Json.parse("1E+2"))
        assertEquals(7.887820885343899e-08, Json.parse("7.887820885343899e-08"))
        // Python's shortest repr of a float32 scale round-trips exactly through the double.
        assertEquals(0.003921568859368563, Json.parse("0.003921568859368563"))
        assertEquals(0.003921568859368563.toFloat(), (Json.parse("0.003921568859368563") as Double).toFloat())
        // Python's json writes these for non-finite floats
        assertTrue((Json.parse("NaN") as Double).isNaN())
        assertEquals(Double.POSITIVE_INFINITY, Json.parse("Infinity"))
        assertEquals(Double.NEGATIVE_INFINITY, Json.parse("-Infinity"))
    }

    @Test
    fun stringEscapes() {
        assertEquals("a\"b\\c/d\b\u000C\n\r\t", Json.parse("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\""))
        assertEquals("T-shirt/top", Json.parse("\"T-shirt\\/top\""))
        assertEquals("\u00e9t\u00e9", Json.parse("\"\\u00e9t\\u00E9\""))
        assertEquals("\u0000", Json.parse("\"\\u0000\""))
        // a surrogate pair (U+1F45F, athletic shoe) in two escapes
        val shoe = Json.parse("\"\\ud83d\\udc5f\"") as String
        assertEquals(2, shoe.length)
        assertEquals(0x1F45F, shoe.codePointAt(0))
    }

    @Test
    fun nonAsciiLabelsWrittenRaw() {
        // json.dumps(..., ensure_ascii=False), as the metadata is written
        val labels = Json.parse("[\"Sandale \u00e0 talon\", \"\u8fd0\u52a8\u978b\", \"\ud83d\udc5f shoe\", \"  Coat  \"]")
        assertEquals(listOf("Sandale \u00e0 talon", "\u8fd0\u52a8\u978b", "\ud83d\udc5f shoe", "  Coat  "), labels)
    }

    @Test
    fun nestedObjectsKeepKeyOrderAndNull() {
        val text = """
            {"model": {"labels": ["a", "b"], "input_size": [32, 32],
                       "input_quantization": null, "q": {"scale": 0.5, "zero_point": -3}},
             "files": {}, "z": [[1, [2, {}]], []]}
        """
        val value = Json.parseObject(text)
        assertEquals(listOf("model", "files", "z"), ArrayList(value.keys))
        val model = value["model"] as Map<*, *>
        assertEquals(listOf("labels", "input_size", "input_quantization", "q"), ArrayList(model.keys))
        assertTrue(model.containsKey("input_quantization"))
        assertNull(model["input_quantization"])
        assertEquals(-3.0, (model["q"] as Map<*, *>)["zero_point"])
        assertEquals(listOf(listOf(1.0, listOf(2.0, emptyMap<String, Any?>())), emptyList<Any?>()), value["z"])
    }

    @Test
    fun duplicateKeysTakeTheLastValue() {
        assertEquals(mapOf("a" to 2.0), Json.parse("{\"a\": 1, \"a\": 2}"))
    }

    @Test
    fun malformedTextIsRejectedWithAnOffset() {
        val bad = listOf(
            "", "   ", "{", "[1, 2", "{\"a\" 1}", "{\"a\": 1,}", "[1,]", "{a: 1}", "01", "1.", ".5", "-",
            "1e", "+1", "\"abc", "\"a\\x\"", "\"\\u12\"", "\"\\u12G4\"", "\"tab\there\"", "tru", "nul",
            "[1] 2", "{} x", "[\"a\" \"b\"]"
        )
        for (text in bad) {
            val e = parseError(text)
            assertTrue("offset for '$text'", e.offset >= 0 && e.offset <= text.length)
            assertTrue("message for '$text': ${e.message}", messageOf(e).contains("at offset"))
        }
        assertEquals(5, parseError("[1, 2").offset)
        assertEquals(3, parseError("[1 2]").offset)
    }

    @Test
    fun parseObjectRejectsOtherValues() {
        try {
            Json.parseObject("[1]")
            fail("an array is not an object")
        } catch (e: JsonException) {
            assertTrue(messageOf(e).contains("expected a JSON object"))
        }
    }

    @Test
    fun deepNestingIsBounded() {
        val sb = StringBuilder()
        for (i in 0 until 2000) sb.append('[')
        for (i in 0 until 2000) sb.append(']')
        assertTrue(messageOf(parseError(sb.toString())).contains("nesting"))
    }
}
