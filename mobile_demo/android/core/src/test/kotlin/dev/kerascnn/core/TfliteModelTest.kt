package dev.kerascnn.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Test
import java.nio.ByteBuffer

/**
 * Models made elsewhere, built here with [FlatBuilder]: what MediaPipe Model Maker or its metadata
 * writer produce (the standard TFLite Metadata and a packed labels file, no kerascnn metadata.json),
 * with int8/uint8 tensors, grayscale input and logits; and damaged FlatBuffers.
 */
class TfliteModelTest {
    private val labels = listOf("cat", "dog", "bird")


    /** An int8 grayscale model with logits: input [1, 28, 24, 1] int8, output [1, 3] int8. */
    private fun grayInt8(colorSpace: Int = 2, width: Long = 24, height: Long = 28, labelsFile: String? = "labels.txt"): ByteArray {
        val metadata = TestModels.standardMetadata(
            "gray_net", colorSpace, width, height, floatArrayOf(72.94f), floatArrayOf(90.02f), "logits", labelsFile
        )
        return TestModels.tflite(
            TestModels.tensor("serving_default_image:0", intArrayOf(1, 28, 24, 1), TestModels.INT8, 0.018658447265625f, -14),
            TestModels.tensor("StatefulPartitionedCall:0", intArrayOf(1, 3), TestModels.INT8, 0.00390625f, -128),
            metadata
        )
    }

    private fun withLabels(flatbuffer: ByteArray, text: String = Labels.format(labels)): ByteArray =
        TestModels.concat(flatbuffer, TestModels.storedZip("labels.txt" to TestModels.utf8(text)))

    @Test
    fun theFlatbufferReaderReadsTensorsAndMetadataEntries() {
        val bytes = grayInt8()
        val model = TfliteModel.read(bytes)
        assertEquals(3L, model.version)
        assertEquals(TensorInfo("serving_default_image:0", listOf(1, 28, 24, 1), "int8", QuantParams(0.018658447265625f.toDouble(), -14)), model.input)
        assertEquals(TensorInfo("StatefulPartitionedCall:0", listOf(1, 3), "int8", QuantParams(0.00390625, -128)), model.output)
        assertEquals(listOf("TFLITE_METADATA"), model.metadataNames)
        val buffer = model.metadataBuffer("TFLITE_METADATA")!!
        assertEquals("M001", FlatBuffer(buffer, "metadata").identifier())
        assertNull(model.metadataBuffer("nope"))
    }

    @Test
    fun theGenericDecoderGivesTheFlatcJsonForm() {
        val json = MetadataSchema.decode(ByteBuffer.wrap(
            TestModels.standardMetadata("m", 1, 32, 16, floatArrayOf(1f, 2f, 3f), floatArrayOf(4f), "probability")
        ))
        val expected = Json.parseObject(
            """
            {"name": "m", "version": "v7", "author": "MediaPipe Model Maker", "min_parser_version": "1.0.0",
             "subgraph_metadata": [{
               "input_tensor_metadata": [{
                 "name": "image",
                 "content": {"content_properties_type": "ImageProperties",
                             "content_properties": {"color_space": "RGB", "default_size": {"width": 32, "height": 16}}},
                 "process_units": [{"options_type": "NormalizationOptions", "options": {"mean": [1, 2, 3], "std": [4]}}],
                 "stats": {"max": [1], "min": [-1]}}],
               "output_tensor_metadata": [{
                 "name": "probability",
                 "content": {"content_properties_type": "FeatureProperties", "content_properties": {}},
                 "associated_files": [{"name": "labels.txt", "description": "Labels", "type": "TENSOR_AXIS_LABELS"}]}]
             }]}
            """
        )
        assertEquals(expected, json)
    }

    @Test
    fun aModelMakerStyleInt8GrayscaleModelIsFullyUsable() {
        val config = ModelConfig.read(withLabels(grayInt8()), "gray.tflite")
        assertEquals("TFLite Metadata", config.sources)
        val meta = config.metadata
        assertEquals("gray_net", meta.modelName)
        assertEquals("gray_net", config.name)
        assertEquals("v7", config.version)
        assertEquals("MediaPipe Model Maker", config.author)
        assertEquals(labels, meta.labels)
        assertEquals(listOf(28, 24), meta.inputSize)
        assertEquals(1, meta.channels)
        assertEquals("GRAY", meta.channelOrder)
        assertEquals(listOf(72.94f.toDouble()), meta.mean)
        assertEquals(listOf(90.02f.toDouble()), meta.std)
        assertEquals("int8", meta.inputDtype)
        assertEquals(QuantParams(0.018658447265625f.toDouble(), -14), meta.inputQuantization)
        assertEquals("int8", meta.outputDtype)
        assertEquals(QuantParams(0.00390625, -128), meta.outputQuantization)
        assertEquals("logits", meta.output)
        assertEquals("tflite", meta.format)
        // and it runs through the pre- and postprocessing
        val pixels = IntArray(40 * 30) { i -> (0xFF shl 24) or (i * 0x010203) }
        val input = Preprocess.prepare(pixels, 40, 30, meta)
        assertEquals(28 * 24, input.bytes.size)
        assertEquals("int8", input.dtype)
        val scores = Postprocess.scores(byteArrayOf(-128, 0, 127), meta)
        assertEquals(3, scores.size)
        assertEquals("bird", Postprocess.topK(scores, meta.labels, 1)[0].label)
    }

