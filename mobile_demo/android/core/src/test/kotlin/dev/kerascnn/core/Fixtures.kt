package dev.kerascnn.core

import java.io.File
import org.junit.Assert.fail

/**
 * The repository's shared files: `mobile_demo/fixtures` (golden fixtures written by
 * `tests/mobile/test_golden_fixtures.py`) and `mobile_demo/models` (the committed demo export).
 * The repository root comes from the system property `kerascnn.repo` (run_tests.sh sets it), the
 * environment variable `KERASCNN_REPO`, or the first parent of the working directory that holds
 * `mobile_demo/fixtures/manifest.json` (Gradle runs tests in the module folder).
 */
object Fixtures {
    val root: File by lazy { findRoot() }
    val fixtures: File get() = File(root, "mobile_demo/fixtures")
    val models: File get() = File(root, "mobile_demo/models")

    val manifest: Map<String, Any?> by lazy {
        Json.parseObject(String(File(fixtures, "manifest.json").readBytes(), Charsets.UTF_8))
    }

    private fun findRoot(): File {
        val given = System.getProperty("kerascnn.repo") ?: System.getenv("KERASCNN_REPO")
        if (given != null && given.length > 0) {
            val dir = File(given).absoluteFile
            if (!File(dir, "mobile_demo/fixtures/manifest.json").isFile) {
                throw IllegalStateException("kerascnn.repo=$given has no mobile_demo/fixtures/manifest.json")
            }
            return dir
        }
        var dir: File? = File(System.getProperty("user.dir")).absoluteFile
        while (dir != null) {
            if (File(dir, "mobile_demo/fixtures/manifest.json").isFile) return dir
            dir = dir.parentFile
        }
        throw IllegalStateException(
            "cannot find the repository root (mobile_demo/fixtures/manifest.json) above " +
                System.getProperty("user.dir") + "; set -Dkerascnn.repo=DIR"
        )
    }

    fun bytes(relative: String): ByteArray = File(fixtures, relative).readBytes()

    @Suppress("UNCHECKED_CAST")
    fun obj(value: Any?): Map<String, Any?> = value as Map<String, Any?>

    @Suppress("UNCHECKED_CAST")
    fun list(value: Any?): List<Any?> = value as List<Any?>

    fun int(value: Any?): Int = (value as Double).toInt()

    fun cases(key: String): List<Map<String, Any?>> {
        val out = ArrayList<Map<String, Any?>>()
        for (item in list(manifest[key])) out.add(obj(item))
        return out
    }

    /** A configuration of the manifest's "configs" as metadata (like the Python test's ModelMetadata). */
    fun configMetadata(name: String): ModelMetadata {
        val config = LinkedHashMap<String, Any?>(obj(obj(manifest["configs"])[name]))
        config["model_name"] = "fixture"
        config["labels"] = listOf("a")
        return ModelMetadata.fromMap(config, "config $name")
    }

    /** Little-endian 32-bit ints (the `.argb` pixel files). */
    fun ints(data: ByteArray): IntArray {
        val out = IntArray(data.size / 4)
        for (i in out.indices) {
            val j = i * 4
            out[i] = (data[j].toInt() and 0xFF) or ((data[j + 1].toInt() and 0xFF) shl 8) or
                ((data[j + 2].toInt() and 0xFF) shl 16) or ((data[j + 3].toInt() and 0xFF) shl 24)
        }
        return out
    }
}

/** An exception's message, "" when it has none (no `!!` needed in assertions). */
fun messageOf(e: Throwable): String = e.message ?: ""

/** The MetadataException [block] throws; fails the test (naming [what]) when it throws none. */
fun expectMetadataError(what: String, block: () -> Unit): MetadataException {
    try {
        block()
    } catch (e: MetadataException) {
        return e
    }
    fail("expected a MetadataException: $what")
    throw AssertionError()
}
