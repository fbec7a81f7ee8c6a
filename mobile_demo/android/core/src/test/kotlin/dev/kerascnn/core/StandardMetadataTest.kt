package dev.kerascnn.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Test
import java.io.File
import java.nio.ByteBuffer

/**
 * The standard TFLite Metadata (M001) and the tensors of the committed demo models, read by the core,
 * against `mobile_demo/fixtures/manifest.json` ("standard_metadata": the flatc-style JSON Python
 * decoded; "tflite_metadata": kerascnn's JSON of the same files).
 */
class StandardMetadataTest {
    private val standardFixture = Fixtures.obj(Fixtures.manifest["standard_metadata"])
    private val kerascnnFixture = Fixtures.obj(Fixtures.manifest["tflite_metadata"])
    private val appModel = File(Fixtures.root, "mobile_demo/android/app/src/main/assets/model.tflite")

    private fun model(name: String): ByteArray = File(Fixtures.models, name).readBytes()

    private fun labelsTxt(): List<String> =
        Labels.parse(String(File(Fixtures.models, "labels.txt").readBytes(), Charsets.UTF_8))


    private fun assertContains(message: String, vararg parts: String) {
        for (part in parts) assertTrue("'$message' should contain '$part'", message.contains(part))
    }

    @Suppress("UNCHECKED_CAST")
    private fun path(root: Any?, vararg keys: Any): Any? {
        var v = root
        for (k in keys) {
            v = if (k is Int) (v as List<Any?>)[k] else (v as Map<String, Any?>)[k as String]
        }
        return v
    }

    private fun doubles(value: Any?): List<Double> {
        val out = ArrayList<Double>()
        for (v in Fixtures.list(value)) out.add(v as Double)
        return out
    }

    @Test
    fun standardMetadataOfEveryDemoModelEqualsTheManifest() {
        assertEquals(listOf("mobilenet_v2_float32.tflite", "mobilenet_v2_int8.tflite"), standardFixture.keys.sorted())
        for (name in standardFixture.keys) {
            val expected = Fixtures.obj(standardFixture[name])
            val json = Fixtures.obj(expected["metadata"])
            val bytes = model(name)
            val standard = StandardMetadata.read(bytes, name)
            assertNotNull("$name has no TFLite Metadata", standard)
            // the whole table, field for field, as Python's decoder and flatc show it
            assertEquals(name, json, standard!!.json)
            assertEquals(name, expected["packed_files"], PackedFiles.read(ByteBuffer.wrap(bytes))!!.names)

            assertEquals(json["name"], standard.name)
            assertEquals(json["version"], standard.version)
            assertEquals(json["author"], standard.author)
            assertEquals(json["description"], standard.description)
            assertEquals(json["min_parser_version"], standard.minParserVersion)
            val input = path(json, "subgraph_metadata", 0, "input_tensor_metadata", 0)
            val image = path(input, "content", "content_properties")
            assertEquals("ImageProperties", path(input, "content", "content_properties_type"))
            assertEquals("ImageProperties", standard.input.contentType)
            assertEquals(path(image, "color_space"), standard.input.colorSpace)
            assertEquals(
                listOf(Fixtures.int(path(image, "default_size", "width")), Fixtures.int(path(image, "default_size", "height"))),
                standard.input.defaultSize
            )
            val norm = path(input, "process_units", 0, "options")
            assertEquals(doubles(path(norm, "mean")), standard.input.mean)
            assertEquals(doubles(path(norm, "std")), standard.input.std)
            assertEquals(doubles(path(input, "stats", "min")), standard.input.statsMin)
            assertEquals(doubles(path(input, "stats", "max")), standard.input.statsMax)
            val output = path(json, "subgraph_metadata", 0, "output_tensor_metadata", 0)
            assertEquals(path(output, "name"), standard.output.name)
            assertEquals(doubles(path(output, "stats", "max")), standard.output.statsMax)
            assertEquals(path(output, "associated_files", 0, "name"), standard.labelsFile)
            assertEquals("TENSOR_AXIS_LABELS", standard.output.associatedFiles[0].type)
            assertEquals(listOf(AssociatedFile(
                "metadata.json", "UNKNOWN", path(json, "associated_files", 0, "description") as String, ""
            )), standard.associatedFiles)
            // the labels come from the packed labels.txt
            assertEquals(name, labelsTxt(), standard.labels)
            assertEquals(Fixtures.obj(kerascnnFixture[name])["labels"], standard.labels)
        }
    }

