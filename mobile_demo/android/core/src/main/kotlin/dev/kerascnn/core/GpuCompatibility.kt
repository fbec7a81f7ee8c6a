package dev.kerascnn.core

import java.nio.ByteBuffer

/** An op the GPU delegate would not take: its index in [subgraph], its op name, its first output tensor. */
data class RejectedOp(
    val index: Int,
    val op: String,
    val tensorName: String,
    val reason: String,
    val subgraph: Int = 0
)

/** Would the GPU delegate take every op ([ops]: every op of every subgraph)? Else the ops it would not take. */
data class GpuReport(val fullyTaken: Boolean, val ops: Int, val rejected: List<RejectedOp>) {
    /** One line for a log or the UI; at most [limit] rejected ops are listed. */
    fun describe(limit: Int = 6): String {
        if (fullyTaken) return "GPU delegate would take all $ops ops"
        val sb = StringBuilder("GPU delegate would take ${ops - rejected.size} of $ops ops; not: ")
        for (i in 0 until Math.min(limit, rejected.size)) {
            val r = rejected[i]
            if (i > 0) sb.append(", ")
            sb.append(r.op).append(" (").append(r.tensorName)
            if (!r.reason.startsWith("Not supported")) sb.append(": ").append(r.reason)
            sb.append(')')
        }
        if (rejected.size > limit) sb.append(", and ${rejected.size - limit} more")
        return sb.toString()
    }
}

/**
 * A static reading of a `.tflite` (every op of every subgraph): would LiteRT's GPU delegate take it
 * whole, or run part of it on the CPU? The op types are those of TensorFlow's
 * `tensorflow/lite/tools/versioning/gpu_compatibility.cc`, as `export/delegates.py` encodes them (its
 * `_GPU`, `_GPU_UNCHECKED` and `_GPU_CUSTOM`; `tests/mobile/test_gpu_ops_match.py` keeps them equal).
 * Of that file's per-op rules only one is applied here, the one kerascnn's models meet: a RESHAPE whose
 * shape (input 1) is computed at run time, as a Keras `Flatten` with a dynamic batch converts
 * (SHAPE, STRIDED_SLICE, PACK, RESHAPE). `kerascnn inspect` applies all of them, so it may reject more
 * ops than this does, never fewer. Read: Model{operator_codes 1, subgraphs 2, buffers 4},
 * OperatorCode{deprecated_builtin_code 0, custom_code 1, builtin_code 3}, SubGraph{tensors 0,
 * operators 3}, Operator{opcode_index 0, inputs 1, outputs 2}, Tensor{buffer 2, name 3},
 * Buffer{data 0, offset 1}. A cut-off or damaged file is a [MetadataException].
 */
