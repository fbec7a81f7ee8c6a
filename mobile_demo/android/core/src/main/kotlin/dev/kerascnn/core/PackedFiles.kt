package dev.kerascnn.core

import java.nio.ByteBuffer
import java.nio.charset.CharacterCodingException
import java.nio.charset.CodingErrorAction
import java.util.zip.CRC32
import java.util.zip.DataFormatException
import java.util.zip.Inflater

/**
 * The files packed after a `.tflite` flatbuffer: a ZIP archive appended to the file, which the TFLite
 * runtime ignores. TFLite Metadata's `MetadataPopulator` packs the files the metadata names this way
 * (uncompressed), and so does `kerascnn export` (`labels.txt`, `metadata.json`).
 *
 * Found from the end of the file like any ZIP reader does: the end-of-central-directory record, the
 * central directory, then each entry's local header. Python's `zipfile` writes offsets counted from
 * the start of the file when it appends to one; other tools (java.util.zip) count them from the start
 * of the archive. Both are handled: the archive's offset in the file is `(eocd - cd_size) - cd_offset`,
 * which is 0 for the first kind. Entries may be stored or deflated; each is CRC-checked when read.
 */
class PackedFiles private constructor(
    private val buf: ByteBuffer,
    /** Where the archive's first local header is: the end of the flatbuffer. */
    val start: Int,
    private val entries: LinkedHashMap<String, Entry>
) {
    private class Entry(val method: Int, val crc: Long, val compressedSize: Int, val size: Int, val dataStart: Int)

    /** The packed files' names, in archive order. */
    val names: List<String> get() = ArrayList(entries.keys)

    operator fun contains(name: String): Boolean = entries.containsKey(name)

    /** The file [name]'s bytes (CRC-checked), or null when it is not packed. */
    fun bytes(name: String): ByteArray? {
        val entry = entries[name] ?: return null
        val raw = slice(buf, entry.dataStart, entry.compressedSize)
        val data = when (entry.method) {
            0 -> {
                if (entry.compressedSize != entry.size) corrupt("stored entry sizes of $name differ")
                raw
            }
            8 -> inflate(raw, entry.size, name)
            else -> corrupt("$name uses compression method ${entry.method} (only stored or deflated)")
        }
        val crc = CRC32()
        crc.update(data, 0, data.size)
        if (crc.value != entry.crc) corrupt("CRC-32 mismatch for $name (archive damaged)")
        return data
    }

    /** The file [name] as UTF-8 text, or null when it is not packed. */
    fun text(name: String): String? {
        val data = bytes(name) ?: return null
        val decoder = Charsets.UTF_8.newDecoder()
            .onMalformedInput(CodingErrorAction.REPORT)
            .onUnmappableCharacter(CodingErrorAction.REPORT)
        try {
            return decoder.decode(ByteBuffer.wrap(data)).toString()
        } catch (e: CharacterCodingException) {
            throw MetadataException("embedded $name is not UTF-8 text", e)
        }
    }

    companion object {
        private const val EOCD_SIG = 0x06054b50
        private const val CEN_SIG = 0x02014b50
        private const val LOC_SIG = 0x04034b50
        private const val EOCD_LEN = 22
        private const val MAX_COMMENT = 65535
        /** Largest packed file read (labels and JSON are a few KB). */
        const val MAX_ENTRY_BYTES = 64 shl 20

        /**
         * The archive appended to [model] (not moved), or null when it has none. [expected]: names of
         * files that should be packed; a local header of one of them near the end of a file without an
         * end record means the archive was cut off (a [MetadataException]), not that there is none.
         */
        fun read(model: ByteBuffer, expected: Collection<String> = listOf(TfliteMetadata.ENTRY)): PackedFiles? {
            val eocd = findEocd(model)
            if (eocd < 0) {
                for (name in expected) {
                    if (hasOrphanEntry(model, name)) corrupt("a $name entry but no end-of-central-directory record")
                }
                return null
            }
            val count = u16(model, eocd + 10)
            val cdSize = u32(model, eocd + 12)
            val cdOffset = u32(model, eocd + 16)
            if (cdSize == 0xFFFFFFFFL || cdOffset == 0xFFFFFFFFL || count == 0xFFFF) corrupt("ZIP64 is not supported")
            val cdStart = eocd - cdSize
            val archiveStart = cdStart - cdOffset
            if (cdStart < 0 || archiveStart < 0) corrupt("central directory outside the file")
            var at = cdStart.toInt()
            var firstHeader = Long.MAX_VALUE
            val entries = LinkedHashMap<String, Entry>()
            for (k in 0 until count) {
                if (!sig(model, at, CEN_SIG) || at + 46 > eocd) corrupt("bad central directory entry $k")
                val method = u16(model, at + 10)
                val crc = u32(model, at + 16)
                val compressed = u32(model, at + 20)
                val size = u32(model, at + 24)
                val nameLen = u16(model, at + 28)
                val extraLen = u16(model, at + 30)
                val commentLen = u16(model, at + 32)
                val local = archiveStart + u32(model, at + 42)
                if (at + 46 + nameLen > eocd) corrupt("central directory entry $k runs past its end")
                if (local > Int.MAX_VALUE || !sig(model, local.toInt(), LOC_SIG)) corrupt("no local header for entry $k")
                if (local < firstHeader) firstHeader = local
                val name = String(slice(model, at + 46, nameLen), Charsets.UTF_8)
                if (!entries.containsKey(name)) {
                    val l = local.toInt()
                    if (l + 30 > model.limit()) corrupt("local header of $name past the end of the file")
                    if (u16(model, l + 8) != method) corrupt("local and central headers of $name disagree")
                    val dataStart = l + 30L + u16(model, l + 26) + u16(model, l + 28)
                    if (compressed > Int.MAX_VALUE || size > MAX_ENTRY_BYTES) corrupt("$name too large")
                    if (dataStart + compressed > cdStart) corrupt("$name data overlaps the central directory")
                    entries[name] = Entry(method, crc, compressed.toInt(), size.toInt(), dataStart.toInt())
                }
                at += 46 + nameLen + extraLen + commentLen
            }
            if (entries.isEmpty()) return null
            return PackedFiles(model, firstHeader.toInt(), entries)
        }

        private fun corrupt(what: String): Nothing =
            throw MetadataException("the .tflite's metadata archive is corrupt or truncated: $what")

        private fun u16(b: ByteBuffer, at: Int): Int =
            (b.get(at).toInt() and 0xFF) or ((b.get(at + 1).toInt() and 0xFF) shl 8)

        private fun u32(b: ByteBuffer, at: Int): Long = (u16(b, at).toLong()) or (u16(b, at + 2).toLong() shl 16)

        private fun sig(b: ByteBuffer, at: Int, value: Int): Boolean =
            at >= 0 && at + 4 <= b.limit() && u32(b, at) == (value.toLong() and 0xFFFFFFFFL)

        private fun slice(b: ByteBuffer, at: Int, length: Int): ByteArray {
            if (at < 0 || length < 0 || at.toLong() + length > b.limit()) corrupt("data past the end of the file")
            val out = ByteArray(length)
            val view = b.duplicate()
            view.position(at)
            view.get(out, 0, length)
            return out
        }

        private fun inflate(raw: ByteArray, size: Int, name: String): ByteArray {
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
                if (n != size) corrupt("deflated $name is shorter than its recorded size")
                return out
            } catch (e: DataFormatException) {
                throw MetadataException("the .tflite's metadata archive is corrupt: bad deflate data in $name", e)
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

        /** A local header of [entry] near the end of the file: the archive is there but lost its end. */
        private fun hasOrphanEntry(b: ByteBuffer, entry: String): Boolean {
            val name = entry.toByteArray(Charsets.UTF_8)
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
    }
}