    @Test
    fun theAppsAssetIsTheInt8DemoModel() {
        val asset = appModel.readBytes()
        val standard = StandardMetadata.read(asset, "model.tflite")!!
        assertEquals(Fixtures.obj(Fixtures.obj(standardFixture["mobilenet_v2_int8.tflite"])["metadata"]), standard.json)
        val config = ModelConfig.read(asset)
        assertEquals(ModelMetadata.fromMap(Fixtures.obj(kerascnnFixture["mobilenet_v2_int8.tflite"])), config.metadata)
    }

    @Test
    fun tensorsFromTheFlatbufferEqualTheManifest() {
        for (name in kerascnnFixture.keys) {
            val expected = Fixtures.obj(kerascnnFixture[name])
            val tflite = TfliteModel.read(model(name), name)
            val size = Fixtures.list(expected["input_size"])
            assertEquals(
                name,
                listOf(1, Fixtures.int(size[0]), Fixtures.int(size[1]), Fixtures.int(expected["channels"])),
                tflite.input.shape
            )
            assertEquals(name, expected["input_dtype"], tflite.input.dtype)
            assertEquals(name, expected["output_dtype"], tflite.output.dtype)
            assertEquals(name, quant(expected["input_quantization"]), tflite.input.quantization)
            assertEquals(name, quant(expected["output_quantization"]), tflite.output.quantization)
            assertEquals(name, listOf(1, Fixtures.list(expected["labels"]).size), tflite.output.shape)
            assertTrue(name, tflite.metadataNames.contains("TFLITE_METADATA"))
            assertTrue(name, tflite.metadataNames.contains("min_runtime_version"))
        }
    }

    private fun quant(value: Any?): QuantParams? {
        if (value == null) return null
        val m = Fixtures.obj(value)
        return QuantParams(m["scale"] as Double, Fixtures.int(m["zero_point"]))
    }

    @Test
    fun modelConfigOfEveryDemoModel() {
        for (name in kerascnnFixture.keys) {
            val bytes = model(name)
            val config = ModelConfig.read(bytes, name)
            assertEquals(name, ModelMetadata.fromMap(Fixtures.obj(kerascnnFixture[name]), name), config.metadata)
            assertEquals("TFLite Metadata + metadata.json", config.sources)
            assertEquals("mobilenet_v2", config.name)
            assertEquals("d4554f88671a4670", config.version)
            assertEquals("kerascnn 0.1.0", config.author)
            assertEquals(listOf("labels.txt", "metadata.json"), config.packedFiles)
            assertNotNull(config.standard)
            assertNotNull(config.kerascnn)
            // the same from a buffer (the app's memory-mapped asset), which is left as it was
            val buffer = ByteBuffer.wrap(bytes)
            assertEquals(config.metadata, ModelConfig.read(buffer, name).metadata)
            assertEquals(0, buffer.position())
            assertEquals(bytes.size, buffer.limit())
        }
    }

    /** The demo model's flatbuffer (with its standard metadata) followed by a new archive. */
    private fun repacked(name: String, vararg entries: Pair<String, ByteArray>): ByteArray =
        TestModels.concat(TfliteMetadata.strip(model(name)), TestModels.storedZip(*entries))

    @Test
    fun aModelWithOnlyLabelsTxtPackedIsFullyUsable() {
        for (name in kerascnnFixture.keys) {
            val full = ModelConfig.read(model(name), name).metadata
            val bytes = repacked(name, "labels.txt" to File(Fixtures.models, "labels.txt").readBytes())
            val config = ModelConfig.read(bytes, name)
            assertEquals("TFLite Metadata", config.sources)
            assertNull(config.kerascnn)
            assertEquals(listOf("labels.txt"), config.packedFiles)
            val meta = config.metadata
            assertEquals(labelsTxt(), meta.labels)
            assertEquals(full.labels, meta.labels)
            assertEquals(listOf(127.5), meta.mean)
            assertEquals(listOf(127.5), meta.std)
            assertEquals(full.inputSize, meta.inputSize)
            assertEquals(full.channels, meta.channels)
            assertEquals("RGB", meta.channelOrder)
            assertEquals(full.inputDtype, meta.inputDtype)
            assertEquals(full.inputQuantization, meta.inputQuantization)
            assertEquals(full.outputDtype, meta.outputDtype)
            assertEquals(full.outputQuantization, meta.outputQuantization)
            assertEquals("probabilities", meta.output)
            assertEquals("mobilenet_v2", meta.modelName)
            assertEquals("d4554f88671a4670", config.version)
            assertEquals(listOf(1, 32, 32, 3), config.input.shape)
            assertEquals(listOf(1, 10), config.output.shape)
            // the same input bytes as with kerascnn's metadata.json
            val pixels = IntArray(45 * 37)
            for (i in pixels.indices) pixels[i] = (0xFF shl 24) or (((i * 2654435761L) ushr 8).toInt() and 0xFFFFFF)
            val a = Preprocess.prepare(pixels, 45, 37, meta)
            val b = Preprocess.prepare(pixels, 45, 37, full)
            assertTrue(name, a.bytes.contentEquals(b.bytes))
        }
    }

