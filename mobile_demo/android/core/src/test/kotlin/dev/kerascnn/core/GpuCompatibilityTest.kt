package dev.kerascnn.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Test
import java.io.File
import java.nio.ByteBuffer
import java.util.Random

/**
 * [GpuCompatibility] on the committed demo models and on `mobile_demo/fixtures/tflite/flatten_dynamic_batch.tflite`
 * (written by tests/mobile/test_golden_fixtures.py: Conv2D -> Flatten -> Dense with a dynamic batch), and on
 * damaged files. Python's `gpu_compatibility` (export/delegates.py) reads the same files as these tests
 * expect, plus STRIDED_SLICE (shrink_axis_mask) in the Flatten file, a rule kept in Python only.
 */
class GpuCompatibilityTest {
    private val flatten = "tflite/flatten_dynamic_batch.tflite"


    @Test
    fun theDemoModelsAreTakenWhole() {
        for (name in listOf("mobilenet_v2_float32.tflite", "mobilenet_v2_int8.tflite")) {
            val report = GpuCompatibility.check(File(Fixtures.models, name).readBytes(), name)
            assertTrue(report.describe(), report.fullyTaken)
            assertEquals(emptyList<RejectedOp>(), report.rejected)
            // CONV_2D 35, DEPTHWISE_CONV_2D 17, ADD 10, MEAN, 2 RESHAPE of constant shapes (the fixed batch of 1),
            // FULLY_CONNECTED, SOFTMAX (+ QUANTIZE, DEQUANTIZE)
            assertEquals(name, if (name.contains("int8")) 69 else 67, report.ops)
            assertEquals("GPU delegate would take all ${report.ops} ops", report.describe())
        }
    }

    @Test
    fun aFlattenWithADynamicBatchIsNotTakenWhole() {
        val report = GpuCompatibility.check(Fixtures.bytes(flatten), "flatten.tflite")
        assertFalse(report.fullyTaken)
        // CONV_2D, SHAPE, STRIDED_SLICE, PACK, RESHAPE, FULLY_CONNECTED, SOFTMAX
        assertEquals(7, report.ops)
        assertEquals(
            listOf(
                RejectedOp(1, "SHAPE", "flatnet_1/flatten_1/Shape", "Not supported op SHAPE"),
                RejectedOp(4, "RESHAPE", "flatnet_1/flatten_1/Reshape", "runtime shape")
            ),
            report.rejected
        )
        assertEquals(
            "GPU delegate would take 5 of 7 ops; not: SHAPE (flatnet_1/flatten_1/Shape), " +
                "RESHAPE (flatnet_1/flatten_1/Reshape: runtime shape)",
            report.describe()
        )
        assertEquals(
            "GPU delegate would take 5 of 7 ops; not: SHAPE (flatnet_1/flatten_1/Shape), and 1 more",
            report.describe(1)
        )
        // a ByteBuffer that does not start at the file (an asset mapped with others around it) reads the same
        val bytes = Fixtures.bytes(flatten)
        val padded = ByteArray(bytes.size + 16)
        System.arraycopy(bytes, 0, padded, 3, bytes.size)
        val view = ByteBuffer.wrap(padded, 3, bytes.size).slice()
        assertEquals(report, GpuCompatibility.check(view))
        assertEquals(0, view.position())
    }

    private fun tensor(name: String, buffer: Long) = FbTable(2 to FlatBuilder.u32(buffer), 3 to name)

    private fun op(code: Long, inputs: IntArray, outputs: IntArray) =
        FbTable(0 to FlatBuilder.u32(code), 1 to IntVector(inputs), 2 to IntVector(outputs))

    /**
     * Operator codes: 0 RESHAPE (deprecated_builtin_code only, as old files have it), 1 GELU (builtin_code
     * 150 behind the placeholder 127), 2 CUSTOM Resampler, 3 CUSTOM MyOp, 4 builtin 209 (not named here),
     * 5 SELECT_V2 (builtin_code only); buffers: 0 empty, 1 data (a constant), 2 an empty data vector.
     */
    private fun model(main: List<FbTable>, tensors: List<FbTable>, second: List<FbTable> = emptyList()): ByteArray {
        val codes = listOf(
            FbTable(0 to FlatBuilder.i8(22)),
            FbTable(0 to FlatBuilder.i8(127), 3 to FlatBuilder.i32(150)),
            FbTable(0 to FlatBuilder.i8(32), 1 to "Resampler", 3 to FlatBuilder.i32(32)),
            FbTable(0 to FlatBuilder.i8(32), 1 to "MyOp", 3 to FlatBuilder.i32(32)),
            FbTable(0 to FlatBuilder.i8(127), 3 to FlatBuilder.i32(209)),
            FbTable(3 to FlatBuilder.i32(123))
        )
        val buffers = listOf(FbTable(), FbTable(0 to ByteVector(ByteArray(8))), FbTable(0 to ByteVector(ByteArray(0))))
        val graphs = listOf(
            FbTable(0 to tensors, 3 to main),
            FbTable(0 to listOf(tensor("w", 0)), 3 to second)
        )
        return FlatBuilder.build(FbTable(0 to FlatBuilder.u32(3), 1 to codes, 2 to graphs, 4 to buffers), "TFL3")
    }

    private val tensors = listOf(tensor("x", 0), tensor("shape", 1), tensor("y", 0), tensor("dyn_shape", 2), tensor("z", 0))