    @Test
    fun aUint8InputWithoutQuantizationTakesThePixelsAsTheyAre() {
        val metadata = TestModels.standardMetadata(
            "raw", 1, 4, 4, floatArrayOf(127.5f), floatArrayOf(127.5f), "probability"
        )
        val bytes = withLabels(
            TestModels.tflite(
                TestModels.tensor("in", intArrayOf(1, 4, 4, 3), TestModels.UINT8),
                TestModels.tensor("out", intArrayOf(1, 3), TestModels.FLOAT32),
                metadata
            )
        )
        val meta = ModelConfig.read(bytes).metadata
        assertEquals("uint8", meta.inputDtype)
        assertEquals(QuantParams(1.0, 0), meta.inputQuantization)
        val pixels = IntArray(16) { i -> (0xFF shl 24) or (i * 0x0F0F0F) }
        val input = Preprocess.prepare(pixels, 4, 4, meta)
        for (i in 0 until 16) {
            for (c in 0 until 3) assertEquals(i * 15, input.bytes[i * 3 + c].toInt() and 0xFF)
        }
        assertNull(meta.outputQuantization)
    }

    @Test
    fun standardMetadataThatContradictsTheTensorsIsRejected() {
        val rgb = expectMetadataError("RGB for one channel") { ModelConfig.read(withLabels(grayInt8(colorSpace = 1))) }
        assertTrue(messageOf(rgb), messageOf(rgb).contains("color_space is RGB"))
        val size = expectMetadataError("default size") { ModelConfig.read(withLabels(grayInt8(width = 28, height = 24))) }
        assertTrue(messageOf(size), messageOf(size).contains("default_size is 28x24"))
        val count = expectMetadataError("4 labels") { ModelConfig.read(withLabels(grayInt8(), "a\nb\nc\nd\n")) }
        assertTrue(messageOf(count), messageOf(count).contains("4 labels (from labels.txt) but the output tensor has 3 classes"))
        val noLabels = expectMetadataError("no labels file") { ModelConfig.read(withLabels(grayInt8(labelsFile = null))) }
        assertTrue(noLabels is MissingMetadataException)
        assertTrue(messageOf(noLabels), messageOf(noLabels).contains("TENSOR_AXIS_LABELS"))
    }

    @Test
    fun aModelWithoutTfliteMetadataEntryHasNoStandardMetadata() {
        val bytes = withLabels(
            TestModels.tflite(
                TestModels.tensor("in", intArrayOf(1, 8, 8, 3), TestModels.FLOAT32),
                TestModels.tensor("out", intArrayOf(1, 3), TestModels.FLOAT32),
                TestModels.standardMetadata("m", 1, 8, 8, floatArrayOf(0f), floatArrayOf(1f), "probability"),
                "SOMETHING_ELSE"
            )
        )
        assertNull(StandardMetadata.read(bytes))
        val e = expectMetadataError("no metadata") { ModelConfig.read(bytes) }
        assertTrue(e is MissingMetadataException)
        assertTrue(messageOf(e), messageOf(e).contains("packed files: labels.txt"))
    }

    @Test
    fun damagedFlatbuffersGiveAClearError() {
        val metadata = TestModels.standardMetadata("m", 1, 8, 8, floatArrayOf(0f), floatArrayOf(1f), "probability")
        // not M001
        val wrongId = metadata.copyOf()
        wrongId[7] = 0x32
        val e1 = expectMetadataError("identifier") { MetadataSchema.decode(ByteBuffer.wrap(wrongId)) }
        assertTrue(messageOf(e1), messageOf(e1).contains("M001"))
        // every cut of the metadata buffer, and of a whole model
        for (cut in 0 until metadata.size - 1) {
            val e = expectMetadataError("metadata cut at $cut") { MetadataSchema.decode(ByteBuffer.wrap(metadata.copyOf(cut))) }
            assertTrue("cut at $cut: ${e.message}", messageOf(e).contains("truncated") || messageOf(e).contains("M001"))
        }
        val model = withLabels(grayInt8())
        for (cut in 0 until model.size - 1) {
            val e = expectMetadataError("model cut at $cut") { ModelConfig.read(model.copyOf(cut)) }
            assertTrue("cut at $cut: ${e.message}", messageOf(e).contains("truncated") || messageOf(e).contains("TFL3"))
        }
        // an offset that points outside the buffer
        val bad = metadata.copyOf()
        bad[0] = 0x7f
        val e2 = expectMetadataError("bad root") { MetadataSchema.decode(ByteBuffer.wrap(bad)) }
        assertTrue(messageOf(e2), messageOf(e2).contains("past the end"))
    }
}
