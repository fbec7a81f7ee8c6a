package dev.kerascnn.core

import java.nio.ByteBuffer

/** Metadata that is missing, malformed or inconsistent; the message says what and where. */
open class MetadataException(message: String, cause: Throwable? = null) : IllegalArgumentException(message, cause)

/**
 * A model that carries no metadata the app can use (neither the standard TFLite Metadata with its
 * labels nor kerascnn's `metadata.json`): the message says what is missing and how to add it.
 */
class MissingMetadataException(message: String) : MetadataException(message)

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
    val schema: String = SCHEMA,
    /** The model's version (kerascnn: the first 16 hex digits of the weights' sha256); "" when unknown. */
    val modelVersion: String = ""
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
                    schema = r.stringOr("schema", SCHEMA),
                    modelVersion = r.stringOr("model_version", "")
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
 * kerascnn's own `metadata.json`, packed in the ZIP archive that `kerascnn export` appends to a
 * `.tflite` (see [PackedFiles]), next to the `labels.txt` that the standard TFLite Metadata names.
 * [read] is null when the file has no such entry; a damaged archive is a [MetadataException].
 * [ModelConfig.read] is what the app uses: it combines this with the standard TFLite Metadata.
 */
object TfliteMetadata {
    const val ENTRY = "metadata.json"

    /** The metadata embedded in [model] (a `.tflite` file's bytes), or null when it has none. */
    fun read(model: ByteArray): ModelMetadata? = read(ByteBuffer.wrap(model))

    /** As [read] for a buffer (e.g. the memory-mapped asset given to the Interpreter; not moved). */
    fun read(model: ByteBuffer): ModelMetadata? {
        val json = readJson(model) ?: return null
        return ModelMetadata.fromJson(json, "the .tflite's embedded $ENTRY")
    }

    /** The text of the embedded `metadata.json`, or null when the file has no such archive entry. */
    fun readJson(model: ByteArray): String? = readJson(ByteBuffer.wrap(model))

    fun readJson(model: ByteBuffer): String? = PackedFiles.read(model)?.text(ENTRY)

    /** [model] without an appended archive (the flatbuffer alone); unchanged when it has none. */
    fun strip(model: ByteArray): ByteArray {
        val packed = PackedFiles.read(ByteBuffer.wrap(model)) ?: return model
        return model.copyOfRange(0, packed.start)
    }
}
