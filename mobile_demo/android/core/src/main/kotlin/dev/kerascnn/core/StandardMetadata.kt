package dev.kerascnn.core

import java.nio.ByteBuffer

/**
 * The standard TFLite Metadata schema (`metadata_schema.fbs`, file identifier `M001`), the tables an
 * image classifier uses, as `export/tflite_metadata.py` declares them: each table's fields in schema
 * order (a field's slot is its position; a union takes two slots, `<name>_type` then the value). A
 * field not declared here (a newer schema's) is skipped, as any FlatBuffers reader skips it.
 *
 * [decode] gives the JSON form of the schema's own displayer (flatc's): unions as `<name>_type`
 * (member name) and `<name>`, the enums `color_space` and `AssociatedFile.type` by name, numbers as
 * Double like [Json] gives them, absent fields left out.
 */
object MetadataSchema {
    const val FILE_IDENTIFIER = "M001"
    /** The name of the `Model.metadata` entry whose buffer holds the TFLite Metadata. */
    const val METADATA_NAME = "TFLITE_METADATA"

    /** Enum names by value. */
    val ASSOCIATED_FILE_TYPE = listOf("UNKNOWN", "DESCRIPTIONS", "TENSOR_AXIS_LABELS", "TENSOR_VALUE_LABELS")
    val COLOR_SPACE = listOf("UNKNOWN", "RGB", "GRAYSCALE")
    const val TENSOR_AXIS_LABELS = 2

    /** Union members in declaration order (type value = index + 1; 0 is NONE). */
    val UNIONS: Map<String, List<String>> = mapOf(
        "ContentProperties" to listOf("FeatureProperties", "ImageProperties", "BoundingBoxProperties", "AudioProperties"),
        "ProcessUnitOptions" to listOf(
            "NormalizationOptions", "ScoreCalibrationOptions", "ScoreThresholdingOptions",
            "BertTokenizerOptions", "SentencePieceTokenizerOptions", "RegexTokenizerOptions"
        )
    )

    /**
     * Tables: (field, kind) in schema order. Kinds: str, [str], [float], [uint], byte, ubyte, int, uint,
     * float, a table name, [table name], union:<Union> (the slot before it holds the union's type).
     */
    val TABLES: Map<String, List<Pair<String, String>>> = mapOf(
        "ModelMetadata" to listOf(
            "name" to "str", "description" to "str", "version" to "str",
            "subgraph_metadata" to "[SubGraphMetadata]", "author" to "str", "license" to "str",
            "associated_files" to "[AssociatedFile]", "min_parser_version" to "str"
        ),
        "SubGraphMetadata" to listOf(
            "name" to "str", "description" to "str",
            "input_tensor_metadata" to "[TensorMetadata]", "output_tensor_metadata" to "[TensorMetadata]",
            "associated_files" to "[AssociatedFile]",
            "input_process_units" to "[ProcessUnit]", "output_process_units" to "[ProcessUnit]"
        ),
        "TensorMetadata" to listOf(
            "name" to "str", "description" to "str", "dimension_names" to "[str]", "content" to "Content",
            "process_units" to "[ProcessUnit]", "stats" to "Stats", "associated_files" to "[AssociatedFile]"
        ),
        "Content" to listOf(
            "content_properties_type" to "ubyte", "content_properties" to "union:ContentProperties",
            "range" to "ValueRange"
        ),
        "FeatureProperties" to listOf<Pair<String, String>>(),
        "ImageProperties" to listOf("color_space" to "byte", "default_size" to "ImageSize"),
        "ImageSize" to listOf("width" to "uint", "height" to "uint"),
        "BoundingBoxProperties" to listOf("index" to "[uint]", "type" to "byte", "coordinate_type" to "byte"),
        "AudioProperties" to listOf("sample_rate" to "uint", "channels" to "uint"),
        "ValueRange" to listOf("min" to "int", "max" to "int"),
        "ProcessUnit" to listOf("options_type" to "ubyte", "options" to "union:ProcessUnitOptions"),
        "NormalizationOptions" to listOf("mean" to "[float]", "std" to "[float]"),
        "ScoreCalibrationOptions" to listOf("score_transformation" to "byte", "default_score" to "float"),
        "ScoreThresholdingOptions" to listOf("global_score_threshold" to "float"),
        "BertTokenizerOptions" to listOf("vocab_file" to "[AssociatedFile]"),
        "SentencePieceTokenizerOptions" to listOf(
            "sentencePiece_model" to "[AssociatedFile]", "vocab_file" to "[AssociatedFile]"
        ),
        "RegexTokenizerOptions" to listOf("delim_regex_pattern" to "str", "vocab_file" to "[AssociatedFile]"),
        "Stats" to listOf("max" to "[float]", "min" to "[float]"),
        "AssociatedFile" to listOf(
            "name" to "str", "description" to "str", "type" to "byte", "locale" to "str", "version" to "str"
        )
    )

