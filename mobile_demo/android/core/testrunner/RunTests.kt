package dev.kerascnn.core.testrunner

import org.junit.runner.Description
import org.junit.runner.JUnitCore
import org.junit.runner.Request
import org.junit.runner.notification.Failure
import org.junit.runner.notification.RunListener

/**
 * Runs JUnit 4 test classes (names given as arguments) and prints each test's outcome, the failures'
 * details, and as the last line `N passed, N failed` (`, N skipped` when some were ignored).
 * Exits 1 when a test failed or none ran. Used by run_tests.sh (Gradle runs the same tests with its
 * own runner, so this file is outside the Gradle source sets).
 */
class CountingListener : RunListener() {
    var passed = 0
    var failed = 0
    var skipped = 0
    val failures = ArrayList<Failure>()
    private var current: Description? = null
    private var currentFailed = false

    override fun testStarted(description: Description) {
        current = description
        currentFailed = false
    }

    override fun testFailure(failure: Failure) {
        failures.add(failure)
        val description = failure.description
        if (current != null && description == current) {
            currentFailed = true
        } else {
            // a failure outside a test (e.g. a class that cannot be set up) counts as one failed test
            failed++
            println("FAIL  ${failure.testHeader}")
        }
    }

    override fun testAssumptionFailure(failure: Failure) {
        skipped++
        current = null
        println("SKIP  ${failure.testHeader}: ${failure.message}")
    }

    override fun testIgnored(description: Description) {
        skipped++
        println("SKIP  ${description.displayName}")
    }

    override fun testFinished(description: Description) {
        if (current == null || description != current) return
        if (currentFailed) {
            failed++
            println("FAIL  ${description.displayName}")
        } else {
            passed++
            println("ok    ${description.displayName}")
        }
        current = null
    }
}

fun main(args: Array<String>) {
    if (args.isEmpty()) {
        System.err.println("usage: RunTests TEST_CLASS...")
        System.exit(2)
    }
    val classes = ArrayList<Class<*>>()
    for (name in args) classes.add(Class.forName(name))
    val core = JUnitCore()
    val listener = CountingListener()
    core.addListener(listener)
    for (cls in classes) core.run(Request.aClass(cls))
    if (listener.failures.isNotEmpty()) {
        println()
        println("Failures:")
        var n = 1
        for (failure in listener.failures) {
            println("$n) ${failure.testHeader}")
            val trace = failure.trace.split("\n")
            var shown = 0
            for (line in trace) {
                if (line.contains("org.junit.runners.") || line.contains("sun.reflect.") ||
                    line.contains("jdk.internal.reflect.") || line.contains("java.lang.reflect.")) {
                    continue
                }
                println("    $line")
                shown++
                if (shown >= 25) {
                    println("    ...")
                    break
                }
            }
            n++
        }
        println()
    }
    val tail = if (listener.skipped > 0) ", ${listener.skipped} skipped" else ""
    println("${listener.passed} passed, ${listener.failed} failed$tail")
    System.out.flush()
    System.exit(if (listener.failed > 0 || listener.passed == 0) 1 else 0)
}
