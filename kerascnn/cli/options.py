"""What several commands share: click's numeric option types, the parsers of option strings (each
raises ``click.BadParameter`` naming its option), and the TrainConfig defaults the commands show."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from kerascnn import config as kconfig  # light: TrainConfig's defaults and choices

# numeric option types: a value out of range is refused by click, naming the option
POSITIVE_INT = click.IntRange(min=1)
POSITIVE_FLOAT = click.FloatRange(min=0, min_open=True)
NON_NEGATIVE_FLOAT = click.FloatRange(min=0)
PERCENT = click.FloatRange(0, 100)

TRAIN_DEFAULTS = kconfig.TrainConfig()  # the defaults `kerascnn train` shows


class OutputPath(click.ParamType):
    """An output option's path, checked before any work starts: a file (``kind="file"``) must not be an
    existing folder, a folder (``kind="dir"``) must not be an existing file, and the nearest existing
    folder above it must be a folder the user can write in (not a file: ``--output notes.txt/run``).
    The value stays the string the user gave."""

    name = "path"

    def __init__(self, kind: str = "file"):
        self.kind = kind

    def convert(self, value, param, ctx):
        if value is None or not isinstance(value, str):
            return value
        problem = output_problem(value, self.kind)
        if problem:
            self.fail(problem, param, ctx)
        return value


def output_problem(value: str, kind: str = "file") -> str | None:
    """Why ``value`` cannot be written as a ``kind`` ("file" or "dir"), or None."""
    if not str(value).strip():
        return "an empty path"
    path = Path(value).expanduser()
    if kind == "file" and path.is_dir():
        return f"'{value}' is a folder; a file name is wanted here (such as '{Path(value) / 'out.json'}')"
    if kind == "dir" and path.exists() and not path.is_dir():
        return f"'{value}' is a file; a folder is wanted here (it is created when missing)"
    for parent in path.absolute().parents:
        if parent.is_dir():
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"cannot write in '{parent}' (permission denied)"
            return None
        if parent.exists() or parent.is_symlink():
            return f"'{parent}' is a file (or a broken link), so nothing can be written under it"
    return None


OUT_FILE = OutputPath("file")
OUT_DIR = OutputPath("dir")


def parse_shape(value: str | None, param_hint: str = "--input-shape"):
    """'224,224,3', '224x224x3' or '224,224' (channels from the model's default)."""
    if value is None:
        return None
    parts = value.lower().replace("x", ",").split(",")
    try:
        dims = tuple(int(p) for p in parts if p.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected H,W,C integers such as 224,224,3; got '{value}'", param_hint=param_hint
        ) from None
    if len(dims) not in (2, 3) or min(dims) < 1:
        raise click.BadParameter(
            f"expected H,W,C (or H,W) positive integers; got '{value}'", param_hint=param_hint
        )
    return dims


def parse_floats(value: str | None, param_hint: str):
    """'127.5,127.5,127.5' -> [127.5, 127.5, 127.5] (--mean, --std); None stays None."""
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated numbers, got '{value}'", param_hint=param_hint
        ) from None


def parse_exclude(values) -> dict:
    """--no-aug-for flip=5,7 -> {"flip": [5, 7]}."""
    result: dict[str, list[int]] = {}
    for value in values:
        op, _, classes = value.partition("=")
        try:
            result.setdefault(op.strip(), []).extend(int(c) for c in classes.split(",") if c.strip())
        except ValueError:
            raise click.BadParameter(
                f"expected OP=CLASS[,CLASS...] such as flip=5,7; got '{value}'", param_hint="--no-aug-for"
            ) from None
    return result


def parse_kwargs(values) -> dict:
    """--model-kwargs alpha=0.5 --model-kwargs shortcut=B -> {"alpha": 0.5, "shortcut": "B"}."""
    result = {}
    for value in values:
        key, sep, raw = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(
                f"expected KEY=VALUE such as alpha=0.5; got '{value}'", param_hint="--model-kwargs"
            )
        try:
            result[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            result[key.strip()] = raw  # a plain string such as shortcut=B
    return result
