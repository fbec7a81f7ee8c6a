package dev.kerascnn.core

import java.nio.ByteBuffer
import java.nio.charset.CharacterCodingException
import java.nio.charset.CodingErrorAction
import java.util.zip.CRC32
import java.util.zip.DataFormatException
import java.util.zip.Inflater

/** Metadata that is missing, malformed or inconsistent; the message says what and where. */
class MetadataException(message: String, cause: Throwable? = null) : IllegalArgumentException(message, cause)

/** Quantization of an int8/uint8 tensor: `real = (q - zeroPoint) * scale`. */
data class QuantParams(val scale: Double, val zeroPoint: Int)

/**
 * What `kerascnn export` writes about a model (Python: `export/metadata.py::ModelMetadata`, schema
 * `kerascnn.metadata/1`): labels, input size, channels, normalization and the tensors' quantization.
 * The app computes `(pixel - mean) / std` per channel on 0-255 pixels, then, for an int8/uint8 input,
 * `round_half_even(x / scale) + zeroPoint`.
 */
data class ModelMetadata(
    val modelName: String,
    val labels: List<String>,
    /** [height, width] */
    val inputSize: List<Int>,
    val channels: Int,
    val mean: List<Double> = listOf(127.5),
    val std: List<Double> = listOf(127.5),
    val channelOrder: String = if (channels == 1) "GRAY" else "RGB",
    val layout: String = "NHWC",
    /** "probabilities" or "logits" */
    val output: String = "probabilities",
    val format: String = "keras",
    val quantization: String = "none",
    val inputDtype: String = "float32",
    val outputDtype: String = "float32",
    val inputQuantization: QuantParams? = null,
    val outputQuantization: QuantParams? = null,
    val source: String = "",
    val kerascnnVersion: String = "",
    val schema: String = SCHEMA
) {
    init {
        if (inputSize.size != 2 || inputSize[0] <= 0 || inputSize[1] <= 0) {
            throw MetadataException("input_size must be [height, width] > 0, got $inputSize")
        }
        if (channels <= 0) throw MetadataException("channels must be > 0, got $channels")
        for (s in std) {
            if (s == 0.0) throw MetadataException("normalization std must not be 0, got $std")
        }
        checkLength("mean", mean)
        checkLength("std", std)
        for (dtype in listOf(inputDtype, outputDtype)) {
            if (dtype != "float32" && dtype != "int8" && dtype != "uint8") {
                throw MetadataException("unsupported tensor dtype '$dtype' (float32, int8 or uint8)")
            }
        }
        if (inputDtype != "float32" && inputQuantization == null) {
            throw MetadataException("an $inputDtype input needs input_quantization {scale, zero_point}")
        }
        if (outputDtype != "float32" && outputQuantization == null) {
            throw MetadataException("an $outputDtype output needs output_quantization {scale, zero_point}")
        }
        if (output != "probabilities" && output != "logits") {
            throw MetadataException("output must be 'probabilities' or 'logits', got '$output'")
        }
    }

    private fun checkLength(name: String, values: List<Double>) {
        if (values.size != 1 && values.size != channels) {
            throw MetadataException(
                "normalization $name has ${values.size} values for $channels channel(s)"
            )
        }
    }

    val inputHeight: Int get() = inputSize[0]
    val inputWidth: Int get() = inputSize[1]
    val numClasses: Int get() = labels.size

    /** One line for the UI, e.g. `mobilenet_v2: 32x32x3 RGB, int8 (float32 in, float32 out), 10 classes`. */
    fun summary(): String =
        "$modelName: ${inputHeight}x${inputWidth}x$channels $channelOrder, $quantization " +
            "($inputDtype in, $outputDtype out), ${labels.size} classes"

    companion object {
        const val SCHEMA = "kerascnn.metadata/1"

        /** The flat metadata object (the embedded `metadata.json`, the Android asset `model.json`). */
        fun fromJson(text: String, where: String = "metadata"): ModelMetadata {
            val raw = try {
                Json.parseObject(text)
            } catch (e: JsonException) {
                throw MetadataException("$where is not valid JSON: ${e.message}", e)
            }
            return fromMap(raw, where)
        }

        /**
         * From a parsed JSON object. Unknown keys are ignored and missing optional ones take the Python
         * defaults, as `ModelMetadata.from_dict` does.
         */
        fun fromMap(raw: Map<String, Any?>, where: String = "metadata"): ModelMetadata {
            val missing = ArrayList<String>()
            for (key in listOf("channels", "input_size", "labels", "model_name")) {
                if (!raw.containsKey(key)) missing.add(key)
            }
            if (missing.isNotEmpty()) {
                throw MetadataException("$where: metadata lacks ${missing.joinToString(", ")}")
            }
            val r = Reader(raw, where)
            val channels = r.int("channels")
            try {
                return ModelMetadata(
                    modelName = r.string("model_name"),
                    labels = r.stringList("labels"),
                    inputSize = r.intList("input_size"),
                    channels = channels,
                    mean = r.doubleList("mean", listOf(127.5)),
                    std = r.doubleList("std", listOf(127.5)),
                    channelOrder = r.stringOr("channel_order", if (channels == 1) "GRAY" else "RGB", true),
                    layout = r.stringOr("layout", "NHWC"),
                    output = r.stringOr("output", "probabilities"),
                    format = r.stringOr("format", "keras"),
                    quantization = r.stringOr("quantization", "none"),
                    inputDtype = r.stringOr("input_dtype", "float32"),
                    outputDtype = r.stringOr("output_dtype", "float32"),
                    inputQuantization = r.quant("input_quantization"),
                    outputQuantization = r.quant("output_quantization"),
                    source = r.stringOr("source", ""),
                    kerascnnVersion = r.stringOr("kerascnn_version", ""),
                    schema = r.stringOr("schema", SCHEMA)
                )
            } catch (e: MetadataException) {
                val message = e.message ?: ""
                if (message.startsWith(where)) throw e
                throw MetadataException("$where: $message", e)
            }
        }

        /**
         * A sidecar `model.json`: either the flat metadata object (what `--android` installs as an asset)
         * or an export folder's `{"model": {...}, "files": {name: {"metadata": {...}}}}`. With [fileName],
         * that file's own entries (format, quantization, tensor dtypes) override the model's, as Python's
         * `read_metadata` does for a Keras file.
         */
        fun fromSidecar(text: String, fileName: String? = null, where: String = "model.json"): ModelMetadata {
            val raw = try {
                Json.parseObject(text)
            } catch (e: JsonException) {
                throw MetadataException("$where is not valid JSON: ${e.message}", e)
            }
            val model = raw["model"]
            if (model !is Map<*, *> || raw.containsKey("labels")) return fromMap(raw, where)
            val merged = LinkedHashMap<String, Any?>()
            for ((k, v) in model) merged[k.toString()] = v
            if (fileName != null) {
                val files = raw["files"]
                val entry = if (files is Map<*, *>) files[fileName] else null
                if (entry !is Map<*, *>) throw MetadataException("$where: no entry for '$fileName' in \"files\"")
                val own = entry["metadata"]
                if (own is Map<*, *>) {
                    for ((k, v) in own) merged[k.toString()] = v
                }
            }
            return fromMap(merged, where)
        }
    }

    /** Typed access to a parsed JSON object with messages that name the key. */
    private class Reader(val raw: Map<String, Any?>, val where: String) {
        fun fail(key: String, expected: String): Nothing =
            throw MetadataException("$where: \"$key\" must be $expected, got ${Json.typeName(raw[key])}")

        fun string(key: String): String {
            val v = raw[key]
            return if (v is String) v else fail(key, "a string")
        }

        fun stringOr(key: String, default: String, emptyIsDefault: Boolean = false): String {
            if (!raw.containsKey(key) || raw[key] == null) return default
            val v = string(key)
            return if (emptyIsDefault && v.length == 0) default else v
        }

        fun int(key: String): Int {
            val v = raw[key]
            if (v is Double && v == Math.floor(v) && Math.abs(v) < 2147483648.0) return v.toInt()
            fail(key, "an integer")
        }

        fun list(key: String): List<*> {
            val v = raw[key]
            return if (v is List<*>) v else fail(key, "an array")
        }

        fun stringList(key: String): List<String> {
            val out = ArrayList<String>()
            for (item in list(key)) {
                if (item is String) out.add(item) else fail(key, "an array of strings")
            }
            return out
        }

        fun intList(key: String): List<Int> {
            val out = ArrayList<Int>()
            for (item in list(key)) {
                if (item is Double && item == Math.floor(item)) out.add(item.toInt()) else fail(key, "an array of integers")
            }
            return out
        }

        fun doubleList(key: String, default: List<Double>): List<Double> {
            if (!raw.containsKey(key) || raw[key] == null) return default
            val v = raw[key]
            if (v is Double) return listOf(v)
            val out = ArrayList<Double>()
            for (item in list(key)) {
                if (item is Double) out.add(item) else fail(key, "an array of numbers")
            }
            return out
        }

        fun quant(key: String): QuantParams? {
            val v = raw[key] ?: return null
            if (v !is Map<*, *>) fail(key, "null or {\"scale\": s, \"zero_point\": z}")
            val scale = v["scale"]
            val zero = v["zero_point"]
            if (scale !is Double || zero !is Double || zero != Math.floor(zero)) {
                fail(key, "{\"scale\": number, \"zero_point\": integer}")
            }
            if (!(scale > 0.0)) throw MetadataException("$where: \"$key\" scale must be > 0, got $scale")
            return QuantParams(scale, zero.toInt())
        }
    }
}

