"""ImageNet weights for the zoo models that have a keras.applications twin with published weights.

kerascnn's vgg16/19, resnet50/101/152, mobilenet_v1, mobilenet_v2 and densenet121/169/201 are built layer
for layer as their keras.applications twins (the same layer names and shapes), so the weights Keras
publishes load into them. The files are the ones keras.applications asks for (:func:`weights_file`: the
same names and URLs, checked against Keras by a test), kept where Keras keeps them (``KERAS_HOME``, by
default ``~/.keras``, under ``models/``), fetched with Keras' own ``get_file`` (which checks the hash
Keras knows for a file; Keras knows none for the MobileNets) and read in the legacy HDF5 layout of the
published files.

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

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kerascnn.errors import KerascnnError
from kerascnn.keras_internals import hdf5_attribute

STORE = "https://storage.googleapis.com/tensorflow/keras-applications/"  # Keras' weights store
CACHE_SUBDIR = "models"  # keras.applications' cache_subdir
MANIFEST = "kerascnn-weights.json"  # what `kerascnn weights fetch` writes beside the files


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
    md5 = _digest(wanted.path(), hashlib.md5(usedforsecurity=False))
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
    cache (note says which); else downloaded into the cache with Keras' ``get_file``. Raises
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
            return Path(_download(wanted, cache_dir())), None
        except Exception as e:  # noqa: BLE001 - offline, a proxy, a bad hash: say which file
            problem = f"and it could not be downloaded from {wanted.url} ({type(e).__name__}: {e})"
    raise WeightsError(
        f"--weights imagenet: {wanted.describe()} needs the file {wanted.name} in the Keras cache "
        f"({cache_dir()}), {problem}. To bring it: {fetch_commands(wanted)}"
    )


def _download(wanted: WeightsFile, folder: Path, base_url: str | None = None) -> str:
    import keras

    url = f"{base_url.rstrip('/')}/{wanted.name}" if base_url else wanted.url
    folder.mkdir(parents=True, exist_ok=True)
    return keras.utils.get_file(
        wanted.name, url, cache_dir=str(folder.parent), cache_subdir=folder.name, file_hash=wanted.file_hash
    )


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


def _digest(path, digest) -> str:
    """The hex ``digest`` (a hashlib object) of the file, read a megabyte at a time."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256(path) -> str:
    return _digest(path, hashlib.sha256())


def fetch(files: list[WeightsFile], out, base_url: str | None = None) -> Path:
    """Download ``files`` (with Keras' ``get_file``, which checks Keras' hash of each) into the folder
    ``out`` with a manifest of their sha256; ``base_url``: a mirror holding the same file names."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    entries = json.loads(manifest_path.read_text())["files"] if manifest_path.exists() else []
    with tempfile.TemporaryDirectory(dir=out, prefix=".fetch-") as tmp:
        for wanted in files:
            try:
                got = Path(_download(wanted, Path(tmp) / "dl", base_url))
            except Exception as e:  # noqa: BLE001 - no network, a 404, a bad hash
                url = f"{base_url.rstrip('/')}/{wanted.name}" if base_url else wanted.url
                raise WeightsError(
                    f"could not download {wanted.name} from {url} ({type(e).__name__}: {e})"
                ) from None
            read_h5_weights(got)  # a proxy's error page is not a weights file
            os.replace(got, out / wanted.name)
            entries = [e for e in entries if e["name"] != wanted.name]
            entries.append({"name": wanted.name, "sha256": _sha256(out / wanted.name), "model": wanted.model})
    tmp_manifest = out / f".{MANIFEST}.tmp"
    tmp_manifest.write_text(json.dumps({"kerascnn_weights": 1, "files": entries}, indent=2))
    os.replace(tmp_manifest, manifest_path)
    return out


def add(source) -> list[WeightsFile]:
    """Put published weights files into the cache: a folder :func:`fetch` wrote (each file checked
    against its manifest's sha256), or a folder or a single ``.h5`` file with the published names (as a
    browser saves them). Each is checked to be a weights file and copied under a temporary name, then
    renamed: a failure leaves the cache as it was."""
    source = Path(source)
    if not source.exists():
        raise WeightsError(f"{source}: no such file or folder")
    sums = {}
    if source.is_dir() and (source / MANIFEST).exists():
        sums = {e["name"]: e["sha256"] for e in json.loads((source / MANIFEST).read_text())["files"]}
        paths = [source / n for n in sums]
    else:
        paths = sorted(source.glob("*.h5")) if source.is_dir() else [source]
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
        if path.name in sums and _sha256(path) != sums[path.name]:
            raise WeightsError(f"{path}: its sha256 is not the one {MANIFEST} records (damaged in transfer)")
        read_h5_weights(path)
        files.append((path, known))
    if not files:
        raise WeightsError(f"{source}: holds no .h5 weights file")
    cache_dir().mkdir(parents=True, exist_ok=True)
    for path, known in files:
        tmp = known.path().with_name(f".{known.name}.{os.getpid()}.tmp")
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, known.path())
        finally:
            tmp.unlink(missing_ok=True)
    return [known for _, known in files]