object GpuCompatibility {
    /** The builtin ops the GPU delegate takes (name to BuiltinOperator code): the keys of delegates.py's `_GPU`. */
    val GPU_OPS: Map<String, Int> = mapOf(
        "ABS" to 101, "ADD" to 0, "ADD_N" to 106, "ATAN2" to 156, "AVERAGE_POOL_2D" to 1, "BATCH_MATMUL" to 126,
        "CAST" to 53, "CEIL" to 104, "CONCATENATION" to 2, "CONV_2D" to 3, "COS" to 108, "CUMSUM" to 128,
        "DENSIFY" to 124, "DEPTHWISE_CONV_2D" to 4, "DEPTH_TO_SPACE" to 5, "DEQUANTIZE" to 6, "DIV" to 42,
        "ELU" to 111, "EQUAL" to 71, "EXP" to 47, "FLOOR" to 8, "FLOOR_DIV" to 90, "FLOOR_MOD" to 95,
        "FULLY_CONNECTED" to 9, "GATHER" to 36, "GELU" to 150, "GREATER" to 61, "GREATER_EQUAL" to 62,
        "HARD_SWISH" to 117, "LEAKY_RELU" to 98, "LESS" to 58, "LESS_EQUAL" to 63, "LOG" to 73,
        "LOGICAL_AND" to 86, "LOGISTIC" to 14, "MAXIMUM" to 55, "MAX_POOL_2D" to 17, "MEAN" to 40,
        "MINIMUM" to 57, "MIRROR_PAD" to 100, "MUL" to 18, "NEG" to 59, "NOT_EQUAL" to 72, "PACK" to 83,
        "PAD" to 34, "PADV2" to 60, "POW" to 78, "PRELU" to 54, "QUANTIZE" to 114, "REDUCE_MAX" to 82,
        "REDUCE_MIN" to 89, "REDUCE_PROD" to 81, "RELU" to 19, "RELU6" to 21, "RELU_N1_TO_1" to 20,
        "RESHAPE" to 22, "RESIZE_BILINEAR" to 23, "RESIZE_NEAREST_NEIGHBOR" to 97, "RSQRT" to 76, "SIGN" to 158,
        "SIN" to 66, "SLICE" to 65, "SOFTMAX" to 25, "SPACE_TO_DEPTH" to 26, "SPLIT" to 49, "SPLIT_V" to 102,
        "SQRT" to 75, "SQUARE" to 92, "SQUARED_DIFFERENCE" to 99, "STRIDED_SLICE" to 45, "SUB" to 41,
        "SUM" to 74, "TANH" to 28, "TILE" to 69, "TRANSPOSE" to 39, "TRANSPOSE_CONV" to 67
    )

    /** Taken on conditions delegates.py does not encode either (its `_GPU_UNCHECKED`): counted as taken. */
    val GPU_UNCHECKED_OPS: Map<String, Int> = mapOf(
        "LSTM" to 16, "ONE_HOT" to 85, "SELECT" to 64, "SELECT_V2" to 123, "EMBEDDING_LOOKUP" to 7,
        "DYNAMIC_UPDATE_SLICE" to 151, "STABLEHLO_CLAMP" to 168
    )

    /** The custom ops the GPU delegate takes (delegates.py's `_GPU_CUSTOM`). */
    val GPU_CUSTOM_OPS: Set<String> = setOf(
        "MaxPoolingWithArgmax2D", "MaxUnpooling2D", "Convolution2DTransposeBias", "Resampler"
    )

    /** Other builtin ops, only to name those it does not take (any other reads as `BUILTIN_<code>`). */
    private val OTHER_OPS: Map<String, Int> = mapOf(
        "SHAPE" to 77, "CUSTOM" to 32, "SQUEEZE" to 43, "EXPAND_DIMS" to 70, "ARG_MAX" to 56, "ARG_MIN" to 79,
        "GATHER_ND" to 107, "FILL" to 94, "BROADCAST_TO" to 130, "UNPACK" to 88, "SPACE_TO_BATCH_ND" to 38,
        "BATCH_TO_SPACE_ND" to 37, "L2_NORMALIZATION" to 11, "LOG_SOFTMAX" to 50, "L2_POOL_2D" to 12,
        "LOCAL_RESPONSE_NORMALIZATION" to 13, "TOPK_V2" to 48, "RANGE" to 96, "ZEROS_LIKE" to 93,
        "REDUCE_ANY" to 91, "REVERSE_V2" to 105, "WHILE" to 119, "IF" to 118, "DELEGATE" to 51
    )

    private const val CUSTOM = 32

    private val NAMES: Map<Int, String> by lazy {
        val names = HashMap<Int, String>()
        for (table in listOf(GPU_OPS, GPU_UNCHECKED_OPS, OTHER_OPS)) for ((name, code) in table) names[code] = name
        names
    }

    /** The name of builtin op [code] as TFLite's schema spells it (`BUILTIN_<code>` when not listed here). */
    fun opName(code: Int): String = NAMES[code] ?: "BUILTIN_$code"

    fun check(model: ByteArray, where: String = "model.tflite"): GpuReport = check(ByteBuffer.wrap(model), where)

