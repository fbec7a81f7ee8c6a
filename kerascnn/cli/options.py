"""What several commands share: click's numeric option types, the parsers of option strings (each
raises ``click.BadParameter`` naming its option), and the TrainConfig defaults the commands show."""

from __future__ import annotations

import json

import click

from kerascnn import config as kconfig  # light: TrainConfig's defaults and choices

# numeric option types: a value out of range is refused by click, naming the option
POSITIVE_INT = click.IntRange(min=1)
POSITIVE_FLOAT = click.FloatRange(min=0, min_open=True)
NON_NEGATIVE_FLOAT = click.FloatRange(min=0)
PERCENT = click.FloatRange(0, 100)

TRAIN_DEFAULTS = kconfig.TrainConfig()  # the defaults `kerascnn train` shows


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