/** `labels.txt`: one label per line, in class-index order. */
object Labels {
    /**
     * Lines split at `\n`, `\r\n` or `\r`; a leading UTF-8 byte-order mark is dropped; blank
     * (whitespace-only) lines are skipped, so the final newline adds no empty label; spaces inside or
     * around a label are kept. The same as Python's `export.metadata.read_labels_txt`.
     */
    fun parse(text: String): List<String> {
        val out = ArrayList<String>()
        var start = if (text.startsWith("\uFEFF")) 1 else 0
        var i = start
        while (i <= text.length) {
            val end = i == text.length
            val c = if (end) '\n' else text[i]
            if (c == '\n' || c == '\r') {
                val line = text.substring(start, i)
                if (line.isNotBlank()) out.add(line)
                if (c == '\r' && i + 1 < text.length && text[i + 1] == '\n') i++
                start = i + 1
            }
            i++
        }
        return out
    }

    /** What Python's `labels_txt` writes: each label followed by `\n`. */
    fun format(labels: List<String>): String {
        val sb = StringBuilder()
        for (label in labels) sb.append(label).append('\n')
        return sb.toString()
    }
}

/**
 * The metadata `kerascnn export` appends to a `.tflite`: a ZIP archive (entry `metadata.json`, stored)
 * after the flatbuffer, which the TFLite runtime ignores. Found from the end of the file like any ZIP
 * reader does: the end-of-central-directory record, then the central directory entry, then its data.
 * Python's `zipfile` writes offsets counted from the start of the file when it appends to one;
 * other tools count them from the start of the archive. Both are handled: the archive's offset in the
 * file is `(eocd - cd_size) - cd_offset`, which is 0 for the first kind.
 */
