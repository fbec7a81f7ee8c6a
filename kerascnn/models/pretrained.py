"""ImageNet weights for the zoo models that have a keras.applications twin with published weights.

kerascnn's vgg16/19, resnet50/101/152, mobilenet_v1, mobilenet_v2 and densenet121/169/201 are built layer
for layer as their keras.applications twins (the same layer names and shapes), so the weights Keras
publishes load into them. The files are the ones keras.applications asks for (:func:`weights_file`: the
same names and URLs, checked against Keras by a test), kept where Keras keeps them (``KERAS_HOME``, by
default ``~/.keras``, under ``models/``) and read in the legacy HDF5 layout of the published files.

A file never enters the cache (or a ``weights fetch`` folder) unchecked (:func:`check_file`): against
the md5 keras.applications passes to ``get_file`` where Keras publishes one (not the MobileNets), else
layer by layer against the keras.applications model the file is named for (built with ``weights=None``
at its width, with or without the classifier): every layer with weights in the file with the same
shapes, and no other. A file that fails is refused, naming the first mismatch (and the published file it
looks like, when it is another width), and nothing is replaced; a different good file under a cached
name replaces it only with ``force``.

Downloads are kerascnn's own (:func:`timeouts`; ``requests``, which takes proxies from the environment):
streamed to a temporary file in the target folder, with a connect timeout and a read timeout (between
bytes; ``KERASCNN_CONNECT_TIMEOUT`` / ``KERASCNN_READ_TIMEOUT``, or ``weights fetch --timeout``), checked,
then renamed. A timeout, an error or Ctrl-C leaves nothing behind and the error names the URL and the
timeout that ran out. ``KERASCNN_OFFLINE=1`` turns the downloads of :func:`locate` off.

:func:`load_imagenet` copies a file into a built model by layer name. Every layer of the file must be in
the model with the same weight shapes, and every other layer of the model must be a classifier layer
(a new head): otherwise nothing is copied and the error names the first layer that does not match.

The input normalization the weights were trained with (:func:`normalization`, in pixel units, RGB)
becomes the run's, so the exported files' metadata says it:

* ``tf`` (MobileNets): ``x / 127.5 - 1``, [-1, 1];
* ``caffe`` (VGG, ResNet): BGR, minus the ImageNet mean. kerascnn reverses the input channels of the
  first convolution's kernel instead, so the model takes RGB like every other (and like a phone camera)
  and subtracts the mean in RGB order: the same numbers out;
* ``torch`` (DenseNet): ``(x / 255 - mean) / std`` with the ImageNet mean and std.

An offline machine gets the files from a connected one: ``kerascnn weights fetch MODEL --out DIR`` there,
``kerascnn weights add DIR`` here (:func:`fetch`, :func:`add`); ``kerascnn weights list`` shows the cache.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kerascnn.errors import KerascnnError
from kerascnn.keras_internals import hdf5_attribute
from kerascnn.runs import file_digest

STORE = "https://storage.googleapis.com/tensorflow/keras-applications/"  # Keras' weights store
CACHE_SUBDIR = "models"  # keras.applications' cache_subdir
MANIFEST = "kerascnn-weights.json"  # what `kerascnn weights fetch` writes beside the files
CONNECT_TIMEOUT = 15.0  # seconds to wait for a connection (KERASCNN_CONNECT_TIMEOUT)
READ_TIMEOUT = 60.0  # seconds to wait for the answer, then between bytes (KERASCNN_READ_TIMEOUT)


class WeightsError(KerascnnError, RuntimeError):
    """ImageNet weights that cannot be found, fetched or copied; the message names the file or layer."""


@dataclass(frozen=True)
class Family:
    app: str  # the keras.applications builder
    preprocessing: str  # "tf" | "caffe" | "torch"
    folder: str  # its folder in Keras' weights store
    top_layers: tuple[str, ...]  # the layers only the with-top file holds (the classifier)
    alphas: tuple[float, ...] = ()  # width multipliers with published weights (MobileNets)
    sizes: tuple[int, ...] = ()  # input sides with published weights (MobileNets)
    first_conv: str | None = None  # caffe: the convolution whose input channels are reversed (BGR -> RGB)


FAMILIES = {
    "vgg16": Family("VGG16", "caffe", "vgg16", ("fc1", "fc2", "predictions"), first_conv="block1_conv1"),
    "vgg19": Family("VGG19", "caffe", "vgg19", ("fc1", "fc2", "predictions"), first_conv="block1_conv1"),
    "resnet50": Family("ResNet50", "caffe", "resnet", ("predictions",), first_conv="conv1_conv"),
    "resnet101": Family("ResNet101", "caffe", "resnet", ("predictions",), first_conv="conv1_conv"),
    "resnet152": Family("ResNet152", "caffe", "resnet", ("predictions",), first_conv="conv1_conv"),
    "mobilenet_v1": Family(
        "MobileNet", "tf", "mobilenet", ("conv_preds",), (0.25, 0.5, 0.75, 1.0), (128, 160, 192, 224)
    ),
    "mobilenet_v2": Family(
        "MobileNetV2",
        "tf",
        "mobilenet_v2",
        ("predictions",),
        (0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
        (96, 128, 160, 192, 224),
    ),  # fmt: skip
    "densenet121": Family("DenseNet121", "torch", "densenet", ("predictions",)),
    "densenet169": Family("DenseNet169", "torch", "densenet", ("predictions",)),
    "densenet201": Family("DenseNet201", "torch", "densenet", ("predictions",)),
}

# The hashes keras.applications passes to get_file (md5; none for the MobileNets), by file name.
_HASHES = {
    "vgg16_weights_tf_dim_ordering_tf_kernels.h5": "64373286793e3c8b2b4e3219cbf3544b",
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5": "6d6bbae143d832006294945121d1f1fc",
    "vgg19_weights_tf_dim_ordering_tf_kernels.h5": "cbe5617147190e668d6c5d5026f83318",
    "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5": "253f8cb515780f3b799900260a226db6",
    "resnet50_weights_tf_dim_ordering_tf_kernels.h5": "2cb95161c43110f7111970584f804107",
    "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5": "4d473c1dd8becc155b73f8504c6f6626",
    "resnet101_weights_tf_dim_ordering_tf_kernels.h5": "f1aeb4b969a6efcfb50fad2f0c20cfc5",
    "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5": "88cf7a10940856eca736dc7b7e228a21",
    "resnet152_weights_tf_dim_ordering_tf_kernels.h5": "100835be76be38e30d865e96f2aaae62",
    "resnet152_weights_tf_dim_ordering_tf_kernels_notop.h5": "ee4c566cf9a93f14d82f913c2dc6dd0c",
    "densenet121_weights_tf_dim_ordering_tf_kernels.h5": "9d60b8095a5708f2dcce2bca79d332c7",
    "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5": "30ee3e1110167f948a6b9946edeeb738",
    "densenet169_weights_tf_dim_ordering_tf_kernels.h5": "d699b8f76981ab1b30698df4c175e90b",
    "densenet169_weights_tf_dim_ordering_tf_kernels_notop.h5": "b8c4d4c20dd625c148057b9ff1c1176b",
    "densenet201_weights_tf_dim_ordering_tf_kernels.h5": "1ceb130c1ea1b78c3bf6114dbdfd8807",
    "densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5": "c13680b51ded0fb44dff2d8f86ac8bb1",
}

# (mean, std) in pixel units, RGB order, per preprocessing mode (keras.applications.imagenet_utils)
NORMALIZATION = {
    "tf": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    "caffe": ((123.68, 116.779, 103.939), (1.0, 1.0, 1.0)),
    "torch": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
}
_MODE_TEXT = {
    "tf": "x / 127.5 - 1, [-1, 1]",
    "caffe": "minus the ImageNet mean (caffe; kerascnn's first convolution takes RGB, not BGR)",
    "torch": "(x / 255 - mean) / std with the ImageNet mean and std (torch)",
}


@dataclass(frozen=True)
class WeightsFile:
    """One published weights file: what it is for, and where Keras gets it."""

    model: str
    alpha: float | None  # MobileNets only
    size: int | None  # MobileNets only: the input side it was trained at
    top: bool  # with the ImageNet classifier
    name: str
    url: str
    file_hash: str | None

    def path(self) -> Path:
        return cache_dir() / self.name

    def cached(self) -> bool:
        return self.path().is_file()

    def describe(self) -> str:
        what = self.model
        if self.alpha is not None:
            what += f" alpha {self.alpha:g} at {self.size}"
        return what + (" with its ImageNet classifier" if self.top else "")


def cache_dir() -> Path:
    """Where keras.applications keeps its weights: ``$KERAS_HOME/models`` (read now, not when Keras was
    imported), else ``~/.keras/models`` (``/tmp/.keras/models`` when the home folder is not writable)."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return Path(home).expanduser() / CACHE_SUBDIR