    /** [model]: the file's bytes (not moved; an archive appended after the flatbuffer is fine). */
    fun check(model: ByteBuffer, where: String = "model.tflite"): GpuReport {
        val file = FlatBuffer(model, "$where (TFLite flatbuffer)")
        if (file.size < 8 || file.identifier() != TfliteModel.IDENTIFIER) {
            throw MetadataException(
                if (file.size < 8) "$where is truncated or not a TFLite model: only ${file.size} bytes"
                else "$where is not a TFLite model (no '${TfliteModel.IDENTIFIER}' file identifier at bytes 4-7)"
            )
        }
        val m = file.root(TfliteModel.IDENTIFIER, "Model")
        val codes = ArrayList<String>() // per operator code: the op's name, CUSTOM:<code> for a custom op
        for (c in m.tables(1, "operator_codes") ?: emptyList<FlatTable>()) {
            val code = Math.max(c.i8(0, 0, "deprecated_builtin_code"), c.i32(3, 0, "builtin_code"))
            codes.add(if (code == CUSTOM) "CUSTOM:" + (c.string(1, "custom_code") ?: "") else opName(code))
        }
        val buffers = m.tables(4, "buffers") ?: emptyList<FlatTable>()
        val constant = BooleanArray(buffers.size) // a buffer that holds data (buffer 0 never does)
        for (i in 1 until buffers.size) {
            val data = buffers[i].vector(0, 1, "data")
            constant[i] = (data != null && data[1] > 0) || buffers[i].i64(1, 0, "offset") > 1
        }
        val subgraphs = m.tables(2, "subgraphs")
        if (subgraphs == null || subgraphs.isEmpty()) file.bad("the model has no subgraph")
        var ops = 0
        val rejected = ArrayList<RejectedOp>()
        for ((s, graph) in subgraphs.withIndex()) {
            val tensors = graph.tables(0, "tensors") ?: emptyList<FlatTable>()
            fun tensor(index: Int, op: Int): FlatTable {
                if (index < 0 || index >= tensors.size) {
                    file.bad("subgraph $s operator $op names tensor $index of ${tensors.size}")
                }
                return tensors[index]
            }
            for ((j, op) in (graph.tables(3, "operators") ?: emptyList<FlatTable>()).withIndex()) {
                ops++
                val index = op.u32(0, 0, "opcode_index")
                if (index >= codes.size) file.bad("subgraph $s operator $j names operator code $index of ${codes.size}")
                val name = codes[index.toInt()]
                val inputs = op.i32s(1, "inputs") ?: IntArray(0)
                val outputs = op.i32s(2, "outputs") ?: IntArray(0)
                for (t in inputs) if (t >= 0) tensor(t, j)
                val output = if (outputs.size == 0) "" else (tensor(outputs[0], j).string(3, "name") ?: "tensor_${outputs[0]}")
                val reason = when {
                    name.startsWith("CUSTOM:") -> {
                        val custom = name.substring(7)
                        if (GPU_CUSTOM_OPS.contains(custom)) null else "Not supported custom op $custom"
                    }
                    GPU_UNCHECKED_OPS.containsKey(name) -> null
                    !GPU_OPS.containsKey(name) -> "Not supported op $name"
                    name == "RESHAPE" && inputs.size > 1 && inputs[1] >= 0 &&
                        !isConstant(tensor(inputs[1], j), constant, file) -> "runtime shape"
                    else -> null
                }
                if (reason != null) rejected.add(RejectedOp(j, name, output, reason, s))
            }
        }
        return GpuReport(rejected.isEmpty(), ops, rejected)
    }

    private fun isConstant(tensor: FlatTable, constant: BooleanArray, file: FlatBuffer): Boolean {
        val buffer = tensor.u32(2, 0, "buffer")
        if (buffer >= constant.size) file.bad("${tensor.thing} names buffer $buffer of ${constant.size}")
        return constant[buffer.toInt()]
    }
}
