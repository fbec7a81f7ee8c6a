package dev.kerascnn.core

/** A JSON text that cannot be parsed; [offset] is the character index where parsing stopped. */
class JsonException(message: String, val offset: Int) : RuntimeException("$message at offset $offset")

/**
 * A small, strict JSON (RFC 8259) parser: no library, so that the same source compiles with
 * kotlinc 1.3 and current Kotlin and runs on Android and a plain JVM.
 *
 * Values map to Kotlin as: object -> `Map<String, Any?>` (a [LinkedHashMap], key order kept), array ->
 * `List<Any?>`, string -> [String], number -> [Double], true/false -> [Boolean], null -> `null`.
 * Like Python's `json` module (which writes the metadata), it also reads `NaN`, `Infinity` and
 * `-Infinity`. Duplicate keys: the last one wins (as in Python).
 */
object Json {
    fun parse(text: String): Any? {
        val parser = Parser(text)
        parser.skipWhitespace()
        val value = parser.readValue(0)
        parser.skipWhitespace()
        if (!parser.atEnd()) throw parser.error("unexpected trailing character '${parser.peek()}'")
        return value
    }

    /** [parse] for a text that must be an object. */
    fun parseObject(text: String): Map<String, Any?> {
        val value = parse(text)
        if (value is Map<*, *>) {
            @Suppress("UNCHECKED_CAST")
            return value as Map<String, Any?>
        }
        throw JsonException("expected a JSON object, got ${typeName(value)}", 0)
    }

    fun typeName(value: Any?): String = when (value) {
        null -> "null"
        is Map<*, *> -> "an object"
        is List<*> -> "an array"
        is String -> "a string"
        is Double -> "a number"
        is Boolean -> "a boolean"
        else -> value.javaClass.simpleName
    }

    private const val MAX_DEPTH = 512

    private class Parser(val text: String) {
        var pos = 0

        fun atEnd(): Boolean = pos >= text.length

        fun peek(): Char = text[pos]

        fun error(message: String): JsonException = JsonException(message, pos)

        fun skipWhitespace() {
            while (pos < text.length) {
                val c = text[pos]
                if (c == ' ' || c == '\t' || c == '\n' || c == '\r') pos++ else return
            }
        }

        fun readValue(depth: Int): Any? {
            if (depth > MAX_DEPTH) throw error("nesting deeper than $MAX_DEPTH")
            if (atEnd()) throw error("unexpected end of input")
            val c = peek()
            if (c == '{') return readObject(depth)
            if (c == '[') return readArray(depth)
            if (c == '"') return readString()
            if (c == '-' || (c >= '0' && c <= '9')) return readNumber()
            if (text.startsWith("true", pos)) {
                pos += 4
                return true
            }
            if (text.startsWith("false", pos)) {
                pos += 5
                return false
            }
            if (text.startsWith("null", pos)) {
                pos += 4
                return null
            }
            if (text.startsWith("NaN", pos)) {
                pos += 3
                return Double.NaN
            }
            if (text.startsWith("Infinity", pos)) {
                pos += 8
                return Double.POSITIVE_INFINITY
            }
            throw error("unexpected character '$c'")
        }

        fun readObject(depth: Int): Map<String, Any?> {
            val result = LinkedHashMap<String, Any?>()
            pos++ // {
            skipWhitespace()
            if (!atEnd() && peek() == '}') {
                pos++
                return result
            }
            while (true) {
                skipWhitespace()
                if (atEnd() || peek() != '"') throw error("expected a string key")
                val key = readString()
                skipWhitespace()
                if (atEnd() || peek() != ':') throw error("expected ':' after key \"$key\"")
                pos++
                skipWhitespace()
                result[key] = readValue(depth + 1)
                skipWhitespace()
                if (atEnd()) throw error("unterminated object")
                val c = peek()
                pos++
                if (c == '}') return result
                if (c != ',') {
                    pos--
                    throw error("expected ',' or '}' in object")
                }
            }
        }

        fun readArray(depth: Int): List<Any?> {
            val result = ArrayList<Any?>()
            pos++ // [
            skipWhitespace()
            if (!atEnd() && peek() == ']') {
                pos++
                return result
            }
            while (true) {
                skipWhitespace()
                result.add(readValue(depth + 1))
                skipWhitespace()
                if (atEnd()) throw error("unterminated array")
                val c = peek()
                pos++
                if (c == ']') return result
                if (c != ',') {
                    pos--
                    throw error("expected ',' or ']' in array")
                }
            }
        }

        fun readString(): String {
            val start = pos
            pos++ // opening quote
            val out = StringBuilder()
            while (true) {
                if (atEnd()) {
                    pos = start
                    throw error("unterminated string")
                }
                val c = text[pos]
                if (c == '"') {
                    pos++
                    return out.toString()
                }
                if (c < ' ') throw error("control character in string")
                if (c != '\\') {
                    out.append(c)
                    pos++
                    continue
                }
                if (pos + 1 >= text.length) throw error("unterminated escape")
                val e = text[pos + 1]
                pos += 2
                if (e == '"') {
                    out.append('"')
                } else if (e == '\\') {
                    out.append('\\')
                } else if (e == '/') {
                    out.append('/')
                } else if (e == 'b') {
                    out.append('\b')
                } else if (e == 'f') {
                    out.append('\u000C')
                } else if (e == 'n') {
                    out.append('\n')
                } else if (e == 'r') {
                    out.append('\r')
                } else if (e == 't') {
                    out.append('\t')
                } else if (e == 'u') {
                    // \uXXXX: one UTF-16 unit; a surrogate pair arrives as two escapes and joins by itself.
                    if (pos + 4 > text.length) throw error("truncated \\u escape")
                    var code = 0
                    for (i in 0 until 4) {
                        val digit = hexValue(text[pos + i])
                        if (digit < 0) throw error("bad hex digit '${text[pos + i]}' in \\u escape")
                        code = code * 16 + digit
                    }
                    out.append(code.toChar())
                    pos += 4
                } else {
                    pos -= 2
                    throw error("bad escape '\\$e'")
                }
            }
        }

        fun readNumber(): Double {
            val start = pos
            if (peek() == '-') {
                pos++
                if (text.startsWith("Infinity", pos)) {
                    pos += 8
                    return Double.NEGATIVE_INFINITY
                }
            }
            if (atEnd()) throw error("truncated number")
            if (peek() == '0') {
                pos++
            } else if (peek() >= '1' && peek() <= '9') {
                skipDigits()
            } else {
                throw error("bad number")
            }
            if (!atEnd() && peek() == '.') {
                pos++
                if (skipDigits() == 0) throw error("digits expected after '.'")
            }
            if (!atEnd() && (peek() == 'e' || peek() == 'E')) {
                pos++
                if (!atEnd() && (peek() == '+' || peek() == '-')) pos++
                if (skipDigits() == 0) throw error("digits expected in exponent")
            }
            // java.lang.Double.parseDouble rounds correctly, so Python's shortest repr round-trips.
            return java.lang.Double.parseDouble(text.substring(start, pos))
        }

        fun skipDigits(): Int {
            val start = pos
            while (pos < text.length && text[pos] >= '0' && text[pos] <= '9') pos++
            return pos - start
        }

        fun hexValue(c: Char): Int {
            if (c >= '0' && c <= '9') return c - '0'
            if (c >= 'a' && c <= 'f') return c - 'a' + 10
            if (c >= 'A' && c <= 'F') return c - 'A' + 10
            return -1
        }
    }
}
