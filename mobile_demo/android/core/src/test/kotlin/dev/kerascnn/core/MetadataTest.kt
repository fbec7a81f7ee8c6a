package dev.kerascnn.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Test
import java.io.ByteArrayOutputStream
import java.io.File
import java.nio.ByteBuffer
import java.util.zip.CRC32
import java.util.zip.ZipEntry
import java.util.zip.ZipOutputStream

class MetadataTest {
    private val demoJson = """
        {"model_name": "demo", "labels": ["T-shirt/top", "Ankle boot"], "input_size": [28, 24], "channels": 1,
         "mean": [72.94], "std": [90.02], "output": "logits", "format": "tflite", "quantization": "int8",
         "input_dtype": "int8", "output_dtype": "int8",
         "input_quantization": {"scale": 0.018658447265625, "zero_point": -14},
         "output_quantization": {"scale": 0.00390625, "zero_point": -128}, "unknown_key": [1, 2]}
    """

    private fun modelFiles(): List<File> {
        val all = Fixtures.models.listFiles()
        assertNotNull(all)
        val sorted = all!!.filter { it.name.endsWith(".tflite") }.sortedBy { it.name }
        assertTrue("no .tflite in ${Fixtures.models}", sorted.isNotEmpty())
        return sorted
    }


    /** A stored zip with one entry, as java.util.zip writes it (offsets from the archive's start). */
    private fun zipOf(name: String, data: ByteArray, deflate: Boolean): ByteArray {
        val out = ByteArrayOutputStream()
        val zip = ZipOutputStream(out)
        val entry = ZipEntry(name)
        if (!deflate) {
            entry.method = ZipEntry.STORED
            entry.size = data.size.toLong()
            entry.compressedSize = data.size.toLong()
            val crc = CRC32()
            crc.update(data, 0, data.size)
            entry.crc = crc.value
        }
        zip.putNextEntry(entry)
        zip.write(data)
        zip.closeEntry()
        zip.close()
        return out.toByteArray()
    }

    private fun fakeFlatbuffer(size: Int): ByteArray {
        val b = ByteArray(size)
        for (i in b.indices) b[i] = ((i * 31 + 7) % 251).toByte()
        return b
    }

    private fun indexOf(data: ByteArray, needle: ByteArray, from: Int): Int {
        var i = from
        while (i + needle.size <= data.size) {
            var same = true
            for (j in needle.indices) {
                if (data[i + j] != needle[j]) {
                    same = false
                    break
                }
            }
            if (same) return i
            i++
        }
        return -1
    }

    private fun concat(a: ByteArray, b: ByteArray): ByteArray {
        val out = a.copyOf(a.size + b.size)
        System.arraycopy(b, 0, out, a.size, b.size)
        return out
    }

    @Test
    fun embeddedMetadataOfEveryDemoModelEqualsTheManifest() {
        val expected = Fixtures.obj(Fixtures.manifest["tflite_metadata"])
        val files = modelFiles()
        assertEquals(expected.keys.sorted(), files.map { it.name })
        for (file in files) {
            val bytes = file.readBytes()
            val json = TfliteMetadata.readJson(bytes)
            assertNotNull("${file.name} has no embedded metadata", json)
            // the raw JSON object, key for key, and the parsed metadata
            assertEquals(file.name, expected[file.name], Json.parseObject(json!!))
            val meta = TfliteMetadata.read(bytes)
            assertEquals(file.name, ModelMetadata.fromMap(Fixtures.obj(expected[file.name]), file.name), meta)
            assertEquals(meta, TfliteMetadata.read(ByteBuffer.wrap(bytes)))
        }
    }

    @Test
    fun embeddedLabelsAgreeWithLabelsTxt() {
        val labels = Labels.parse(String(File(Fixtures.models, "labels.txt").readBytes(), Charsets.UTF_8))
        for (file in modelFiles()) {
            val meta = TfliteMetadata.read(file.readBytes())!!
            assertEquals(file.name, labels, meta.labels)
        }
    }

    @Test
    fun demoModelMetadataFields() {
        val meta = TfliteMetadata.read(File(Fixtures.models, "mobilenet_v2_int8.tflite").readBytes())!!
        assertEquals("mobilenet_v2", meta.modelName)
        assertEquals(32, meta.inputHeight)
        assertEquals(32, meta.inputWidth)
        assertEquals(3, meta.channels)
        assertEquals(listOf(127.5), meta.mean)
        assertEquals("int8", meta.quantization)
        assertEquals("float32", meta.inputDtype)
        assertNull(meta.inputQuantization)
        assertEquals("probabilities", meta.output)
        assertEquals(10, meta.numClasses)
    }