def family(model: str) -> Family:
    try:
        return FAMILIES[model]
    except KeyError:
        raise ValueError(
            f"weights='imagenet': '{model}' has no published ImageNet weights; the models that do: "
            f"{', '.join(FAMILIES)}"
        ) from None


def check_alpha(model: str, alpha: float) -> float:
    fam = family(model)
    if fam.alphas and float(alpha) not in fam.alphas:
        raise ValueError(
            f"{model}: ImageNet weights are published for alpha {', '.join(f'{a:g}' for a in fam.alphas)} "
            f"only, not {alpha:g}"
        )
    return float(alpha)


def weights_file(model: str, alpha: float = 1.0, size: int | None = None, top: bool = False) -> WeightsFile:
    """The file keras.applications asks for: for a MobileNet, the one trained at ``size`` when it is a
    published size, else at 224 (as Keras does; the weights' shapes do not depend on the input size)."""
    fam = family(model)
    if not fam.alphas:
        name = f"{model}_weights_tf_dim_ordering_tf_kernels{'' if top else '_notop'}.h5"
        return WeightsFile(model, None, None, top, name, f"{STORE}{fam.folder}/{name}", _HASHES[name])
    alpha = check_alpha(model, alpha)
    size = size if size in fam.sizes else 224
    if model == "mobilenet_v1":
        text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[alpha]
        name = f"mobilenet_{text}_{size}_tf{'' if top else '_no_top'}.h5"
    else:
        name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{size}{'' if top else '_no_top'}.h5"
    return WeightsFile(model, alpha, size, top, name, f"{STORE}{fam.folder}/{name}", None)


