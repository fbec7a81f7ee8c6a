"""``python -m kerascnn.cli ARGS``: the ``kerascnn`` command, as the tests and bench scripts run it."""

import sys

from kerascnn.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
