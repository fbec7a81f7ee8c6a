package dev.kerascnn.core

import java.io.ByteArrayOutputStream
import java.util.zip.CRC32
import java.util.zip.ZipEntry
import java.util.zip.ZipOutputStream

/** A table to write: field slot -> value (a [Scalar], String, [FbTable], List of tables or strings, or a numeric vector). */
class FbTable(vararg val fields: Pair<Int, Any>)

/** An inline scalar of [size] bytes (1, 4 or 8), little endian. */
class Scalar(val size: Int, val bits: Long)

class IntVector(val values: IntArray)
class FloatVector(val values: FloatArray)
class LongVector(val values: LongArray)
class ByteVector(val values: ByteArray)

/**
 * Test helper: writes a FlatBuffer from a tree of [FbTable]s, front to back (each table's vtable just
 * before it, its strings, vectors and sub-tables after it, so every uoffset points forward), with the
 * alignment FlatBuffers requires. Enough to build small TFLite models and TFLite Metadata buffers.
 */
object FlatBuilder {
    fun i8(v: Int) = Scalar(1, v.toLong())
    fun u8(v: Int) = Scalar(1, v.toLong())
    fun i32(v: Int) = Scalar(4, v.toLong())
    fun u32(v: Long) = Scalar(4, v)
    fun i64(v: Long) = Scalar(8, v)
    fun f32(v: Float) = Scalar(4, java.lang.Float.floatToRawIntBits(v).toLong())
    fun ints(vararg v: Int) = IntVector(v)
    fun floats(vararg v: Float) = FloatVector(v)
    fun longs(vararg v: Long) = LongVector(v)

    fun build(root: FbTable, identifier: String?): ByteArray {
        val w = Writer()
        w.reserve(8)
        if (identifier != null) {
            val id = identifier.toByteArray(Charsets.US_ASCII)
            for (i in 0 until 4) w.data[4 + i] = id[i]
        }
        val at = w.table(root)
        w.put(0, 4, at.toLong())
        return w.data.copyOf(w.pos)
    }

    private class Writer {
        var data = ByteArray(256)
        var pos = 0

        fun reserve(n: Int): Int {
            while (pos + n > data.size) data = data.copyOf(data.size * 2)
            val at = pos
            pos += n
            return at
        }

        fun align(n: Int) {
            while (pos % n != 0) reserve(1)
        }

        fun put(at: Int, size: Int, value: Long) {
            for (i in 0 until size) data[at + i] = (value shr (8 * i)).toByte()
        }

        fun ref(at: Int, target: Int) = put(at, 4, (target - at).toLong())

        fun table(t: FbTable): Int {
            var slots = 0
            for (f in t.fields) slots = Math.max(slots, f.first + 1)
            val offsets = IntArray(slots)
            var off = 4
            for (f in t.fields) {
                val value = f.second
                val size = if (value is Scalar) value.size else 4
                while (off % size != 0) off++
                offsets[f.first] = off
                off += size
            }
            align(2)
            val vtable = reserve(4 + 2 * slots)
            put(vtable, 2, (4 + 2 * slots).toLong())
            put(vtable + 2, 2, off.toLong())
            for (s in 0 until slots) put(vtable + 4 + 2 * s, 2, offsets[s].toLong())
            align(8)
            val table = reserve(off)
            put(table, 4, (table - vtable).toLong())
            for (f in t.fields) {
                val value = f.second
                if (value is Scalar) put(table + offsets[f.first], value.size, value.bits)
            }
            for (f in t.fields) {
                val value = f.second
                if (value !is Scalar) ref(table + offsets[f.first], value(value))
            }
            return table
        }

        fun value(v: Any): Int = when (v) {
            is String -> bytes(v.toByteArray(Charsets.UTF_8), true)
            is FbTable -> table(v)
            is ByteVector -> bytes(v.values, false)
            is IntVector -> {
                align(4)
                val at = reserve(4 + 4 * v.values.size)
                put(at, 4, v.values.size.toLong())
                for (i in v.values.indices) put(at + 4 + 4 * i, 4, v.values[i].toLong())
                at
            }
            is FloatVector -> {
                align(4)
                val at = reserve(4 + 4 * v.values.size)
                put(at, 4, v.values.size.toLong())
                for (i in v.values.indices) put(at + 4 + 4 * i, 4, java.lang.Float.floatToRawIntBits(v.values[i]).toLong())
                at
            }
            is LongVector -> {
                while ((pos + 4) % 8 != 0) reserve(1)
                val at = reserve(4 + 8 * v.values.size)
                put(at, 4, v.values.size.toLong())
                for (i in v.values.indices) put(at + 4 + 8 * i, 8, v.values[i])
                at
            }
            is List<*> -> {
                align(4)
                val at = reserve(4 + 4 * v.size)
                put(at, 4, v.size.toLong())
                for (i in v.indices) ref(at + 4 + 4 * i, value(v[i] ?: throw IllegalArgumentException("null element")))
                at
            }
            else -> throw IllegalArgumentException("cannot write ${v.javaClass}")
        }

        fun bytes(b: ByteArray, terminate: Boolean): Int {
            align(4)
            val at = reserve(4 + b.size + (if (terminate) 1 else 0))
            put(at, 4, b.size.toLong())
            System.arraycopy(b, 0, data, at + 4, b.size)
            return at
        }
    }
}