    @Test
    fun aModelWithoutTfliteMetadataFallsBackToMetadataJsonOrSaysHowToFixIt() {
        val original = model("mobilenet_v2_int8.tflite")
        val renamed = TestModels.replaceAll(original, "TFLITE_METADATA", "OTHER_METADATA_")
        // kerascnn's metadata.json alone (an export from before the standard metadata) still works
        val config = ModelConfig.read(renamed)
        assertNull(config.standard)
        assertEquals("metadata.json", config.sources)
        assertEquals(ModelMetadata.fromMap(Fixtures.obj(kerascnnFixture["mobilenet_v2_int8.tflite"])), config.metadata)
        assertNull(StandardMetadata.read(renamed))
        // neither: a clear error that says how to add metadata
        val bare = TfliteMetadata.strip(renamed)
        val e = expectMetadataError("no metadata") { ModelConfig.read(bare) }
        assertTrue(e is MissingMetadataException)
        assertContains(messageOf(e), "model.tflite has no metadata", "TFLITE_METADATA", "kerascnn export", "MediaPipe's metadata writer")
        // the app without a model.json asset says the same
        val app = expectMetadataError("app, no metadata") { MetadataResolver.resolve(ByteBuffer.wrap(bare), null, "a\n") }
        assertContains(messageOf(app), "no embedded metadata", "kerascnn export", "MediaPipe")
    }

    @Test
    fun standardMetadataWhoseLabelsFileIsNotPackedSaysSo() {
        val bare = TfliteMetadata.strip(model("mobilenet_v2_float32.tflite"))
        val standard = StandardMetadata.read(bare)!!
        assertEquals("labels.txt", standard.labelsFile)
        assertNull(standard.labels)
        val e = expectMetadataError("labels not packed") { ModelConfig.read(bare) }
        assertTrue(e is MissingMetadataException)
        assertContains(messageOf(e), "names labels.txt", "not packed")
    }

    @Test
    fun aTruncatedFileGivesAClearError() {
        val bytes = model("mobilenet_v2_int8.tflite")
        val flatbufferEnd = TfliteMetadata.strip(bytes).size
        val cuts = listOf(4, 100, 5000, bytes.size / 2, flatbufferEnd - 100, flatbufferEnd + 50, bytes.size - 10)
        for (cut in cuts) {
            val e = expectMetadataError("cut at $cut") { ModelConfig.read(bytes.copyOf(cut)) }
            assertTrue("cut at $cut: ${e.message}", messageOf(e).contains("truncated"))
        }
        val notTflite = expectMetadataError("not a tflite") { ModelConfig.read(TestModels.utf8("{\"model_name\": \"x\"}")) }
        assertContains(messageOf(notTflite), "not a TFLite model", "TFL3")
    }

    @Test
    fun labelsThatDoNotMatchTheOutputSizeGiveAClearError() {
        val nine = TestModels.utf8(Labels.format(labelsTxt().subList(0, 9)))
        val e = expectMetadataError("9 labels") { ModelConfig.read(repacked("mobilenet_v2_int8.tflite", "labels.txt" to nine)) }
        assertContains(messageOf(e), "9 labels", "labels.txt", "10 classes")
        val eleven = TestModels.utf8(Labels.format(labelsTxt() + "Extra"))
        val e2 = expectMetadataError("11 labels") { ModelConfig.read(repacked("mobilenet_v2_float32.tflite", "labels.txt" to eleven)) }
        assertContains(messageOf(e2), "11 labels", "10 classes")
    }

    private fun embeddedJson(name: String): String = TfliteMetadata.readJson(model(name))!!