object TfliteMetadata {
    const val ENTRY = "metadata.json"

    private const val EOCD_SIG = 0x06054b50
    private const val CEN_SIG = 0x02014b50
    private const val LOC_SIG = 0x04034b50
    private const val EOCD_LEN = 22
    private const val MAX_COMMENT = 65535

    /** The metadata embedded in [model] (a `.tflite` file's bytes), or null when it has none. */
    fun read(model: ByteArray): ModelMetadata? = read(ByteBuffer.wrap(model))

    /** As [read] for a buffer (e.g. the memory-mapped asset given to the Interpreter; not moved). */
    fun read(model: ByteBuffer): ModelMetadata? {
        val json = readJson(model) ?: return null
        return ModelMetadata.fromJson(json, "the .tflite's embedded $ENTRY")
    }

    /** The text of the embedded `metadata.json`, or null when the file has no such archive. */
    fun readJson(model: ByteArray): String? = readJson(ByteBuffer.wrap(model))

    fun readJson(model: ByteBuffer): String? {
        val entry = locate(model) ?: return null
        val raw = bytes(model, entry.dataStart, entry.compressedSize)
        val data = when (entry.method) {
            0 -> {
                if (entry.compressedSize != entry.size) corrupt("stored entry sizes differ")
                raw
            }
            8 -> inflate(raw, entry.size)
            else -> corrupt("$ENTRY uses compression method ${entry.method} (only stored or deflated)")
        }
        val crc = CRC32()
        crc.update(data, 0, data.size)
        if (crc.value != entry.crc) {
            corrupt("CRC-32 mismatch for $ENTRY (archive damaged)")
        }
        val decoder = Charsets.UTF_8.newDecoder()
            .onMalformedInput(CodingErrorAction.REPORT)
            .onUnmappableCharacter(CodingErrorAction.REPORT)
        try {
            return decoder.decode(ByteBuffer.wrap(data)).toString()
        } catch (e: CharacterCodingException) {
            throw MetadataException("embedded $ENTRY is not UTF-8 text", e)
        }
    }

