"""One base for every error kerascnn raises for a person to read (a bad option, file, layer or dataset).

Each module's error subclasses :class:`KerascnnError` and keeps the builtin base it always had
(``ValueError`` for bad input, ``RuntimeError`` for a step that failed), so ``except ValueError`` in
user code still works. The CLI catches ``KerascnnError`` in one place and prints its message, which
names the file, option or layer at fault; anything else is a bug and keeps its traceback.
"""


class KerascnnError(Exception):
    """A failure the user can fix from its message; the CLI prints it without a traceback."""


class ConfigError(KerascnnError, ValueError):
    """An option value that cannot work; the message starts with the option (``--mixup: ...``)."""
