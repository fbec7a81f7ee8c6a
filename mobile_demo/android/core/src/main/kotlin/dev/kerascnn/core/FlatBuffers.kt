package dev.kerascnn.core

import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.charset.CharacterCodingException
import java.nio.charset.CodingErrorAction

/**
 * A read-only FlatBuffers buffer (little endian), enough to read the TFLite model (`schema.fbs`) and
 * the TFLite Metadata (`metadata_schema.fbs`) without generated code: tables are read by field slot
 * (a field's vtable entry is at `4 + 2 * slot`; a union takes two slots, its type then its value).
 *
 * Positions count from index 0 of [source] (its position and limit are left alone; the last readable
 * byte is at `limit - 1`). Every offset is checked against the end of the buffer, so a truncated or
 * damaged file gives a [MetadataException] that names [what], never an IndexOutOfBoundsException.
 */
class FlatBuffer(source: ByteBuffer, val what: String) {
    private val buf: ByteBuffer = source.duplicate().order(ByteOrder.LITTLE_ENDIAN)
    val size: Int = source.limit()

    fun bad(detail: String): Nothing = throw MetadataException("$what is truncated or malformed: $detail")

    /** [length] bytes from [at] must lie inside the buffer. */
    fun check(at: Long, length: Long, thing: String) {
        if (at < 0 || length < 0 || at + length > size) {
            bad("$thing at offset $at (+$length bytes) is past the end of its $size bytes")
        }
    }

    fun u8(at: Int): Int = buf.get(at).toInt() and 0xFF
    fun i8(at: Int): Int = buf.get(at).toInt()
    fun u16(at: Int): Int = buf.getShort(at).toInt() and 0xFFFF
    fun i32(at: Int): Int = buf.getInt(at)
    fun u32(at: Int): Long = buf.getInt(at).toLong() and 0xFFFFFFFFL
    fun i64(at: Int): Long = buf.getLong(at)
    fun f32(at: Int): Float = buf.getFloat(at)

    /** The file identifier (bytes 4-7), or null when the buffer is too short to have one. */
    fun identifier(): String? {
        if (size < 8) return null
        val sb = StringBuilder()
        for (i in 4 until 8) sb.append(u8(i).toChar())
        return sb.toString()
    }

    /** The root table; with [identifier], the buffer must carry that file identifier. */
    fun root(identifier: String?, name: String = "root table"): FlatTable {
        if (size < 8) bad("only $size bytes")
        if (identifier != null && identifier() != identifier) {
            throw MetadataException("$what is not a FlatBuffer of the expected kind (file identifier '$identifier' missing)")
        }
        return table(0, name)
    }

    /** The position a uoffset stored at [at] points to (forward, inside the buffer). */
    fun follow(at: Int, thing: String): Int {
        check(at.toLong(), 4, thing)
        val target = at.toLong() + u32(at)
        if (target >= size) bad("$thing at offset $at points to $target, past the end of its $size bytes")
        return target.toInt()
    }

    /** The table a uoffset stored at [at] points to. */
    fun table(at: Int, thing: String): FlatTable = FlatTable(this, follow(at, thing), thing)

    /** A vector a uoffset at [at] points to: (position of its first element, length). */
    fun vector(at: Int, elementSize: Int, thing: String): IntArray {
        val start = follow(at, thing)
        check(start.toLong(), 4, "$thing length")
        val length = u32(start)
        check(start + 4L, length * elementSize, "$thing ($length elements)")
        return intArrayOf(start + 4, length.toInt())
    }

    /** The string a uoffset at [at] points to, strict UTF-8. */
    fun string(at: Int, thing: String): String {
        val v = vector(at, 1, thing)
        val bytes = ByteArray(v[1])
        val view = buf.duplicate()
        view.position(v[0])
        view.get(bytes, 0, v[1])
        val decoder = Charsets.UTF_8.newDecoder()
            .onMalformedInput(CodingErrorAction.REPORT)
            .onUnmappableCharacter(CodingErrorAction.REPORT)
        try {
            return decoder.decode(ByteBuffer.wrap(bytes)).toString()
        } catch (e: CharacterCodingException) {
            throw MetadataException("$what: $thing is not UTF-8", e)
        }
    }

    /** [length] bytes from [at] as a buffer of their own (shared, not copied; index 0 = [at]). */
    fun slice(at: Int, length: Int, thing: String): ByteBuffer {
        check(at.toLong(), length.toLong(), thing)
        val view = buf.duplicate()
        view.position(at)
        view.limit(at + length)
        return view.slice().order(ByteOrder.LITTLE_ENDIAN)
    }
}

/** A table of a [FlatBuffer] at [pos]; [thing] names it in error messages. */
class FlatTable internal constructor(val fb: FlatBuffer, val pos: Int, val thing: String) {
    private val vtable: Int
    private val vtableSize: Int

