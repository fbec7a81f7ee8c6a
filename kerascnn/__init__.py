"""kerascnn: the classic CNN architectures in Keras 3, from idea to phone.

The core, one room each: :mod:`.models` (the zoo and its registry), :mod:`.analysis` (params, MACs,
receptive fields), :mod:`.graph` (a user's nested model as one flat graph), :mod:`.data` (what DATA
means, decoding, caches, splits, the tf.data pipeline), :mod:`.augment`, :mod:`.config` and
:mod:`.recipe` (``kerascnn train``'s options and the defaults chosen from the data), :mod:`.train`,
:mod:`.callbacks` (what ``fit`` is given, one job each), :mod:`.optim` (schedule, optimizer, compile),
:mod:`.distribute` (strategy, cluster), :mod:`.runs` (the run folder, atomic writes) and :mod:`.lock`,
:mod:`.evaluate`, :mod:`.retrieval`, :mod:`.explain`, :mod:`.lab` (the experiments), :mod:`.errors`,
:mod:`.quiet`; :mod:`.cli` on top.
``kerascnn.export`` (the ``export/`` folder) converts, quantizes and validates; the core never imports it.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"