    @Test
    fun aTfliteWithoutAppendedZipHasNoMetadata() {
        val bytes = File(Fixtures.models, "mobilenet_v2_float32.tflite").readBytes()
        val bare = TfliteMetadata.strip(bytes)
        assertTrue(bare.size < bytes.size)
        assertEquals("TFL3", String(bare.copyOfRange(4, 8), Charsets.US_ASCII))
        assertNull(TfliteMetadata.readJson(bare))
        assertNull(TfliteMetadata.read(bare))
        assertArrayEquals(bare, TfliteMetadata.strip(bare))
        assertNull(TfliteMetadata.read(ByteArray(0)))
        assertNull(TfliteMetadata.read(fakeFlatbuffer(100)))
    }

    @Test
    fun archivesWithOffsetsFromTheirOwnStartAndDeflatedEntriesAreRead() {
        val flat = fakeFlatbuffer(5000)
        val data = demoJson.toByteArray(Charsets.UTF_8)
        for (deflate in listOf(false, true)) {
            val model = concat(flat, zipOf(TfliteMetadata.ENTRY, data, deflate))
            assertEquals(demoJson, TfliteMetadata.readJson(model))
            assertArrayEquals(flat, TfliteMetadata.strip(model))
            val meta = TfliteMetadata.read(model)!!
            assertEquals("demo", meta.modelName)
            assertEquals(QuantParams(0.018658447265625, -14), meta.inputQuantization)
        }
    }

    @Test
    fun anArchiveWithoutMetadataJsonIsNoMetadata() {
        val model = concat(fakeFlatbuffer(300), zipOf("other.txt", "x".toByteArray(Charsets.UTF_8), false))
        assertNull(TfliteMetadata.read(model))
    }

    @Test
    fun aDamagedArchiveGivesAClearError() {
        val bytes = File(Fixtures.models, "mobilenet_v2_int8.tflite").readBytes()
        val json = TfliteMetadata.readJson(bytes)!!.toByteArray(Charsets.UTF_8)
        val bareSize = TfliteMetadata.strip(bytes).size
        // one changed byte inside metadata.json: the CRC-32 no longer matches
        val flipped = bytes.copyOf()
        val at = indexOf(bytes, "\"model_name\"".toByteArray(Charsets.UTF_8), bareSize)
        assertTrue(at > bareSize)
        flipped[at + 1] = "X".toByteArray(Charsets.US_ASCII)[0]
        val crc = expectMetadataError("changed byte") { TfliteMetadata.read(flipped) }
        assertTrue(messageOf(crc), messageOf(crc).contains("CRC-32"))
        // the end of the file cut off: the archive lost its end-of-central-directory record
        val cutEnd = bytes.copyOf(bytes.size - 10)
        val e1 = expectMetadataError("cut end") { TfliteMetadata.read(cutEnd) }
        assertTrue(messageOf(e1), messageOf(e1).contains("corrupt or truncated"))
        // cut inside metadata.json
        val cutData = bytes.copyOf(bareSize + 30 + TfliteMetadata.ENTRY.length + json.size / 2)
        expectMetadataError("cut data") { TfliteMetadata.read(cutData) }
        // the end record points before the start of the file
        val badOffset = bytes.copyOf()
        val eocd = bytes.size - 22
        badOffset[eocd + 19] = 0x7f
        val e2 = expectMetadataError("bad offset") { TfliteMetadata.read(badOffset) }
        assertTrue(messageOf(e2), messageOf(e2).contains("metadata archive"))
    }

    @Test
    fun invalidJsonInsideTheArchiveGivesAClearError() {
        val model = concat(fakeFlatbuffer(64), zipOf(TfliteMetadata.ENTRY, "{\"model_name\": ".toByteArray(Charsets.UTF_8), false))
        val e = expectMetadataError("bad json") { TfliteMetadata.read(model) }
        assertTrue(messageOf(e), messageOf(e).contains("not valid JSON"))
    }

    @Test
    fun flatJsonWithDefaultsAndUnknownKeys() {
        val meta = ModelMetadata.fromJson(demoJson)
        assertEquals(listOf(28, 24), meta.inputSize)
        assertEquals("GRAY", meta.channelOrder)
        assertEquals("NHWC", meta.layout)
        assertEquals(QuantParams(0.00390625, -128), meta.outputQuantization)
        val minimal = ModelMetadata.fromJson("{\"model_name\": \"m\", \"labels\": [\"a\"], \"input_size\": [4, 5], \"channels\": 3}")
        assertEquals(listOf(127.5), minimal.mean)
        assertEquals(listOf(127.5), minimal.std)
        assertEquals("RGB", minimal.channelOrder)
        assertEquals("float32", minimal.inputDtype)
        assertEquals("probabilities", minimal.output)
        assertEquals(ModelMetadata.SCHEMA, minimal.schema)
        assertEquals(
            "m: 4x5x3 RGB, none (float32 in, float32 out), 1 classes",
            minimal.summary()
        )
    }

