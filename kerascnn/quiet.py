"""Commands print what the user asked for: no TensorFlow/absl start-up lines, no converter or runtime
chatter, no library deprecation warnings. ``KERASCNN_VERBOSE=1`` (or ``kerascnn --verbose``) brings them
all back for debugging.

TensorFlow, the TFLite converter, LiteRT and MediaPipe write from C++ straight to file descriptor 2,
before and regardless of Python's logging (``TF_CPP_MIN_LOG_LEVEL`` does not reach absl's early lines
such as ``E0000 ... failed call to cuInit``). :func:`native_quiet` sends descriptor 2 to a temporary file
for the duration of a noisy call, then writes back every line that is not known chatter, so a real
error message is never lost: it only comes after the call. A file, not a pipe: a C++ writer holding
the GIL can never block on it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings

ENV = "KERASCNN_VERBOSE"

# glog/absl lines ("I0000 00:00:1796122923.42 6309 file.cc:52] ...": info, warning, error; fatal "F" lines
# are kept), absl's pre-initialization banner, LiteRT's delegate notice, TensorFlow's CPU-feature and
# oneDNN notices, and the converter's quantization summary.
_CHATTER = re.compile(
    r"^(?:[IWE]\d{4} \d\d:\d\d:\d\d"
    r"|WARNING: All log messages before absl::InitializeLog"
    r"|INFO: (?:Created TensorFlow Lite|Initialized TensorFlow Lite)"
    r"|To enable the following instructions:|rebuild TensorFlow with the appropriate compiler flags"
    r"|.*oneDNN custom operations are on"
    r"|fully_quantize: \d+, inference_type:"
    r"|Estimated count of arithmetic ops"
    r"|.*\bWARNING:absl:"
    r")"
)


def verbose() -> bool:
    return os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no")


def set_verbose(on: bool = True):
    """Turn library output on (``--verbose``) for this process and the workers it starts."""
    os.environ[ENV] = "1" if on else "0"
    if on:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"


def is_chatter(line: str) -> bool:
    return bool(_CHATTER.match(line))


@contextlib.contextmanager
def native_quiet():
    """Hold back the C++ libraries' chatter on descriptor 2 during the block (see the module doc)."""
    if verbose():
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (a detached process): nothing to quiet
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [
                line
                for line in held.read().decode("utf-8", "replace").splitlines()
                if line.strip() and not is_chatter(line)
            ]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()


def quiet_python_libraries():
    """Python-side quiet: deprecation and user warnings from the libraries, absl/TensorFlow/tf2onnx
    logging below ERROR. Call once at command start; a no-op when verbose."""
    if verbose():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    for name in ("tensorflow", "tf2onnx", "absl", "keras", "h5py", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.ERROR)


def import_tensorflow():
    """Import TensorFlow (and Keras) with their start-up lines held back."""
    with native_quiet():
        import keras  # noqa: F401
        import tensorflow as tf  # noqa: F401

        tf.config.list_physical_devices()  # device discovery logs (cuInit on a CPU machine) happen here
        if not verbose():
            tf.get_logger().setLevel(logging.ERROR)
            with contextlib.suppress(Exception):
                from absl import logging as absl_logging

                absl_logging.set_verbosity(absl_logging.ERROR)