    @Test
    fun opTypesAndTheRuntimeShapeRule() {
        val report = GpuCompatibility.check(model(listOf(
            op(0, intArrayOf(0, 1), intArrayOf(2)), // RESHAPE to a constant shape: taken
            op(0, intArrayOf(2, 3), intArrayOf(4)), // RESHAPE to a shape with an empty buffer: not
            op(0, intArrayOf(0), intArrayOf(2)), // RESHAPE with its shape in the options: taken
            op(0, intArrayOf(0, -1), intArrayOf(2)), // an omitted shape input: taken
            op(1, intArrayOf(4), intArrayOf(2)), // GELU: taken
            op(2, intArrayOf(0, 4), intArrayOf(2)), // Resampler: taken
            op(3, intArrayOf(0), intArrayOf(2)), // MyOp: not
            op(4, intArrayOf(0), intArrayOf()), // builtin 209, no output: not
            op(5, intArrayOf(0, 2, 4), intArrayOf(2)) // SELECT_V2: taken (conditions not encoded)
        ), tensors, listOf(op(4, intArrayOf(0), intArrayOf(0)))), "m.tflite")
        assertEquals(10, report.ops)
        assertEquals(
            listOf(
                RejectedOp(1, "RESHAPE", "z", "runtime shape"),
                RejectedOp(6, "CUSTOM:MyOp", "y", "Not supported custom op MyOp"),
                RejectedOp(7, "BUILTIN_209", "", "Not supported op BUILTIN_209"),
                RejectedOp(0, "BUILTIN_209", "w", "Not supported op BUILTIN_209", 1)
            ),
            report.rejected
        )
        assertFalse(report.fullyTaken)
        val taken = GpuCompatibility.check(model(listOf(op(0, intArrayOf(0, 1), intArrayOf(2))), tensors))
        assertEquals(GpuReport(true, 1, emptyList()), taken)
        // indexes past their tables
        val cases = listOf(
            model(listOf(op(6, intArrayOf(0), intArrayOf(2))), tensors) to "names operator code 6 of 6",
            model(listOf(op(1, intArrayOf(5), intArrayOf(2))), tensors) to "subgraph 0 operator 0 names tensor 5 of 5",
            model(listOf(op(0, intArrayOf(0, 1), intArrayOf(2))), listOf(tensor("x", 0), tensor("s", 3), tensor("y", 0)))
                to "names buffer 3 of 3"
        )
        for ((bytes, expected) in cases) {
            val e = expectMetadataError(expected) { GpuCompatibility.check(bytes, "m.tflite") }
            assertTrue(messageOf(e), messageOf(e).startsWith("m.tflite (TFLite flatbuffer) is truncated or malformed: "))
            assertTrue(messageOf(e), messageOf(e).contains(expected))
        }
    }

    @Test
    fun theTablesNameOpsAsTheSchemaDoes() {
        assertEquals("RESHAPE", GpuCompatibility.opName(22))
        assertEquals("SHAPE", GpuCompatibility.opName(77))
        assertEquals("BUILTIN_209", GpuCompatibility.opName(209))
        val codes = HashMap<Int, String>()
        for (table in listOf(GpuCompatibility.GPU_OPS, GpuCompatibility.GPU_UNCHECKED_OPS)) {
            for ((name, code) in table) {
                val before = codes.put(code, name)
                assertTrue("$name and $before share code $code", before == null)
                assertEquals(name, GpuCompatibility.opName(code))
            }
        }
        assertEquals(76, GpuCompatibility.GPU_OPS.size)
        assertFalse(GpuCompatibility.GPU_OPS.containsKey("SHAPE"))
    }

    @Test
    fun damagedFilesGiveAClearError() {
        val model = Fixtures.bytes(flatten)
        val short = expectMetadataError("4 bytes") { GpuCompatibility.check(model.copyOf(4), "m.tflite") }
        assertEquals("m.tflite is truncated or not a TFLite model: only 4 bytes", messageOf(short))
        val random = Random(7)
        val garbage = ByteArray(4096)
        random.nextBytes(garbage)
        val notTflite = expectMetadataError("garbage") { GpuCompatibility.check(garbage, "m.tflite") }
        assertTrue(messageOf(notTflite), messageOf(notTflite).contains("not a TFLite model (no 'TFL3'"))
        // garbage behind a TFL3 identifier, every cut of the file, a root offset past the end
        val identifier = "TFL3".toByteArray(Charsets.US_ASCII)
        for (seed in 0 until 20) {
            Random(seed.toLong()).nextBytes(garbage)
            System.arraycopy(identifier, 0, garbage, 4, 4)
            val e = expectMetadataError("garbage $seed") { GpuCompatibility.check(garbage, "m.tflite") }
            assertTrue(messageOf(e), messageOf(e).startsWith("m.tflite (TFLite flatbuffer) is truncated or malformed: "))
        }
        for (cut in 0 until model.size) {
            val e = expectMetadataError("cut at $cut") { GpuCompatibility.check(model.copyOf(cut), "m.tflite") }
            assertTrue("cut at $cut: ${e.message}", messageOf(e).contains("truncated"))
        }
        val bad = model.copyOf()
        bad[0] = 0x7f
        bad[1] = 0x7f
        val past = expectMetadataError("root") { GpuCompatibility.check(bad, "m.tflite") }
        assertTrue(messageOf(past), messageOf(past).contains("past the end"))
    }
}