    @Test
    fun invalidMetadataIsRejectedWithTheKeyInTheMessage() {
        val base = "\"model_name\": \"m\", \"labels\": [\"a\"], \"input_size\": [4, 4], \"channels\": 3"
        val cases = listOf(
            "{\"model_name\": \"m\", \"labels\": [\"a\"]}" to "lacks channels, input_size",
            "{$base, \"std\": [0]}" to "std must not be 0",
            "{$base, \"mean\": [1, 2]}" to "mean has 2 values",
            "{\"model_name\": \"m\", \"labels\": [\"a\"], \"input_size\": \"32\", \"channels\": 3}" to "\"input_size\" must be an array",
            "{\"model_name\": \"m\", \"labels\": [\"a\"], \"input_size\": [4, 4], \"channels\": 2.5}" to "\"channels\" must be an integer",
            "{\"model_name\": \"m\", \"labels\": [1], \"input_size\": [4, 4], \"channels\": 3}" to "\"labels\" must be an array of strings",
            "{$base, \"input_dtype\": \"int8\"}" to "needs input_quantization",
            "{$base, \"input_dtype\": \"float16\"}" to "unsupported tensor dtype",
            "{$base, \"output\": \"scores\"}" to "output must be",
            "{$base, \"output_dtype\": \"uint8\", \"output_quantization\": {\"scale\": 0}}" to "output_quantization",
            "{$base" to "not valid JSON"
        )
        for ((text, expected) in cases) {
            val e = expectMetadataError(text) { ModelMetadata.fromJson(text, "model.json") }
            assertTrue("'${e.message}' should contain '$expected'", messageOf(e).contains(expected))
            assertTrue("'${e.message}' should name the file", messageOf(e).startsWith("model.json"))
        }
    }

    @Test
    fun exportFolderSidecarInBothForms() {
        val text = String(File(Fixtures.models, "model.json").readBytes(), Charsets.UTF_8)
        val model = ModelMetadata.fromSidecar(text)
        assertEquals("mobilenet_v2", model.modelName)
        assertEquals("keras", model.format)
        val labels = Labels.parse(String(File(Fixtures.models, "labels.txt").readBytes(), Charsets.UTF_8))
        assertEquals(labels, model.labels)
        // with a file name, that file's entries override (Python's read_metadata for a .keras file)
        val expected = Fixtures.obj(Fixtures.manifest["tflite_metadata"])
        for (name in expected.keys) {
            val merged = ModelMetadata.fromSidecar(text, name)
            assertEquals(name, ModelMetadata.fromMap(Fixtures.obj(expected[name])), merged)
        }
        expectMetadataError("unknown file") { ModelMetadata.fromSidecar(text, "nope.tflite") }
        // the flat form, what kerascnn export --android installs as the asset model.json
        assertEquals(ModelMetadata.fromJson(demoJson), ModelMetadata.fromSidecar(demoJson))
    }

    @Test
    fun theAppsLookupPrefersEmbeddedMetadataThenModelJsonThenLabelsTxt() {
        val bytes = File(Fixtures.models, "mobilenet_v2_int8.tflite").readBytes()
        val embedded = MetadataResolver.resolve(ByteBuffer.wrap(bytes), demoJson, "x\n")
        assertEquals("embedded in model.tflite", embedded.origin)
        assertEquals("mobilenet_v2", embedded.metadata.modelName)

        val bare = ByteBuffer.wrap(TfliteMetadata.strip(bytes))
        val sidecar = MetadataResolver.resolve(bare, demoJson, "x\n")
        assertEquals("model.json", sidecar.origin)
        assertEquals(listOf("T-shirt/top", "Ankle boot"), sidecar.metadata.labels)

        val noLabels = "{\"model_name\": \"m\", \"input_size\": [32, 32], \"channels\": 3}"
        val withTxt = MetadataResolver.resolve(bare, noLabels, "cat\r\ndog\r\n")
        assertEquals("model.json + labels.txt", withTxt.origin)
        assertEquals(listOf("cat", "dog"), withTxt.metadata.labels)

        val exportForm = String(File(Fixtures.models, "model.json").readBytes(), Charsets.UTF_8)
        assertEquals("mobilenet_v2", MetadataResolver.resolve(bare, exportForm, null).metadata.modelName)

        val none = expectMetadataError("no metadata") { MetadataResolver.resolve(bare, null, "a\n") }
        assertTrue(messageOf(none), messageOf(none).contains("no embedded metadata"))
        expectMetadataError("no labels") { MetadataResolver.resolve(bare, noLabels, null) }
    }
}