    init {
        fb.check(pos.toLong(), 4, thing)
        val vt = pos.toLong() - fb.i32(pos)
        fb.check(vt, 4, "$thing's vtable")
        vtable = vt.toInt()
        vtableSize = fb.u16(vtable)
        val tableSize = fb.u16(vtable + 2)
        if (vtableSize < 4 || vtableSize % 2 != 0) fb.bad("$thing's vtable has size $vtableSize")
        fb.check(vtable.toLong(), vtableSize.toLong(), "$thing's vtable")
        fb.check(pos.toLong(), Math.max(tableSize, 4).toLong(), thing)
    }

    /** The field's offset from the table's start, 0 when the field is absent. */
    fun fieldOffset(slot: Int): Int {
        val entry = 4 + 2 * slot
        if (entry + 2 > vtableSize) return 0
        return fb.u16(vtable + entry)
    }

    fun has(slot: Int): Boolean = fieldOffset(slot) != 0

    /** Position of a present field of [size] bytes, or -1. */
    private fun at(slot: Int, size: Int, name: String): Int {
        val o = fieldOffset(slot)
        if (o == 0) return -1
        fb.check(pos.toLong() + o, size.toLong(), "$thing.$name")
        return pos + o
    }

    private fun field(slot: Int, name: String?) = name ?: "field $slot"

    fun i8(slot: Int, default: Int = 0, name: String? = null): Int {
        val p = at(slot, 1, field(slot, name))
        return if (p < 0) default else fb.i8(p)
    }

    fun u8(slot: Int, default: Int = 0, name: String? = null): Int {
        val p = at(slot, 1, field(slot, name))
        return if (p < 0) default else fb.u8(p)
    }

    fun i32(slot: Int, default: Int = 0, name: String? = null): Int {
        val p = at(slot, 4, field(slot, name))
        return if (p < 0) default else fb.i32(p)
    }

    fun u32(slot: Int, default: Long = 0, name: String? = null): Long {
        val p = at(slot, 4, field(slot, name))
        return if (p < 0) default else fb.u32(p)
    }

    /** A long or ulong field (a ulong above 2^63 - 1 reads as negative). */
    fun i64(slot: Int, default: Long = 0, name: String? = null): Long {
        val p = at(slot, 8, field(slot, name))
        return if (p < 0) default else fb.i64(p)
    }

    fun f32(slot: Int, default: Float = 0f, name: String? = null): Float {
        val p = at(slot, 4, field(slot, name))
        return if (p < 0) default else fb.f32(p)
    }

    fun string(slot: Int, name: String? = null): String? {
        val n = "$thing.${field(slot, name)}"
        val p = at(slot, 4, n)
        return if (p < 0) null else fb.string(p, n)
    }

    fun table(slot: Int, name: String? = null): FlatTable? {
        val n = "$thing.${field(slot, name)}"
        val p = at(slot, 4, n)
        return if (p < 0) null else fb.table(p, n)
    }

    /** (first element's position, length) of a vector field, or null. */
    fun vector(slot: Int, elementSize: Int, name: String? = null): IntArray? {
        val n = "$thing.${field(slot, name)}"
        val p = at(slot, 4, n)
        return if (p < 0) null else fb.vector(p, elementSize, n)
    }

    fun tables(slot: Int, name: String? = null): List<FlatTable>? {
        val v = vector(slot, 4, name) ?: return null
        val n = "$thing.${field(slot, name)}"
        val out = ArrayList<FlatTable>()
        for (i in 0 until v[1]) out.add(fb.table(v[0] + 4 * i, "$n[$i]"))
        return out
    }

    fun strings(slot: Int, name: String? = null): List<String>? {
        val v = vector(slot, 4, name) ?: return null
        val n = "$thing.${field(slot, name)}"
        val out = ArrayList<String>()
        for (i in 0 until v[1]) out.add(fb.string(v[0] + 4 * i, "$n[$i]"))
        return out
    }

    fun i32s(slot: Int, name: String? = null): IntArray? {
        val v = vector(slot, 4, name) ?: return null
        val out = IntArray(v[1])
        for (i in out.indices) out[i] = fb.i32(v[0] + 4 * i)
        return out
    }

    fun u32s(slot: Int, name: String? = null): LongArray? {
        val v = vector(slot, 4, name) ?: return null
        val out = LongArray(v[1])
        for (i in out.indices) out[i] = fb.u32(v[0] + 4 * i)
        return out
    }

    fun i64s(slot: Int, name: String? = null): LongArray? {
        val v = vector(slot, 8, name) ?: return null
        val out = LongArray(v[1])
        for (i in out.indices) out[i] = fb.i64(v[0] + 8 * i)
        return out
    }

    fun f32s(slot: Int, name: String? = null): FloatArray? {
        val v = vector(slot, 4, name) ?: return null
        val out = FloatArray(v[1])
        for (i in out.indices) out[i] = fb.f32(v[0] + 4 * i)
        return out
    }

    /** A [ubyte] vector field as a buffer of its own (not copied), or null. */
    fun bytes(slot: Int, name: String? = null): ByteBuffer? {
        val v = vector(slot, 1, name) ?: return null
        return fb.slice(v[0], v[1], "$thing.${field(slot, name)}")
    }
}