    /** [model] without an appended metadata archive (the flatbuffer alone); unchanged when it has none. */
    fun strip(model: ByteArray): ByteArray {
        val entry = locate(ByteBuffer.wrap(model)) ?: return model
        return model.copyOfRange(0, entry.firstHeader)
    }

    /** [firstHeader]: where the archive's first local header is, the end of the flatbuffer. */
    private class Entry(
        val firstHeader: Int,
        val method: Int,
        val crc: Long,
        val compressedSize: Int,
        val size: Int,
        val dataStart: Int
    )

    private fun corrupt(what: String): Nothing =
        throw MetadataException("the .tflite's metadata archive is corrupt or truncated: $what")

    private fun u16(b: ByteBuffer, at: Int): Int = (b.get(at).toInt() and 0xFF) or ((b.get(at + 1).toInt() and 0xFF) shl 8)

    private fun u32(b: ByteBuffer, at: Int): Long =
        (u16(b, at).toLong()) or (u16(b, at + 2).toLong() shl 16)

    private fun sig(b: ByteBuffer, at: Int, value: Int): Boolean =
        at >= 0 && at + 4 <= b.limit() && u32(b, at) == (value.toLong() and 0xFFFFFFFFL)

    private fun bytes(b: ByteBuffer, at: Int, length: Int): ByteArray {
        if (at < 0 || length < 0 || at.toLong() + length > b.limit()) corrupt("data past the end of the file")
        val out = ByteArray(length)
        val view = b.duplicate()
        view.position(at)
        view.get(out, 0, length)
        return out
    }

    private fun inflate(raw: ByteArray, size: Int): ByteArray {
        val inflater = Inflater(true)
        try {
            inflater.setInput(raw)
            val out = ByteArray(size)
            var n = 0
            while (n < size) {
                val got = inflater.inflate(out, n, size - n)
                if (got == 0 && (inflater.finished() || inflater.needsInput() || inflater.needsDictionary())) break
                n += got
            }
            if (n != size) corrupt("deflated $ENTRY is shorter than its recorded size")
            return out
        } catch (e: DataFormatException) {
            throw MetadataException("the .tflite's metadata archive is corrupt: bad deflate data", e)
        } finally {
            inflater.end()
        }
    }

    private fun findEocd(b: ByteBuffer): Int {
        val n = b.limit()
        var i = n - EOCD_LEN
        val stop = Math.max(0, n - EOCD_LEN - MAX_COMMENT)
        while (i >= stop) {
            if (sig(b, i, EOCD_SIG) && i + EOCD_LEN + u16(b, i + 20) == n) return i
            i--
        }
        return -1
    }

    /** A local header of [ENTRY] near the end of the file: the archive is there but lost its end. */
    private fun hasOrphanEntry(b: ByteBuffer): Boolean {
        val name = ENTRY.toByteArray(Charsets.UTF_8)
        val n = b.limit()
        var i = n - 30 - name.size
        val stop = Math.max(0, n - (1 shl 20))
        while (i >= stop) {
            if (sig(b, i, LOC_SIG) && u16(b, i + 26) == name.size) {
                var same = true
                for (j in name.indices) {
                    if (b.get(i + 30 + j) != name[j]) {
                        same = false
                        break
                    }
                }
                if (same) return true
            }
            i--
        }
        return false
    }