    @Test
    fun standardMetadataAndMetadataJsonMustAgree() {
        val name = "mobilenet_v2_int8.tflite"
        val labels = File(Fixtures.models, "labels.txt").readBytes()
        val json = embeddedJson(name)
        // labels: a renamed class, then a missing one
        val renamed = TestModels.utf8(Labels.format(labelsTxt().subList(0, 9) + "Boot"))
        val e1 = expectMetadataError("labels differ") {
            ModelConfig.read(repacked(name, "labels.txt" to renamed, "metadata.json" to TestModels.utf8(json)))
        }
        assertContains(messageOf(e1), "disagree on labels", "label 9", "'Boot'", "'Ankle boot'")
        val nine = TestModels.utf8(Labels.format(labelsTxt().subList(0, 9)))
        val e2 = expectMetadataError("label count") {
            ModelConfig.read(repacked(name, "labels.txt" to nine, "metadata.json" to TestModels.utf8(json)))
        }
        assertContains(messageOf(e2), "disagree on labels", "9 labels")
        // normalization
        val mean = Regex("\"mean\": \\[[^\\]]*\\]").replace(json, "\"mean\": [0.0]")
        val e3 = expectMetadataError("mean differs") {
            ModelConfig.read(repacked(name, "labels.txt" to labels, "metadata.json" to TestModels.utf8(mean)))
        }
        assertContains(messageOf(e3), "disagree on the normalization mean", "[127.5]", "[0.0]")
        val std = Regex("\"std\": \\[[^\\]]*\\]").replace(json, "\"std\": [127.5, 127.5, 1.0]")
        val e4 = expectMetadataError("std differs") {
            ModelConfig.read(repacked(name, "labels.txt" to labels, "metadata.json" to TestModels.utf8(std)))
        }
        assertContains(messageOf(e4), "normalization std")
        // one value for every channel is the same as that value three times
        val perChannel = Regex("\"mean\": \\[[^\\]]*\\]").replace(json, "\"mean\": [127.5, 127.5, 127.5]")
        val ok = ModelConfig.read(repacked(name, "labels.txt" to labels, "metadata.json" to TestModels.utf8(perChannel)))
        assertEquals(listOf(127.5, 127.5, 127.5), ok.metadata.mean)
        // metadata.json against the tensors
        val size = Regex("\"input_size\": \\[[^\\]]*\\]").replace(json, "\"input_size\": [28, 28]")
        val e5 = expectMetadataError("input size") {
            ModelConfig.read(repacked(name, "labels.txt" to labels, "metadata.json" to TestModels.utf8(size)))
        }
        assertContains(messageOf(e5), "input_size = [28, 28]", "[1, 32, 32, 3]")
        val dtype = json.replace("\"input_dtype\": \"float32\"", "\"input_dtype\": \"int8\", \"input_quantization\": {\"scale\": 0.5, \"zero_point\": 0}")
            .replace("\"input_quantization\": null,", "")
        val e6 = expectMetadataError("input dtype") {
            ModelConfig.read(repacked(name, "labels.txt" to labels, "metadata.json" to TestModels.utf8(dtype)))
        }
        assertContains(messageOf(e6), "input_dtype = int8", "float32")
    }

    @Test
    fun theAppsLookupUsesTheModelFirstAndDescribesItsSources() {
        val bytes = model("mobilenet_v2_int8.tflite")
        val resolved = MetadataResolver.resolve(ByteBuffer.wrap(bytes), null, null)
        assertEquals("embedded in model.tflite", resolved.origin)
        assertEquals("TFLite Metadata + metadata.json, embedded in model.tflite", resolved.describe())
        assertEquals("mobilenet_v2", resolved.name)
        assertEquals("d4554f88671a4670", resolved.version)
        assertNotNull(resolved.config)
        // an inconsistent model is an error, not a reason to use the sidecar model.json
        val nine = TestModels.utf8(Labels.format(labelsTxt().subList(0, 9)))
        val broken = repacked("mobilenet_v2_int8.tflite", "labels.txt" to nine)
        val sidecar = String(File(Fixtures.models, "model.json").readBytes(), Charsets.UTF_8)
        expectMetadataError("inconsistent") { MetadataResolver.resolve(ByteBuffer.wrap(broken), sidecar, null) }
        // a model without any: the sidecars
        val bare = TfliteMetadata.strip(TestModels.replaceAll(bytes, "TFLITE_METADATA", "OTHER_METADATA_"))
        val fromSidecar = MetadataResolver.resolve(ByteBuffer.wrap(bare), sidecar, null)
        assertEquals("model.json", fromSidecar.origin)
        assertEquals("model.json", fromSidecar.describe())
        assertNull(fromSidecar.config)
        assertEquals("mobilenet_v2", fromSidecar.name)
        assertEquals("d4554f88671a4670", fromSidecar.version)
    }
}