    /** Enums shown by name: (table, field) -> names by value. */
    private val ENUMS: Map<String, List<String>> = mapOf(
        "ImageProperties.color_space" to COLOR_SPACE,
        "AssociatedFile.type" to ASSOCIATED_FILE_TYPE
    )

    /** The TFLite Metadata buffer [data] (identifier M001) -> its flatc-style JSON object. */
    fun decode(data: ByteBuffer, where: String = "the TFLite Metadata"): Map<String, Any?> {
        val fb = FlatBuffer(data, where)
        return decodeTable(fb.root(FILE_IDENTIFIER, "ModelMetadata"), "ModelMetadata")
    }

    private fun decodeTable(t: FlatTable, table: String): Map<String, Any?> {
        val fields = TABLES[table] ?: throw IllegalStateException("no table $table")
        val out = LinkedHashMap<String, Any?>()
        val types = HashMap<Int, Int>()
        for (slot in fields.indices) {
            val name = fields[slot].first
            val kind = fields[slot].second
            if (!t.has(slot)) continue
            when {
                kind == "str" -> out[name] = t.string(slot, name)
                kind == "[str]" -> out[name] = t.strings(slot, name)
                kind == "[float]" -> {
                    val list = ArrayList<Any?>()
                    for (v in t.f32s(slot, name) ?: FloatArray(0)) list.add(v.toDouble())
                    out[name] = list
                }
                kind == "[uint]" -> {
                    val list = ArrayList<Any?>()
                    for (v in t.u32s(slot, name) ?: LongArray(0)) list.add(v.toDouble())
                    out[name] = list
                }
                kind.startsWith("union:") -> {
                    val members = UNIONS[kind.substring(6)] ?: throw IllegalStateException("no union $kind")
                    val member = types[slot - 1] ?: 0
                    val value = t.table(slot, name)
                    if (member >= 1 && member <= members.size && value != null) {
                        val memberName = members[member - 1]
                        out[name + "_type"] = memberName
                        out[name] = decodeTable(value, memberName)
                    }
                }
                kind.startsWith("[") -> {
                    val list = ArrayList<Any?>()
                    for (item in t.tables(slot, name) ?: emptyList<FlatTable>()) {
                        list.add(decodeTable(item, kind.substring(1, kind.length - 1)))
                    }
                    out[name] = list
                }
                TABLES.containsKey(kind) -> {
                    val value = t.table(slot, name)
                    if (value != null) out[name] = decodeTable(value, kind)
                }
                else -> {
                    val value: Number = when (kind) {
                        "byte" -> t.i8(slot, 0, name)
                        "ubyte" -> t.u8(slot, 0, name)
                        "int" -> t.i32(slot, 0, name)
                        "uint" -> t.u32(slot, 0, name)
                        "float" -> t.f32(slot, 0f, name)
                        else -> throw IllegalStateException("unknown kind $kind")
                    }
                    types[slot] = value.toInt()
                    if (!name.endsWith("_type")) {
                        val names = ENUMS["$table.$name"]
                        val i = value.toInt()
                        out[name] = if (names != null && i >= 0 && i < names.size) names[i] else value.toDouble()
                    }
                }
            }
        }
        return out
    }
}

/** An associated file the metadata names (`type`: UNKNOWN, DESCRIPTIONS, TENSOR_AXIS_LABELS, ...). */
data class AssociatedFile(
    val name: String,
    val type: String = "UNKNOWN",
    val description: String = "",
    val locale: String = ""
)

/** One tensor's standard metadata, the parts an image classifier uses. */
data class StandardTensorMetadata(
    val name: String,
    val description: String,
    /** The content's union member: "ImageProperties", "FeatureProperties", ... (null when absent). */
    val contentType: String?,
    /** ImageProperties.color_space: "RGB", "GRAYSCALE", "UNKNOWN" (null when not an image). */
    val colorSpace: String?,
    /** ImageProperties.default_size: [width, height] (null when absent). */
    val defaultSize: List<Int>?,
    /** NormalizationOptions (pixel units for an image input), null when the tensor has none. */
    val mean: List<Double>?,
    val std: List<Double>?,
    /** Stats: per-channel range of the tensor's values, null when absent. */
    val statsMin: List<Double>?,
    val statsMax: List<Double>?,
    val associatedFiles: List<AssociatedFile>
) {
    /** The first TENSOR_AXIS_LABELS file (the class labels of a classifier's output), or null. */
    val labelsFile: String?
        get() {
            for (f in associatedFiles) if (f.type == "TENSOR_AXIS_LABELS") return f.name
            return null
        }
}

/**
 * The standard TFLite Metadata of a `.tflite` (the one MediaPipe Tasks, ML Kit and Android Studio
 * read): the model's name, version and author, the first subgraph's first input tensor (color space,
 * default size, normalization) and first output tensor (its labels file), and [labels], read from the
 * packed file the output names (null when that file is not packed). [json] is the whole table in the
 * flatc JSON form ([MetadataSchema.decode]).
 */
