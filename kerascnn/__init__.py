"""kerascnn: the classic CNN architectures in Keras 3, from idea to phone."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"
