package dev.kerascnn.core

import org.junit.Assert.assertEquals
import org.junit.Test
import java.io.File

class LabelsTest {
    @Test
    fun oneLabelPerLineWithTrailingNewline() {
        assertEquals(listOf("cat", "dog"), Labels.parse("cat\ndog\n"))
    }

    @Test
    fun noTrailingNewline() {
        assertEquals(listOf("cat", "dog"), Labels.parse("cat\ndog"))
    }

    @Test
    fun windowsAndOldMacLineEnds() {
        assertEquals(listOf("cat", "dog", "bird"), Labels.parse("cat\r\ndog\r\nbird\r\n"))
        assertEquals(listOf("cat", "dog"), Labels.parse("cat\rdog\r"))
    }

    @Test
    fun innerAndOuterSpacesAreKept() {
        assertEquals(listOf("T-shirt/top", "Ankle boot", " padded "), Labels.parse("T-shirt/top\nAnkle boot\n padded \n"))
    }

    @Test
    fun blankLinesAndAByteOrderMarkAreSkipped() {
        // as Python's read_labels_txt: whitespace-only lines are no labels
        assertEquals(listOf("a", "b"), Labels.parse("\uFEFFa\n\n  \nb\n\n"))
        assertEquals(emptyList<String>(), Labels.parse(""))
        assertEquals(emptyList<String>(), Labels.parse("\n"))
    }

    @Test
    fun nonAsciiLabels() {
        assertEquals(listOf("\u00e9t\u00e9", "\u8fd0\u52a8\u978b", "\ud83d\udc5f"), Labels.parse("\u00e9t\u00e9\n\u8fd0\u52a8\u978b\n\ud83d\udc5f\n"))
    }

    @Test
    fun formatRoundTrips() {
        val labels = listOf("T-shirt/top", "Ankle boot", "\u00e9t\u00e9")
        assertEquals("T-shirt/top\nAnkle boot\n\u00e9t\u00e9\n", Labels.format(labels))
        assertEquals(labels, Labels.parse(Labels.format(labels)))
    }

    @Test
    fun theDemoModelsLabelsTxt() {
        val text = String(File(Fixtures.models, "labels.txt").readBytes(), Charsets.UTF_8)
        val labels = Labels.parse(text)
        assertEquals(10, labels.size)
        assertEquals("T-shirt/top", labels[0])
        assertEquals("Ankle boot", labels[9])
    }
}
