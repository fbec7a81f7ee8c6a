package dev.kerascnn.core

import java.nio.ByteBuffer

/**
 * Everything the app needs to run a `.tflite`, read from the file's own bytes:
 *
 * - the input and output tensors (shape, type, quantization) from the TFLite flatbuffer itself;
 * - the standard TFLite Metadata ([standard]; the `TFLITE_METADATA` entry, what MediaPipe Tasks reads):
 *   color space, normalization, and the labels from the file its output names (`TENSOR_AXIS_LABELS`),
 *   packed in the archive appended to the file;
 * - kerascnn's own `metadata.json` ([kerascnn]) when it is packed too: it adds what the standard
 *   metadata has no field for (channel order, output kind, quantization recipe, source, versions).
 *
 * [metadata] is the result the preprocessing and postprocessing take ([Preprocess.prepare],
 * [Postprocess.scores]); its tensor types and quantization are the flatbuffer's. A file made elsewhere
 * (MediaPipe Model Maker, the metadata writers: standard metadata only) is fully usable; a kerascnn
 * export from before the standard metadata (`metadata.json` only) too.
 */
class ModelConfig(
    val metadata: ModelMetadata,
    val standard: StandardMetadata?,
    val kerascnn: ModelMetadata?,
    val input: TensorInfo,
    val output: TensorInfo,
    /** The names of the files packed after the flatbuffer (empty when there is no archive). */
    val packedFiles: List<String>
) {
    /** Where the configuration came from: "TFLite Metadata + metadata.json", "TFLite Metadata" or "metadata.json". */
    val sources: String
        get() = when {
            standard != null && kerascnn != null -> "TFLite Metadata + ${TfliteMetadata.ENTRY}"
            standard != null -> "TFLite Metadata"
            else -> TfliteMetadata.ENTRY
        }

    /** The model's name: the standard metadata's, else metadata.json's. */
    val name: String
        get() {
            val s = standard?.name
            return if (s != null && s.length > 0) s else metadata.modelName
        }

    /** The model's version: the standard metadata's, else metadata.json's ("" when neither has one). */
    val version: String
        get() {
            val s = standard?.version
            return if (s != null && s.length > 0) s else metadata.modelVersion
        }

    /** The standard metadata's author ("" when there is none). */
    val author: String get() = standard?.author ?: ""

    companion object {
        /** How to give a model the metadata the app needs (the end of the "no metadata" errors). */
        const val HOW_TO_FIX =
            "export it with `kerascnn export RUN --android mobile_demo/android` (which writes the standard " +
                "TFLite Metadata, labels.txt and metadata.json into the .tflite), or add TFLite Metadata with " +
                "labels and normalization with MediaPipe's metadata writer (mediapipe.tasks.python.metadata." +
                "metadata_writers.image_classifier.MetadataWriter.create(model, input_norm_mean, input_norm_std, " +
                "labels).populate())"

        fun read(model: ByteArray, where: String = "model.tflite"): ModelConfig = read(ByteBuffer.wrap(model), where)

        /**
         * The configuration of [model] (a `.tflite` file's bytes, e.g. the memory-mapped asset; not
         * moved). Throws a [MissingMetadataException] when the file carries no usable metadata, and a
         * [MetadataException] naming the field when it is damaged or inconsistent: the standard
         * metadata and metadata.json disagree (labels, mean, std), or either disagrees with the tensors
         * (size, channels, color space, types, quantization, number of classes).
         */
        fun read(model: ByteBuffer, where: String = "model.tflite"): ModelConfig {
            val tflite = TfliteModel.read(model, where)
            val buffer = tflite.metadataBuffer(MetadataSchema.METADATA_NAME)
            val bare = if (buffer == null) null else {
                StandardMetadata.fromJson(MetadataSchema.decode(buffer, "the TFLite Metadata of $where"), where)
            }
            val labelsFile = bare?.labelsFile
            val expected = ArrayList<String>()
            expected.add(TfliteMetadata.ENTRY)
            if (labelsFile != null) expected.add(labelsFile)
            val packed = PackedFiles.read(model, expected)
            val labelsText = if (labelsFile != null && packed != null) packed.text(labelsFile) else null
            val standard = if (bare == null) null else {
                bare.copy(labels = if (labelsText == null) null else Labels.parse(labelsText))
            }
            val jsonText = packed?.text(TfliteMetadata.ENTRY)
            val kerascnn = if (jsonText == null) null else {
                ModelMetadata.fromJson(jsonText, "$where's embedded ${TfliteMetadata.ENTRY}")
            }
            val names = packed?.names ?: emptyList<String>()

            val metadata = when {
                standard == null && kerascnn == null -> throw MissingMetadataException(
                    "$where has no metadata: neither the standard TFLite Metadata (a ${MetadataSchema.METADATA_NAME} " +
                        "entry in the flatbuffer) nor kerascnn's ${TfliteMetadata.ENTRY}" +
                        (if (names.isEmpty()) "" else " (packed files: ${names.joinToString(", ")})") +
                        ". To fix: $HOW_TO_FIX"
                )
                kerascnn == null -> fromStandard(standard!!, tflite, where, packed != null)
                else -> fromKerascnn(kerascnn, standard, tflite, where)
            }
            checkClasses(metadata, tflite.output, where, if (kerascnn == null) labelsFile ?: "" else TfliteMetadata.ENTRY)
            return ModelConfig(metadata, standard, kerascnn, tflite.input, tflite.output, names)
        }

        /** [height, width, channels] of an image input `[1, H, W, C]`. */
        private fun imageShape(input: TensorInfo, where: String): IntArray {
            val s = input.shape
            if (s.size != 4 || s[0] != 1 || s[1] <= 0 || s[2] <= 0 || s[3] <= 0) {
                throw MetadataException("$where: the input tensor's shape is $s, not an image [1, height, width, channels]")
            }
            return intArrayOf(s[1], s[2], s[3])
        }

        /** The standard metadata's image properties against the input tensor. */
        private fun checkImage(standard: StandardMetadata, hwc: IntArray, where: String) {
            val space = standard.input.colorSpace
            if ((space == "RGB" && hwc[2] != 3) || (space == "GRAYSCALE" && hwc[2] != 1)) {
                throw MetadataException(
                    "$where: the TFLite Metadata's color_space is $space, but the input tensor has ${hwc[2]} channel(s)"
                )
            }
            val size = standard.input.defaultSize
            if (size != null && (size[0] != hwc[1] || size[1] != hwc[0])) {
                throw MetadataException(
                    "$where: the TFLite Metadata's default_size is ${size[0]}x${size[1]} (width x height), but the " +
                        "input tensor is ${hwc[1]}x${hwc[0]}"
                )
            }
        }

        private fun fromStandard(standard: StandardMetadata, tflite: TfliteModel, where: String, hasArchive: Boolean): ModelMetadata {
            val labelsFile = standard.labelsFile ?: throw MissingMetadataException(
                "$where: its TFLite Metadata names no labels file (an associated file of type TENSOR_AXIS_LABELS " +
                    "on the output tensor) and it has no ${TfliteMetadata.ENTRY}. To fix: $HOW_TO_FIX"
            )
            val labels = standard.labels ?: throw MissingMetadataException(
                "$where: its TFLite Metadata names $labelsFile as the output's labels, but that file is not packed " +
                    "in the model (" +
                    (if (hasArchive) "the ZIP archive after the flatbuffer has no such entry" else
                        "there is no ZIP archive after the flatbuffer: the file may be truncated, or was rewritten " +
                            "by a tool that drops the packed files") +
                    "). To fix: $HOW_TO_FIX"
            )
            val hwc = imageShape(tflite.input, where)
            checkImage(standard, hwc, where)
            var mean = standard.input.mean ?: listOf(0.0)
            var std = standard.input.std ?: listOf(1.0)
            var inputQuant = tflite.input.quantization
            if (tflite.input.dtype == "uint8" && inputQuant == null) {
                // a uint8 input without quantization parameters takes the pixels as they are (as MediaPipe does)
                mean = listOf(0.0)
                std = listOf(1.0)
                inputQuant = QuantParams(1.0, 0)
            }
            try {
                return ModelMetadata(
                    modelName = if (standard.name.length > 0) standard.name else "model",
                    labels = labels,
                    inputSize = listOf(hwc[0], hwc[1]),
                    channels = hwc[2],
                    mean = mean,
                    std = std,
                    output = if (standard.output.name.contains("logit", true)) "logits" else "probabilities",
                    format = "tflite",
                    inputDtype = tflite.input.dtype,
                    outputDtype = tflite.output.dtype,
                    inputQuantization = inputQuant,
                    outputQuantization = tflite.output.quantization,
                    modelVersion = standard.version
                )
            } catch (e: MetadataException) {
                throw MetadataException("$where (TFLite Metadata): ${e.message ?: ""}", e)
            }
        }

        private fun sameQuant(a: QuantParams?, b: QuantParams?): Boolean {
            if (a == null || b == null) return a == b
            return a.zeroPoint == b.zeroPoint && a.scale.toFloat() == b.scale.toFloat()
        }

        /** Normalization values per channel (one value stands for all), as float32 like the preprocessing. */
        private fun perChannel(values: List<Double>, channels: Int): List<Float> {
            val out = ArrayList<Float>()
            for (c in 0 until channels) out.add((if (values.size == 1) values[0] else values[c]).toFloat())
            return out
        }

        private fun fromKerascnn(json: ModelMetadata, standard: StandardMetadata?, tflite: TfliteModel, where: String): ModelMetadata {
            val hwc = imageShape(tflite.input, where)
            val file = "$where's ${TfliteMetadata.ENTRY}"
            fun disagree(field: String, said: Any?, actual: Any?): Nothing =
                throw MetadataException("$file says $field = $said, but the model's $actual")
            if (json.inputHeight != hwc[0] || json.inputWidth != hwc[1]) {
                disagree("input_size", json.inputSize, "input tensor is ${tflite.input.shape}")
            }
            if (json.channels != hwc[2]) disagree("channels", json.channels, "input tensor is ${tflite.input.shape}")
            if (json.inputDtype != tflite.input.dtype) disagree("input_dtype", json.inputDtype, "input tensor is ${tflite.input.dtype}")
            if (!sameQuant(json.inputQuantization, tflite.input.quantization)) {
                disagree("input_quantization", json.inputQuantization, "input tensor has ${tflite.input.quantization}")
            }
            if (json.outputDtype != tflite.output.dtype) disagree("output_dtype", json.outputDtype, "output tensor is ${tflite.output.dtype}")
            if (!sameQuant(json.outputQuantization, tflite.output.quantization)) {
                disagree("output_quantization", json.outputQuantization, "output tensor has ${tflite.output.quantization}")
            }
            var version = json.modelVersion
            if (standard != null) {
                checkImage(standard, hwc, where)
                val labels = standard.labels
                if (labels != null && labels != json.labels) {
                    var i = 0
                    while (i < labels.size && i < json.labels.size && labels[i] == json.labels[i]) i++
                    val detail = if (labels.size != json.labels.size) {
                        "${standard.labelsFile} has ${labels.size} labels, ${TfliteMetadata.ENTRY} ${json.labels.size}"
                    } else {
                        "label $i is '${labels[i]}' in ${standard.labelsFile}, '${json.labels[i]}' in ${TfliteMetadata.ENTRY}"
                    }
                    throw MetadataException("$where: the TFLite Metadata and ${TfliteMetadata.ENTRY} disagree on labels: $detail")
                }
                val mean = standard.input.mean
                val std = standard.input.std
                if (mean != null && std != null) {
                    for (pair in listOf(Triple("mean", mean, json.mean), Triple("std", std, json.std))) {
                        val ok = (pair.second.size == 1 || pair.second.size == hwc[2]) &&
                            perChannel(pair.second, hwc[2]) == perChannel(pair.third, hwc[2])
                        if (!ok) {
                            throw MetadataException(
                                "$where: the TFLite Metadata and ${TfliteMetadata.ENTRY} disagree on the normalization " +
                                    "${pair.first}: ${pair.second} in NormalizationOptions, ${pair.third} in ${TfliteMetadata.ENTRY}"
                            )
                        }
                    }
                }
                if (version.length == 0) version = standard.version
            }
            return json.copy(
                inputQuantization = tflite.input.quantization,
                outputQuantization = tflite.output.quantization,
                modelVersion = version
            )
        }

        /** The labels must match the output tensor's number of classes (its last dimension). */
        private fun checkClasses(meta: ModelMetadata, output: TensorInfo, where: String, labelsSource: String) {
            val shape = output.shape
            if (shape.isEmpty()) return
            var classes = 1L
            for (d in shape) classes *= d
            if (classes > 0 && classes != meta.labels.size.toLong()) {
                throw MetadataException(
                    "$where: ${meta.labels.size} labels (from $labelsSource) but the output tensor has $classes " +
                        "classes (shape $shape)"
                )
            }
        }
    }
}