    private fun locate(b: ByteBuffer): Entry? {
        val eocd = findEocd(b)
        if (eocd < 0) {
            if (hasOrphanEntry(b)) corrupt("a $ENTRY entry but no end-of-central-directory record")
            return null
        }
        val entries = u16(b, eocd + 10)
        val cdSize = u32(b, eocd + 12)
        val cdOffset = u32(b, eocd + 16)
        if (cdSize == 0xFFFFFFFFL || cdOffset == 0xFFFFFFFFL || entries == 0xFFFF) corrupt("ZIP64 is not supported")
        val cdStart = eocd - cdSize
        val archiveStart = cdStart - cdOffset
        if (cdStart < 0 || archiveStart < 0) corrupt("central directory outside the file")
        var at = cdStart.toInt()
        var firstHeader = Long.MAX_VALUE
        var found: Entry? = null
        for (k in 0 until entries) {
            if (!sig(b, at, CEN_SIG) || at + 46 > eocd) corrupt("bad central directory entry $k")
            val method = u16(b, at + 10)
            val crc = u32(b, at + 16)
            val compressed = u32(b, at + 20)
            val size = u32(b, at + 24)
            val nameLen = u16(b, at + 28)
            val extraLen = u16(b, at + 30)
            val commentLen = u16(b, at + 32)
            val local = archiveStart + u32(b, at + 42)
            if (at + 46 + nameLen > eocd) corrupt("central directory entry $k runs past its end")
            if (local > Int.MAX_VALUE || !sig(b, local.toInt(), LOC_SIG)) corrupt("no local header for entry $k")
            if (local < firstHeader) firstHeader = local
            val name = String(bytes(b, at + 46, nameLen), Charsets.UTF_8)
            if (name == ENTRY && found == null) {
                val l = local.toInt()
                if (u16(b, l + 8) != method) corrupt("local and central headers of $ENTRY disagree")
                val dataStart = l + 30 + u16(b, l + 26) + u16(b, l + 28)
                if (compressed > Int.MAX_VALUE || size > (64 shl 20)) corrupt("$ENTRY too large")
                if (dataStart + compressed > cdStart) corrupt("$ENTRY data overlaps the central directory")
                found = Entry(0, method, crc, compressed.toInt(), size.toInt(), dataStart)
            }
            at += 46 + nameLen + extraLen + commentLen
        }
        if (found == null) return null
        return Entry(firstHeader.toInt(), found.method, found.crc, found.compressedSize, found.size, found.dataStart)
    }
}

/** Where the app's metadata came from, for the UI. */
class ResolvedMetadata(val metadata: ModelMetadata, val origin: String)

/**
 * The app's lookup, given its assets: the metadata embedded in `model.tflite` first; else the sidecar
 * `model.json` (flat or export-folder form), with labels from `labels.txt` when it has none.
 */
object MetadataResolver {
    fun resolve(model: ByteBuffer, modelJson: String?, labelsTxt: String?): ResolvedMetadata {
        val embedded = TfliteMetadata.read(model)
        if (embedded != null) return ResolvedMetadata(embedded, "embedded in model.tflite")
        if (modelJson == null) {
            throw MetadataException(
                "model.tflite has no embedded metadata and there is no model.json asset: " +
                    "export it with kerascnn export ... --android"
            )
        }
        val raw = try {
            Json.parseObject(modelJson)
        } catch (e: JsonException) {
            throw MetadataException("model.json is not valid JSON: ${e.message}", e)
        }
        val nested = raw["model"]
        val body = LinkedHashMap<String, Any?>()
        if (nested is Map<*, *> && !raw.containsKey("labels")) {
            for ((k, v) in nested) body[k.toString()] = v
        } else {
            body.putAll(raw)
        }
        if (!body.containsKey("labels") && labelsTxt != null) {
            body["labels"] = Labels.parse(labelsTxt)
            return ResolvedMetadata(ModelMetadata.fromMap(body, "model.json"), "model.json + labels.txt")
        }
        return ResolvedMetadata(ModelMetadata.fromMap(body, "model.json"), "model.json")
    }
}