data class StandardMetadata(
    val name: String,
    val description: String,
    val version: String,
    val author: String,
    val license: String,
    val minParserVersion: String,
    val input: StandardTensorMetadata,
    val output: StandardTensorMetadata,
    val associatedFiles: List<AssociatedFile>,
    val labels: List<String>?,
    val json: Map<String, Any?>
) {
    /** The output's labels file name (TENSOR_AXIS_LABELS), or null when the metadata names none. */
    val labelsFile: String? get() = output.labelsFile

    companion object {
        /**
         * The standard metadata of [model] (a `.tflite` file's bytes; not moved), with the labels read
         * from the file the output names when it is packed after the flatbuffer; null when the
         * flatbuffer has no `TFLITE_METADATA` entry.
         */
        fun read(model: ByteBuffer, where: String = "model.tflite"): StandardMetadata? {
            val buffer = TfliteModel.read(model, where).metadataBuffer(MetadataSchema.METADATA_NAME) ?: return null
            val bare = fromJson(MetadataSchema.decode(buffer, "the TFLite Metadata of $where"), where)
            val file = bare.labelsFile ?: return bare
            val text = PackedFiles.read(model, listOf(file))?.text(file) ?: return bare
            return bare.copy(labels = Labels.parse(text))
        }

        fun read(model: ByteArray, where: String = "model.tflite"): StandardMetadata? =
            read(ByteBuffer.wrap(model), where)

        /** From the decoded table ([MetadataSchema.decode]) and the labels, when read. */
        fun fromJson(json: Map<String, Any?>, where: String = "model.tflite", labels: List<String>? = null): StandardMetadata {
            val graphs = json["subgraph_metadata"] as? List<*>
            val graph = graphs?.firstOrNull() as? Map<*, *>
            val inputs = graph?.get("input_tensor_metadata") as? List<*>
            val outputs = graph?.get("output_tensor_metadata") as? List<*>
            val input = inputs?.firstOrNull() as? Map<*, *>
            val output = outputs?.firstOrNull() as? Map<*, *>
            if (input == null || output == null) {
                throw MetadataException("$where: its TFLite Metadata describes no input and output tensor")
            }
            return StandardMetadata(
                name = str(json["name"]),
                description = str(json["description"]),
                version = str(json["version"]),
                author = str(json["author"]),
                license = str(json["license"]),
                minParserVersion = str(json["min_parser_version"]),
                input = tensor(input, where),
                output = tensor(output, where),
                associatedFiles = files(json["associated_files"]),
                labels = labels,
                json = json
            )
        }

        private fun str(value: Any?): String = value as? String ?: ""

        private fun doubles(value: Any?): List<Double>? {
            val list = value as? List<*> ?: return null
            val out = ArrayList<Double>()
            for (v in list) if (v is Double) out.add(v)
            return out
        }

        private fun files(value: Any?): List<AssociatedFile> {
            val out = ArrayList<AssociatedFile>()
            for (item in value as? List<*> ?: emptyList<Any?>()) {
                val f = item as? Map<*, *> ?: continue
                val type = f["type"]
                out.add(
                    AssociatedFile(
                        name = str(f["name"]),
                        type = if (type is String) type else if (type is Double) "type ${type.toInt()}" else "UNKNOWN",
                        description = str(f["description"]),
                        locale = str(f["locale"])
                    )
                )
            }
            return out
        }

        private fun tensor(t: Map<*, *>, where: String): StandardTensorMetadata {
            val content = t["content"] as? Map<*, *>
            val contentType = content?.get("content_properties_type") as? String
            val properties = content?.get("content_properties") as? Map<*, *>
            var colorSpace: String? = null
            var defaultSize: List<Int>? = null
            if (contentType == "ImageProperties" && properties != null) {
                val cs = properties["color_space"]
                colorSpace = if (cs is String) cs else "UNKNOWN"
                val size = properties["default_size"] as? Map<*, *>
                if (size != null) {
                    val w = size["width"] as? Double ?: 0.0
                    val h = size["height"] as? Double ?: 0.0
                    defaultSize = listOf(w.toInt(), h.toInt())
                }
            }
            var mean: List<Double>? = null
            var std: List<Double>? = null
            for (unit in t["process_units"] as? List<*> ?: emptyList<Any?>()) {
                val u = unit as? Map<*, *> ?: continue
                if (u["options_type"] != "NormalizationOptions") continue
                val options = u["options"] as? Map<*, *> ?: continue
                mean = doubles(options["mean"])
                std = doubles(options["std"])
                if (mean == null || std == null || mean.isEmpty() || std.isEmpty()) {
                    throw MetadataException("$where: the TFLite Metadata's NormalizationOptions lacks its mean or std")
                }
                break
            }
            val stats = t["stats"] as? Map<*, *>
            return StandardTensorMetadata(
                name = str(t["name"]),
                description = str(t["description"]),
                contentType = contentType,
                colorSpace = colorSpace,
                defaultSize = defaultSize,
                mean = mean,
                std = std,
                statsMin = doubles(stats?.get("min")),
                statsMax = doubles(stats?.get("max")),
                associatedFiles = files(t["associated_files"])
            )
        }
    }
}