/** Models and archives for the tests. */
object TestModels {
    /** TensorType values of schema.fbs. */
    const val FLOAT32 = 0
    const val UINT8 = 3
    const val INT8 = 9

    /** A stored (uncompressed) ZIP archive, as java.util.zip writes it (offsets from its own start). */
    fun storedZip(vararg entries: Pair<String, ByteArray>): ByteArray {
        val out = ByteArrayOutputStream()
        val zip = ZipOutputStream(out)
        for ((name, data) in entries) {
            val entry = ZipEntry(name)
            entry.method = ZipEntry.STORED
            entry.size = data.size.toLong()
            entry.compressedSize = data.size.toLong()
            val crc = CRC32()
            crc.update(data, 0, data.size)
            entry.crc = crc.value
            zip.putNextEntry(entry)
            zip.write(data)
            zip.closeEntry()
        }
        zip.close()
        return out.toByteArray()
    }

    fun concat(a: ByteArray, b: ByteArray): ByteArray {
        val out = a.copyOf(a.size + b.size)
        System.arraycopy(b, 0, out, a.size, b.size)
        return out
    }

    fun utf8(text: String): ByteArray = text.toByteArray(Charsets.UTF_8)

    /** Every occurrence of [from] in [data] replaced by [to] (same length). */
    fun replaceAll(data: ByteArray, from: String, to: String): ByteArray {
        val a = utf8(from)
        val b = utf8(to)
        require(a.size == b.size)
        val out = data.copyOf()
        var count = 0
        var i = 0
        while (i + a.size <= out.size) {
            var same = true
            for (j in a.indices) {
                if (out[i + j] != a[j]) {
                    same = false
                    break
                }
            }
            if (same) {
                System.arraycopy(b, 0, out, i, b.size)
                count++
                i += a.size
            } else {
                i++
            }
        }
        require(count > 0) { "'$from' not found" }
        return out
    }

    fun tensor(name: String, shape: IntArray, type: Int, scale: Float? = null, zeroPoint: Long = 0): FbTable {
        val fields = ArrayList<Pair<Int, Any>>()
        fields.add(0 to IntVector(shape))
        fields.add(1 to FlatBuilder.i8(type))
        fields.add(2 to FlatBuilder.u32(0))
        fields.add(3 to name)
        if (scale != null) {
            fields.add(4 to FbTable(2 to FlatBuilder.floats(scale), 3 to FlatBuilder.longs(zeroPoint)))
        }
        return FbTable(*fields.toTypedArray())
    }

    /**
     * A TFLite flatbuffer with one subgraph (tensor 0 the input, tensor 1 the output, no operators) and,
     * when [metadata] is given, a `Model.metadata` entry [metadataName] whose buffer holds it.
     */
    fun tflite(input: FbTable, output: FbTable, metadata: ByteArray?, metadataName: String = "TFLITE_METADATA"): ByteArray {
        val graph = FbTable(
            0 to listOf(input, output),
            1 to FlatBuilder.ints(0),
            2 to FlatBuilder.ints(1),
            4 to "main"
        )
        val buffers = ArrayList<FbTable>()
        buffers.add(FbTable())
        val fields = ArrayList<Pair<Int, Any>>()
        fields.add(0 to FlatBuilder.u32(3))
        fields.add(2 to listOf(graph))
        fields.add(3 to "test model")
        if (metadata != null) {
            buffers.add(FbTable(0 to ByteVector(metadata)))
            fields.add(6 to listOf(FbTable(0 to metadataName, 1 to FlatBuilder.u32(1))))
        }
        fields.add(4 to buffers)
        return FlatBuilder.build(FbTable(*fields.toTypedArray()), "TFL3")
    }

    /**
     * A TFLite Metadata buffer (M001) laid out as MediaPipe's image classifier writer does: an image
     * input with color space, size, normalization and stats, an output with a TENSOR_AXIS_LABELS file.
     */
    fun standardMetadata(
        name: String,
        colorSpace: Int,
        width: Long,
        height: Long,
        mean: FloatArray,
        std: FloatArray,
        outputName: String,
        labelsFile: String? = "labels.txt",
        version: String = "v7"
    ): ByteArray {
        val image = FbTable(
            0 to "image",
            3 to FbTable(
                0 to FlatBuilder.u8(2), // ImageProperties
                1 to FbTable(0 to FlatBuilder.i8(colorSpace), 1 to FbTable(0 to FlatBuilder.u32(width), 1 to FlatBuilder.u32(height)))
            ),
            4 to listOf(FbTable(0 to FlatBuilder.u8(1), 1 to FbTable(0 to FloatVector(mean), 1 to FloatVector(std)))),
            5 to FbTable(0 to FlatBuilder.floats(1f), 1 to FlatBuilder.floats(-1f))
        )
        val outFields = ArrayList<Pair<Int, Any>>()
        outFields.add(0 to outputName)
        outFields.add(3 to FbTable(0 to FlatBuilder.u8(1), 1 to FbTable())) // FeatureProperties
        if (labelsFile != null) {
            outFields.add(6 to listOf(FbTable(0 to labelsFile, 1 to "Labels", 2 to FlatBuilder.i8(2))))
        }
        val root = FbTable(
            0 to name,
            2 to version,
            3 to listOf(FbTable(2 to listOf(image), 3 to listOf(FbTable(*outFields.toTypedArray())))),
            4 to "MediaPipe Model Maker",
            7 to "1.0.0"
        )
        return FlatBuilder.build(root, "M001")
    }
}