/** Where the app's metadata came from, for the UI; [config] when it came from the model itself. */
class ResolvedMetadata(val metadata: ModelMetadata, val origin: String, val config: ModelConfig? = null) {
    /** The model's name (the standard metadata's when there is one). */
    val name: String get() = config?.name ?: metadata.modelName

    /** The model's version, "" when unknown. */
    val version: String get() = config?.version ?: metadata.modelVersion

    /** e.g. "TFLite Metadata + metadata.json, embedded in model.tflite", or "model.json + labels.txt". */
    fun describe(): String = if (config != null) "${config.sources}, $origin" else origin
}

/**
 * The app's lookup, given its assets: the metadata in `model.tflite` itself first ([ModelConfig]: the
 * standard TFLite Metadata and kerascnn's packed metadata.json); only when the model carries none (or
 * its standard metadata's labels file is not packed), the sidecar `model.json` (flat or export-folder
 * form), with labels from `labels.txt` when it has none. A model whose metadata is damaged or
 * inconsistent is an error, not a reason to use the sidecars.
 */
object MetadataResolver {
    const val EMBEDDED = "embedded in model.tflite"

    fun resolve(model: ByteBuffer, modelJson: String?, labelsTxt: String?): ResolvedMetadata {
        val missing = try {
            val config = ModelConfig.read(model, "model.tflite")
            return ResolvedMetadata(config.metadata, EMBEDDED, config)
        } catch (e: MissingMetadataException) {
            e
        }
        if (modelJson == null) {
            throw MissingMetadataException(
                "model.tflite has no embedded metadata the app can use and there is no model.json asset: " +
                    (missing.message ?: "")
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
