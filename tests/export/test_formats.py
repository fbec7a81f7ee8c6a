"""The format table drives the CLI's choices and the README's list of files."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner
from kerascnn.export import formats

from kerascnn.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def _expand(token: str) -> list[str]:
    """``<name>_a|b|c.tflite`` -> ``<name>_a.tflite``, ``<name>_b.tflite``, ``<name>_c.tflite``."""
    if "|" not in token:
        return [token]
    first, *middle, last = token.split("|")
    if "." not in last:  # <name>_int8_report.json|txt|png: alternative extensions
        base, ext = first.rsplit(".", 1)
        return [f"{base}.{alt}" for alt in (ext, *middle, last)]
    prefix, head = re.match(r"(<name>_?)(.*)", first).groups()
    tail, ext = re.match(r"(.*?)(\.[a-z]+)$", last).groups()
    return [f"{prefix}{alt}{ext}" for alt in (head, *middle, tail)]


def test_the_readme_lists_every_file_the_table_writes():
    text = README.read_text()
    bullet = text[text.index("- The export folder:") :]
    bullet = bullet[: bullet.index("\n- ")]
    listed = {name for token in re.findall(r"`([^`]+)`", bullet) for name in _expand(token)}
    missing = [f"<name>{f.suffix}" for f in formats.FORMATS if f"<name>{f.suffix}" not in listed]
    assert not missing, f"README's export folder list lacks {missing}"


def test_cli_choices_come_from_the_table():
    result = CliRunner().invoke(main, ["export", "--help"])
    assert result.exit_code == 0
    assert f"[{'|'.join(formats.QUANTIZE)}]" in result.output.replace("\n", "").replace(" ", "")
    assert list(formats.QUANTIZE) == ["none", "dynamic", "float16", "int8", "int16x8", "mixed"]
    assert formats.KIND_BY_SUFFIX == {".keras": "keras", ".h5": "keras", ".tflite": "tflite", ".onnx": "onnx"}
    for fmt in formats.FORMATS:  # every file name is <model name><suffix>, unique
        assert sum(f.suffix == fmt.suffix for f in formats.FORMATS) == 1, fmt.suffix
