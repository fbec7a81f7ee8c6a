"""The model zoo. Importing this package registers every family.

>>> from kerascnn.models import build, list_models
>>> list_models("resnet*")
>>> model = build("resnet20", num_classes=10)
"""

import importlib

from .blocks import InputShapeError  # noqa: F401
from .registry import (  # noqa: F401
    ModelEntry,
    UnknownModelError,
    build,
    get_entry,
    list_families,
    list_models,
    option_names,
    register_model,
    transfer_weights,
)

FAMILY_MODULES = ("lenet", "alexnet", "vgg", "nin", "inception", "resnet", "mobilenet", "densenet")
for _module in FAMILY_MODULES:
    importlib.import_module(f"{__name__}.{_module}")
