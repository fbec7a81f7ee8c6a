package dev.kerascnn.core

import java.nio.ByteBuffer

/**
 * A tensor as the TFLite flatbuffer declares it: [dtype] is `float32`, `int8`, `uint8` or another
 * TensorType in lower case (`float16`, `int32`, ...); [quantization] is the per-tensor scale and zero
 * point of an int8/uint8 tensor (null for other types, or when the file gives none).
 */
data class TensorInfo(
    val name: String,
    val shape: List<Int>,
    val dtype: String,
    val quantization: QuantParams?
)

/**
 * What the app needs from the TFLite flatbuffer itself (`schema.fbs`, identifier `TFL3`): the first
 * subgraph's first input and output tensor, and the buffers of the `Model.metadata` entries (where the
 * standard TFLite Metadata lives, under the name `TFLITE_METADATA`). Only those tables are read:
 * Model{version 0, subgraphs 2, buffers 4, metadata 6}, SubGraph{tensors 0, inputs 1, outputs 2},
 * Tensor{shape 0, type 1, name 3, quantization 4}, QuantizationParameters{scale 2, zero_point 3},
 * Buffer{data 0, offset 1, size 2}, Metadata{name 0, buffer 1}.
 */
class TfliteModel private constructor(
    val version: Long,
    val input: TensorInfo,
    val output: TensorInfo,
    /** name -> the entry's buffer index */
    private val metadataEntries: Map<String, Long>,
    private val buffers: List<FlatTable>,
    private val file: FlatBuffer
) {
    /** The names of the `Model.metadata` entries (e.g. `min_runtime_version`, `TFLITE_METADATA`). */
    val metadataNames: List<String> get() = ArrayList(metadataEntries.keys)

    /** The bytes of the metadata entry [name] (not copied), or null when there is none or it is empty. */
    fun metadataBuffer(name: String): ByteBuffer? {
        val index = metadataEntries[name] ?: return null
        if (index < 0 || index >= buffers.size) {
            file.bad("metadata '$name' names buffer $index of ${buffers.size}")
        }
        val buffer = buffers[index.toInt()]
        val offset = buffer.i64(1, 0, "offset")
        if (offset > 1) {
            // a model over 2 GB keeps its buffers after the flatbuffer: offset and size from the file's start
            val size = buffer.i64(2, 0, "size")
            file.check(offset, size, "buffer $index")
            return file.slice(offset.toInt(), size.toInt(), "buffer $index")
        }
        val data = buffer.bytes(0, "data") ?: return null
        return if (data.limit() == 0) null else data
    }

    companion object {
        const val IDENTIFIER = "TFL3"

        /** TensorType names by value (schema.fbs), in the dtype spelling of ModelMetadata. */
        private val TYPES = listOf(
            "float32", "float16", "int32", "uint8", "int64", "string", "bool", "int16", "complex64", "int8",
            "float64", "complex128", "uint64", "resource", "variant", "uint32", "uint16", "int4", "bfloat16"
        )

        fun typeName(type: Int): String = if (type >= 0 && type < TYPES.size) TYPES[type] else "type $type"

        fun read(model: ByteArray, where: String = "model.tflite"): TfliteModel = read(ByteBuffer.wrap(model), where)

        /** [model]: the file's bytes (an appended archive after the flatbuffer is fine; not moved). */
        fun read(model: ByteBuffer, where: String = "model.tflite"): TfliteModel {
            val file = FlatBuffer(model, "$where (TFLite flatbuffer)")
            if (file.size < 8 || file.identifier() != IDENTIFIER) {
                throw MetadataException(
                    if (file.size < 8) "$where is truncated or not a TFLite model: only ${file.size} bytes"
                    else "$where is not a TFLite model (no '$IDENTIFIER' file identifier at bytes 4-7)"
                )
            }
            val m = file.root(IDENTIFIER, "Model")
            val subgraphs = m.tables(2, "subgraphs")
            if (subgraphs == null || subgraphs.isEmpty()) file.bad("the model has no subgraph")
            val graph = subgraphs[0]
            val tensors = graph.tables(0, "tensors") ?: file.bad("subgraph 0 has no tensors")
            val inputs = graph.i32s(1, "inputs")
            val outputs = graph.i32s(2, "outputs")
            if (inputs == null || inputs.size == 0) file.bad("subgraph 0 has no input")
            if (outputs == null || outputs.size == 0) file.bad("subgraph 0 has no output")
            val input = tensor(file, tensors, inputs[0], "input")
            val output = tensor(file, tensors, outputs[0], "output")

            val entries = LinkedHashMap<String, Long>()
            for (entry in m.tables(6, "metadata") ?: emptyList<FlatTable>()) {
                val name = entry.string(0, "name") ?: continue
                if (!entries.containsKey(name)) entries[name] = entry.u32(1, 0, "buffer")
            }
            val buffers = m.tables(4, "buffers") ?: emptyList<FlatTable>()
            // A cheap check of the parts a cut-off file loses first: every tensor's shape, every buffer's data.
            for (t in tensors) t.i32s(0, "shape")
            for (i in buffers.indices) {
                val b = buffers[i]
                val offset = b.i64(1, 0, "offset")
                if (offset > 1) file.check(offset, b.i64(2, 0, "size"), "buffer $i") else b.vector(0, 1, "data")
            }
            return TfliteModel(m.u32(0, 0, "version"), input, output, entries, buffers, file)
        }

        private fun tensor(file: FlatBuffer, tensors: List<FlatTable>, index: Int, role: String): TensorInfo {
            if (index < 0 || index >= tensors.size) file.bad("the $role names tensor $index of ${tensors.size}")
            val t = tensors[index]
            val shape = ArrayList<Int>()
            for (d in t.i32s(0, "shape") ?: IntArray(0)) shape.add(d)
            val dtype = typeName(t.i8(1, 0, "type"))
            var quant: QuantParams? = null
            val q = t.table(4, "quantization")
            if (q != null && (dtype == "int8" || dtype == "uint8")) {
                val scales = q.f32s(2, "scale")
                val zeros = q.i64s(3, "zero_point")
                if (scales != null && scales.size > 1) {
                    throw MetadataException(
                        "the model's $role tensor is quantized per channel (${scales.size} scales); " +
                            "an image classifier's $role needs one scale and zero point"
                    )
                }
                if (scales != null && scales.size == 1 && scales[0] > 0f) {
                    val zero = if (zeros != null && zeros.size > 0) zeros[0] else 0L
                    quant = QuantParams(scales[0].toDouble(), zero.toInt())
                }
            }
            return TensorInfo(t.string(3, "name") ?: "", shape, dtype, quant)
        }
    }
}