def published(model: str | None = None) -> list[WeightsFile]:
    """Every published file (of ``model``, or of all the families)."""
    out = []
    for name in [model] if model else FAMILIES:
        fam = family(name)
        for alpha in fam.alphas or (1.0,):
            for size in fam.sizes or (None,):
                out += [weights_file(name, alpha, size, top) for top in (False, True)]
    return out


def by_name(file_name: str) -> WeightsFile | None:
    return next((f for f in published() if f.name == file_name), None)


def cached(model: str | None = None, top: bool | None = None) -> list[WeightsFile]:
    """The published files in the cache (of ``model``; with or without the classifier when ``top`` is
    given)."""
    return [f for f in published(model) if f.cached() and (top is None or f.top == top)]


def hash_status(wanted: WeightsFile) -> str:
    """Whether the cached ``wanted`` is the file Keras publishes: "md5 checked" (it matches the hash
    keras.applications passes to get_file), "md5 mismatch", or "no published hash" (the MobileNets:
    Keras publishes none, so nothing can tell a file of that name from another)."""
    if wanted.file_hash is None:
        return "no published hash"
    md5 = file_digest(wanted.path(), "md5", usedforsecurity=False)
    return "md5 checked" if md5 == wanted.file_hash else "md5 mismatch"


def normalization(model: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) in pixel units, RGB: the input the ImageNet weights of ``model`` expect."""
    return NORMALIZATION[family(model).preprocessing]


def describe_normalization(model: str) -> str:
    return _MODE_TEXT[family(model).preprocessing]


def fetch_commands(wanted: WeightsFile) -> str:
    option = f" --alpha {wanted.alpha:g} --input-size {wanted.size}" if wanted.alpha is not None else ""
    option += " --include-top" if wanted.top else ""
    return (
        f"on a machine with internet, `kerascnn weights fetch {wanted.model}{option} --out DIR`, then here "
        "`kerascnn weights add DIR`"
    )


def locate(wanted: WeightsFile, download: bool = True) -> tuple[Path, str | None]:
    """(path, note): ``wanted`` from the cache; for a MobileNet, another size of the same width from the
    cache (note says which); else downloaded into the cache (:func:`timeouts` bound it). Raises
    :class:`WeightsError` naming the file, the cache and the commands that bring it."""
    download = download and os.environ.get("KERASCNN_OFFLINE") != "1"
    if wanted.cached():
        return wanted.path(), None
    if wanted.alpha is not None:
        same = [f for f in cached(wanted.model, wanted.top) if f.alpha == wanted.alpha]
        if same:
            best = min(same, key=lambda f: abs(f.size - wanted.size))
            return best.path(), f"the {best.size} px file (the weights do not depend on the input size)"
    problem = "and downloads are off here (KERASCNN_OFFLINE=1)" if not download else ""
    if download:
        try:
            return _download(wanted, cache_dir()), None
        except WeightsError as e:  # a timeout, a proxy, a bad hash: it says which
            problem = f"and {e}"
    raise WeightsError(
        f"--weights imagenet: {wanted.describe()} needs the file {wanted.name} in the Keras cache "
        f"({cache_dir()}), {problem}. To bring it: {fetch_commands(wanted)}"
    )


# ------------------------------------------------------------------------------------------------
# Checking a file, downloading one
# ------------------------------------------------------------------------------------------------


@functools.cache
def _layer_shapes(model: str, alpha: float | None, top: bool) -> dict[str, tuple]:
    """{layer: its weights' shapes} of the keras.applications model a published file is for, built with
    ``weights=None`` (a MobileNet at 96 px: its shapes depend on the width, not on the input size)."""
    import keras

    fam = family(model)
    kw = {"alpha": alpha} if fam.alphas else {}
    shape = (96, 96, 3) if fam.alphas else None
    net = getattr(keras.applications, fam.app)(weights=None, include_top=top, input_shape=shape, **kw)
    return {layer.name: tuple(tuple(w.shape) for w in layer.weights) for layer in net.layers if layer.weights}


def _first_mismatch(stored: dict[str, tuple], expected: dict[str, tuple], what: str) -> str | None:
    """The first layer (in the model's order) where a file's {layer: shapes} differs from a model's."""
    for name, shapes in expected.items():
        if name not in stored:
            return f"it holds no layer '{name}', which {what} has (the file's layers: {_some(stored)})"
        if stored[name] != shapes:
            return (
                f"its layer '{name}' holds weights of shapes {_text(stored[name])}, {what}'s {_text(shapes)}"
            )
    extra = [name for name in stored if name not in expected]
    if extra:
        return f"it holds a layer '{extra[0]}' that {what} does not have"
    return None


def _some(names) -> str:
    names = list(names)
    return ", ".join(names[:4]) + (f", ... ({len(names)} layers)" if len(names) > 4 else "")


def _text(shapes: tuple) -> str:
    return str([tuple(int(d) for d in s) for s in shapes])


def _looks_like(stored: dict[str, tuple], wanted: WeightsFile) -> WeightsFile | None:
    """The published MobileNet file whose layers and shapes ``stored`` has (another width, or with the
    classifier where ``wanted`` is without), if one does."""
    for model, fam in FAMILIES.items():
        if not fam.alphas:
            continue
        top = fam.top_layers[-1] in stored
        size = wanted.size if model == wanted.model else 224
        first = wanted.alpha if model == wanted.model else fam.alphas[0]
        if set(_layer_shapes(model, first, top)) != set(stored):
            continue  # another family's layer names: no width of it matches
        for alpha in fam.alphas:
            if _layer_shapes(model, alpha, top) == stored:
                return weights_file(model, alpha, size, top)
    return None


def check_file(path, wanted: WeightsFile, label: str | None = None) -> str:
    """Raise :class:`WeightsError` unless the file at ``path`` is the published ``wanted``: its md5 the one
    keras.applications knows, or (no published hash: the MobileNets) every layer with weights of the
    keras.applications model it is for in the file with the same shapes, and no other layer. ``label``:
    how the message names the file (default: the path). Returns what was checked."""
    label = label or str(path)
    if wanted.file_hash is not None:
        md5 = file_digest(path, "md5", usedforsecurity=False)
        if md5 != wanted.file_hash:
            raise WeightsError(
                f"{label}: not the {wanted.name} Keras publishes: its md5 is {md5}, the published file's "
                f"{wanted.file_hash} (another file under that name, a damaged download or a proxy's page)"
            )
        return "md5 checked"
    try:
        stored = {name: tuple(v.shape for v in values) for name, values in read_h5_weights(path).items()}
    except WeightsError as e:
        raise WeightsError(f"{label}: {str(e).removeprefix(f'{path}: ')}") from None
    what = f"the {wanted.describe()}" + ("" if wanted.top else " without its classifier")
    expected = _layer_shapes(wanted.model, wanted.alpha, wanted.top)
    mismatch = _first_mismatch(stored, expected, what)
    if mismatch:
        other = _looks_like(stored, wanted)
        looks = f"; it looks like {other.name} ({other.describe()})" if other else ""
        raise WeightsError(f"{label}: not the {wanted.name} Keras publishes: {mismatch}{looks}")
    return "layers checked"


def timeouts(timeout: float | None = None) -> tuple[float, float]:
    """(connect, read) seconds for a download: ``timeout`` for both when given, else
    ``KERASCNN_CONNECT_TIMEOUT`` / ``KERASCNN_READ_TIMEOUT``, else :data:`CONNECT_TIMEOUT` /
    :data:`READ_TIMEOUT` (the read timeout bounds the wait for the answer, then between bytes)."""
    if timeout is not None:
        if not timeout > 0:
            raise WeightsError(f"timeout {timeout}: not a number of seconds above 0")
        return float(timeout), float(timeout)
    out = []
    for var, default in (
        ("KERASCNN_CONNECT_TIMEOUT", CONNECT_TIMEOUT),
        ("KERASCNN_READ_TIMEOUT", READ_TIMEOUT),
    ):
        text = os.environ.get(var) or str(default)
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not value > 0:  # nan too
            raise WeightsError(
                f"{var}={text!r}: not a number of seconds above 0 (the default is {default:g})"
            )
        out.append(value)
    return out[0], out[1]


def _url(wanted: WeightsFile, base_url: str | None) -> str:
    return f"{base_url.rstrip('/')}/{wanted.name}" if base_url else wanted.url


def _download(wanted: WeightsFile, folder: Path, base_url=None, timeout=None) -> Path:
    """Download ``wanted`` into ``folder`` under its name (see :func:`_download_checked`)."""
    tmp = _download_checked(wanted, folder, base_url, timeout)
    try:
        os.replace(tmp, folder / wanted.name)
    finally:
        tmp.unlink(missing_ok=True)
    return folder / wanted.name


def _download_checked(wanted: WeightsFile, folder: Path, base_url=None, timeout=None) -> Path:
    """Stream ``wanted`` (from ``base_url``, a mirror, or Keras' store) into a temporary file in
    ``folder`` and :func:`check_file` it: the temporary path. A timeout, an HTTP error, a file that fails
    the check, Ctrl-C: the temporary file is removed; a :class:`WeightsError` names the URL and why."""
    import requests

    url = _url(wanted, base_url)
    connect, read = timeouts(timeout)
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=f".{wanted.name}.", suffix=".part")
    tmp, got, size = Path(name), 0, None
    try:
        with os.fdopen(fd, "wb") as f, requests.get(url, stream=True, timeout=(connect, read)) as answer:
            answer.raise_for_status()
            size = answer.headers.get("Content-Length") or ""  # None: no answer yet
            for block in answer.iter_content(1 << 16):
                f.write(block)
                got += len(block)
        check_file(tmp, wanted, label=f"{url} (downloaded)")
        return tmp
    except WeightsError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as e:  # noqa: BLE001 - a timeout, a proxy, a 404, a full disk: say which
        tmp.unlink(missing_ok=True)
        raise WeightsError(_download_problem(url, folder, e, (connect, read), got, size)) from None
    except BaseException:  # Ctrl-C: nothing left behind either
        tmp.unlink(missing_ok=True)
        raise


def _download_problem(url: str, folder: Path, e: Exception, limits, got: int, size) -> str:
    import requests
    import urllib3

    connect, read = limits
    proxy = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
    via = f" through the proxy {proxy} (from the environment)" if proxy else ""
    of = f" of {size}" if size else ""
    longer = (
        "; give it longer with {var}=SECONDS (or `kerascnn weights fetch --timeout SECONDS`), the default "
        "is {default:g} s"
    )
    if isinstance(e, requests.ConnectTimeout):
        why = f"no connection within {connect:g} s (the connect timeout)"
        why += longer.format(var="KERASCNN_CONNECT_TIMEOUT", default=CONNECT_TIMEOUT)
    elif isinstance(e, requests.ReadTimeout) or (
        isinstance(e, requests.ConnectionError)
        and e.args
        and isinstance(e.args[0], urllib3.exceptions.ReadTimeoutError)
    ):
        when = "no answer" if size is None else f"the download stalled at {got}{of} bytes: no data"
        why = f"{when} for {read:g} s (the read timeout)" + longer.format(
            var="KERASCNN_READ_TIMEOUT", default=READ_TIMEOUT
        )
    elif isinstance(e, requests.ConnectionError):  # refused, no such host, a proxy that is not there
        why = f"could not connect ({getattr(e.args[0], 'reason', e.args[0]) if e.args else e})"
    elif isinstance(e, requests.HTTPError):
        why = f"HTTP {e.response.status_code} {e.response.reason}"
    elif isinstance(e, requests.exceptions.ChunkedEncodingError):
        why = f"the connection closed after {got}{of} bytes"
    elif isinstance(e, OSError) and e.errno == errno.ENOSPC:
        why = f"the disk is full ({folder}); free some space and try again"
    else:
        why = f"{type(e).__name__}: {e}"
    return f"could not download {url}{via}: {why}. Nothing was kept"


@dataclass
class Loaded:
    """What :func:`load_imagenet` copied."""

    file: Path
    copied: int  # layers with weights copied from the file
    total: int  # layers with weights in the model
    new: list[str]  # the model's layers the file does not hold (a new classifier head)
    note: str | None = None

    def line(self) -> str:
        new = f" (new: {', '.join(self.new)})" if self.new else ""
        note = f"; {self.note}" if self.note else ""
        return (
            f"--weights imagenet: {self.file.name}{note}: Layers copied: {self.copied} of {self.total}{new}"
        )


def read_h5_weights(path) -> dict[str, list[np.ndarray]]:
    """The layers' weights of a Keras HDF5 weights file (the legacy layout of the published files, or a
    whole-model ``.h5``), by layer name, in the order the layer holds them."""
    import h5py

    out = {}
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            for layer in hdf5_attribute(group, "layer_names"):
                names = hdf5_attribute(group[layer], "weight_names")
                if names:
                    out[layer] = [np.asarray(group[layer][n]) for n in names]
    except (OSError, KeyError, ValueError) as e:
        raise WeightsError(f"{path}: not a Keras HDF5 weights file ({type(e).__name__}: {e})") from None
    if not out:
        raise WeightsError(f"{path}: holds no layer weights")
    return out


def load_imagenet(model, name: str, alpha: float = 1.0, top: bool | None = None, download=True) -> Loaded:
    """Copy the ImageNet weights of ``name`` (a zoo model with a keras.applications twin) into the built
    ``model``, by layer name; ``top``: the file with the classifier (default: when the model's head is
    the 1000-class ImageNet one). Nothing is copied unless everything matches (see the module doc)."""
    fam = family(name)
    head = next((layer for layer in model.layers if layer.name == fam.top_layers[-1] and layer.weights), None)
    if top is None:
        top = head is not None and int(head.weights[0].shape[-1]) == 1000
    size = model.input_shape[1] if model.input_shape[1] == model.input_shape[2] else None
    path, note = locate(weights_file(name, alpha, size, top), download)
    stored = read_h5_weights(path)
    ours = {layer.name: layer for layer in model.layers if layer.weights}
    for layer_name, values in stored.items():
        layer = ours.get(layer_name)
        if layer is None:
            raise WeightsError(
                f"{path.name}: its layer '{layer_name}' is not in {model.name} (built with other options "
                f"than the {fam.app} the file is for?)"
            )
        have = [tuple(w.shape) for w in layer.weights]
        want = [v.shape for v in values]
        if have != want:
            raise WeightsError(
                f"{path.name}: layer '{layer_name}' holds weights of shapes {want}, {model.name}'s "
                f"{have} (another width or variant than the file's)"
            )
    new = [n for n in ours if n not in stored]
    odd = [n for n in new if n not in fam.top_layers]
    if odd:
        raise WeightsError(
            f"{path.name}: {model.name}'s layer '{odd[0]}' is not in the file, and it is not a classifier "
            f"layer ({', '.join(fam.top_layers)}): the backbone would not be fully copied"
        )
    for layer_name, values in stored.items():
        if layer_name == fam.first_conv:  # caffe weights read BGR: the same kernel for RGB input
            values = [values[0][:, :, ::-1, :], *values[1:]]
        ours[layer_name].set_weights(values)
    return Loaded(path, len(stored), len(ours), new, note)


# ------------------------------------------------------------------------------------------------
# Offline machines: fetch on one, add on the other
# ------------------------------------------------------------------------------------------------


def _read_manifest(path: Path, mend: str) -> list[dict]:
    """The entries (each with a "name" and a "sha256") of a manifest :func:`fetch` wrote; a damaged one is
    a :class:`WeightsError` naming it and ``mend`` (how to mend it)."""
    try:
        files = json.loads(path.read_text())["files"]
        if not isinstance(files, list):
            raise ValueError(f"'files' is a {type(files).__name__}, not a list")
        for i, entry in enumerate(files):
            if not isinstance(entry, dict) or not all(
                isinstance(entry.get(k), str) for k in ("name", "sha256")
            ):
                raise ValueError(f"its entry {i} lacks a 'name' or a 'sha256'")
        return files
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
    ) as e:  # JSONDecodeError, UnicodeDecodeError: ValueErrors
        why = f"no {e} key" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
        raise WeightsError(f"{path}: a damaged {MANIFEST} ({why}). To mend it: {mend}") from None


