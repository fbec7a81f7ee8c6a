package dev.kerascnn.core

import java.nio.ByteBuffer
import java.nio.ByteOrder

/** One class of a result: its index in the model's output, its label and its score. */
data class Recognition(val index: Int, val label: String, val score: Float)

/**
 * From the model's raw output to what the app shows, as `kerascnn validate` computes it:
 * dequantize int8/uint8 outputs `(float32(q) - zero_point) * float32(scale)`, a softmax for "logits"
 * outputs, the top k classes (ties: the lower class index first).
 */
object Postprocess {
    /** `(float32(q) - float32(zeroPoint)) * float32(scale)` in float32, as Python's `runtime.dequantize`. */
    fun dequantize(q: IntArray, params: QuantParams): FloatArray {
        val zero = params.zeroPoint.toFloat()
        val scale = params.scale.toFloat()
        val out = FloatArray(q.size)
        for (i in q.indices) out[i] = (q[i].toFloat() - zero) * scale
        return out
    }

    /** Raw output bytes (little-endian for float32) of [dtype] to float values, dequantized for int8/uint8. */
    fun decode(raw: ByteArray, dtype: String, params: QuantParams?): FloatArray {
        if (dtype == "float32") {
            require(raw.size % 4 == 0) { "float32 output of ${raw.size} bytes" }
            val b = ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN)
            val out = FloatArray(raw.size / 4)
            for (i in out.indices) out[i] = b.getFloat(i * 4)
            return out
        }
        val q = IntArray(raw.size)
        if (dtype == "int8") {
            for (i in raw.indices) q[i] = raw[i].toInt()
        } else if (dtype == "uint8") {
            for (i in raw.indices) q[i] = raw[i].toInt() and 0xFF
        } else {
            throw IllegalArgumentException("unsupported output dtype '$dtype' (float32, int8 or uint8)")
        }
        if (params == null) throw MetadataException("an $dtype output needs output_quantization")
        return dequantize(q, params)
    }

    /** A numerically stable softmax (the maximum subtracted first), accumulated in double. */
    fun softmax(logits: FloatArray): FloatArray {
        if (logits.isEmpty()) return FloatArray(0)
        var max = Double.NEGATIVE_INFINITY
        for (v in logits) if (v > max) max = v.toDouble()
        val e = DoubleArray(logits.size)
        var sum = 0.0
        for (i in logits.indices) {
            e[i] = Math.exp(logits[i] - max)
            sum += e[i]
        }
        val out = FloatArray(logits.size)
        for (i in logits.indices) out[i] = (e[i] / sum).toFloat()
        return out
    }

    /** The class scores for an output of kind [output] ("probabilities" kept, "logits" softmaxed). */
    fun scores(values: FloatArray, output: String): FloatArray = when (output) {
        "probabilities" -> values.copyOf()
        "logits" -> softmax(values)
        else -> throw IllegalArgumentException("output must be 'probabilities' or 'logits', got '$output'")
    }

    /** Scores from the model's raw output bytes, as [meta] describes the output. */
    fun scores(raw: ByteArray, meta: ModelMetadata): FloatArray =
        scores(decode(raw, meta.outputDtype, meta.outputQuantization), meta.output)

    /** Whether class [a] ranks before class [b]: the higher score, then the lower index; NaN last. */
    private fun before(scores: FloatArray, a: Int, b: Int): Boolean {
        val sa = scores[a]
        val sb = scores[b]
        if (sa.isNaN() != sb.isNaN()) return sb.isNaN()
        if (sa != sb && !sa.isNaN()) return sa > sb
        return a < b
    }

    /** The [k] best classes, best first; a missing label reads `class N`. */
    fun topK(scores: FloatArray, labels: List<String>, k: Int): List<Recognition> {
        require(k >= 0) { "k must be >= 0, got $k" }
        val n = Math.min(k, scores.size)
        val chosen = IntArray(n)
        val taken = BooleanArray(scores.size)
        for (rank in 0 until n) {
            var best = -1
            for (i in scores.indices) {
                if (!taken[i] && (best < 0 || before(scores, i, best))) best = i
            }
            taken[best] = true
            chosen[rank] = best
        }
        val out = ArrayList<Recognition>(n)
        for (i in chosen) {
            val label = if (i < labels.size) labels[i] else "class $i"
            out.add(Recognition(i, label, scores[i]))
        }
        return out
    }
}