def fetch(files: list[WeightsFile], out, base_url: str | None = None, timeout: float | None = None) -> Path:
    """Download ``files`` into the folder ``out`` with a manifest of their sha256; ``base_url``: a mirror
    holding the same file names; ``timeout``: seconds for the connect and the read timeouts (default:
    :func:`timeouts`). Each file is checked (:func:`check_file`) before anything in ``out`` changes."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    entries = []
    if manifest_path.exists():
        mend = (
            f"delete it and fetch again (the new {MANIFEST} lists the files fetched from then on; the .h5 "
            f"files already in {out} can be added directly: `kerascnn weights add {out}` without it)"
        )
        entries = _read_manifest(manifest_path, mend)
    got = []
    try:
        for wanted in files:
            got.append((_download_checked(wanted, out, base_url, timeout), wanted))
        for tmp, wanted in got:
            os.replace(tmp, out / wanted.name)
            entries = [e for e in entries if e["name"] != wanted.name]
            entries.append(
                {"name": wanted.name, "sha256": file_digest(out / wanted.name), "model": wanted.model}
            )
    finally:
        for tmp, _ in got:
            tmp.unlink(missing_ok=True)
    tmp_manifest = out / f".{MANIFEST}.tmp"
    tmp_manifest.write_text(json.dumps({"kerascnn_weights": 1, "files": entries}, indent=2))
    os.replace(tmp_manifest, manifest_path)
    return out


@dataclass(frozen=True)
class Added:
    """What :func:`add` did with one file: "added", "replaced", or "already cached" (the same bytes)."""

    file: WeightsFile
    status: str


def add(source, force: bool = False) -> list[Added]:
    """Put published weights files into the cache: a folder :func:`fetch` wrote (each file checked
    against its manifest's sha256), or a folder or a single ``.h5`` file with the published names (as a
    browser saves them). Every file is checked (:func:`check_file`) before anything is replaced; a cached
    file that passes the check is replaced by different bytes only with ``force``. The files are copied
    under temporary names, then renamed: a failure (a full disk) leaves the cache as it was."""
    source = Path(source)
    if not source.exists():
        raise WeightsError(f"{source}: no such file or folder")
    sums = {}
    if source.is_dir() and (source / MANIFEST).exists():
        mend = (
            f"fetch again (`kerascnn weights fetch MODEL --out DIR` on the connected machine), or delete it "
            f"and add the .h5 files directly (`kerascnn weights add {source}` then checks each against the "
            "model it is named for)"
        )
        sums = {e["name"]: e["sha256"] for e in _read_manifest(source / MANIFEST, mend)}
        paths = [source / n for n in sums]
    else:
        paths = sorted(source.glob("*.h5")) if source.is_dir() else [source]
    unchanged = f"the cache ({cache_dir()}) was not changed"
    files = []
    for path in paths:
        known = by_name(path.name)
        if known is None:
            raise WeightsError(
                f"{path}: not the name of a published ImageNet weights file (`kerascnn weights list --all` "
                "lists them)"
            )
        if not path.is_file():
            raise WeightsError(f"{path}: listed in {source / MANIFEST} but missing")
        sha = file_digest(path)
        if path.name in sums and sha != sums[path.name]:
            raise WeightsError(f"{path}: its sha256 is not the one {MANIFEST} records (damaged in transfer)")
        try:
            check_file(path, known)
        except WeightsError as e:
            raise WeightsError(f"{e}; {unchanged}") from None
        files.append((path, known, sha))
    if not files:
        raise WeightsError(f"{source}: holds no .h5 weights file")
    done, copies = [], []
    for path, known, sha in files:
        status = "added"
        if known.cached():
            old = file_digest(known.path())
            if old == sha:
                done.append(Added(known, "already cached"))
                continue
            status = "replaced"
            try:
                check_file(known.path(), known)
            except WeightsError:
                status = "replaced (the cached file failed the check)"
            else:
                if not force:
                    raise WeightsError(
                        f"{known.path()}: the cache already holds another good {known.name} (sha256 "
                        f"{old[:12]}..., {path}'s {sha[:12]}...); `kerascnn weights add --force {source}` "
                        f"replaces it; {unchanged}"
                    )
        copies.append((path, known, status))
    cache_dir().mkdir(parents=True, exist_ok=True)
    temps = []
    try:
        for path, known, _ in copies:  # every copy first: a full disk stops them before any rename
            fd, name = tempfile.mkstemp(dir=cache_dir(), prefix=f".{known.name}.", suffix=".tmp")
            os.close(fd)
            temps.append(Path(name))
            try:
                shutil.copyfile(path, temps[-1])
            except OSError as e:
                full = e.errno == errno.ENOSPC
                raise WeightsError(
                    f"{'the disk is full: ' if full else ''}could not copy {path} into {cache_dir()} "
                    f"({e.strerror or e}); {unchanged}" + ("; free some space and add again" if full else "")
                ) from None
        for tmp, (_, known, status) in zip(temps, copies, strict=True):
            os.replace(tmp, known.path())
            done.append(Added(known, status))
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
    return done
