"""ImageNet weights in the zoo, offline: files written into a temporary KERAS_HOME under the names
keras.applications asks for (random weights, in the legacy HDF5 layout of the published files), loaded
by name into kerascnn's builders, with the input normalization of each family."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from click.testing import CliRunner

from kerascnn import data as kdata
from kerascnn import models
from kerascnn.cli import main
from kerascnn.models import pretrained


def twin(model: str, shape, alpha=None, top=False, seed=0):
    """The keras.applications model, its weights made random (BN statistics included)."""
    kw = {"alpha": alpha} if alpha is not None else {}
    app = getattr(keras.applications, pretrained.FAMILIES[model].app)
    net = app(weights=None, include_top=top, input_shape=shape, **kw)
    rng = np.random.default_rng(seed)
    for v in net.weights:
        a = v.numpy()
        scale = rng.uniform(0.8, 1.25, a.shape) if "variance" in v.path else 1 + rng.normal(0, 0.1, a.shape)
        v.assign((a * scale + rng.normal(0, 0.02, a.shape) * ("variance" not in v.path)).astype(a.dtype))
    return net


def publish(net, name: str, folder=None):
    """Write ``net``'s weights into the Keras cache (or ``folder``) under ``name``, as the published files
    are."""
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    folder = Path(folder) if folder is not None else pretrained.cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / name, "w") as f:
        save_weights_to_hdf5_group(f, net)
    return folder / name


class _Asked(Exception):
    pass


@pytest.mark.parametrize(
    "model, alpha, size, top",
    [
        ("mobilenet_v2", 0.35, 96, False), ("mobilenet_v2", 1.3, 224, True),
        ("mobilenet_v2", 1.0, 100, False),  # 100 is not published: Keras asks for the 224 file
        ("mobilenet_v1", 0.25, 128, False), ("mobilenet_v1", 0.75, 160, True),
        ("vgg16", None, 32, False), ("vgg19", None, 32, False), ("resnet50", None, 32, False),
        ("resnet101", None, 32, False), ("resnet152", None, 32, False), ("densenet121", None, 32, False),
        ("densenet169", None, 32, False), ("densenet201", None, 32, False),
    ],
)  # fmt: skip
def test_the_files_are_those_keras_applications_asks_for(monkeypatch, model, alpha, size, top):
    from keras.src.utils import file_utils

    asked = {}

    def get_file(fname, origin, cache_subdir="datasets", file_hash=None, **kw):
        asked.update(name=fname, url=origin, subdir=cache_subdir, file_hash=file_hash)
        raise _Asked

    monkeypatch.setattr(file_utils, "get_file", get_file)
    kw = {"alpha": alpha} if alpha is not None else {}
    app = getattr(keras.applications, pretrained.FAMILIES[model].app)
    with pytest.raises(_Asked):
        app(weights="imagenet", include_top=top, input_shape=(size, size, 3), **kw)
    ours = pretrained.weights_file(model, alpha or 1.0, size, top)
    assert (ours.name, ours.url, ours.file_hash) == (asked["name"], asked["url"], asked["file_hash"])
    assert asked["subdir"] == pretrained.CACHE_SUBDIR


def test_mobilenet_v2_imagenet_loads_every_weight_of_the_file(keras_home):
    net = twin("mobilenet_v2", (96, 96, 3), alpha=0.35)
    publish(net, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5")
    ours = models.build(
        "mobilenet_v2", input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights="imagenet"
    )
    layers = [layer for layer in net.layers if layer.weights]
    assert len(layers) == 104
    for layer in layers:
        for a, b in zip(layer.get_weights(), ours.get_layer(layer.name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(1).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32)
    norm = kdata.Normalization(*pretrained.normalization("mobilenet_v2"))
    want = net(keras.applications.mobilenet_v2.preprocess_input(x.copy()))
    np.testing.assert_allclose(ours(norm.numpy(x)), want, rtol=1e-5, atol=1e-5)
    assert pretrained.normalization("mobilenet_v2") == ((127.5,) * 3, (127.5,) * 3)  # [-1, 1]


@pytest.mark.parametrize(
    "model, module, mode",
    [
        ("resnet50", keras.applications.resnet50, "caffe"),
        ("densenet121", keras.applications.densenet, "torch"),
    ],
)
def test_caffe_and_torch_families_compute_what_keras_computes_on_rgb(keras_home, model, module, mode):
    """ResNet's weights read BGR minus the mean: kerascnn's first convolution takes RGB instead, and
    the run's normalization is the mean in RGB order; DenseNet's is the torch mean/std."""
    shape = (32, 32, 3)
    net = twin(model, shape)
    publish(net, pretrained.weights_file(model).name)
    ours = models.build(model, input_shape=shape, include_top=False, weights="imagenet")
    assert pretrained.FAMILIES[model].preprocessing == mode
    x = np.random.default_rng(2).uniform(0, 255, (2, *shape)).astype(np.float32)
    norm = kdata.Normalization(*pretrained.normalization(model))
    want = net(module.preprocess_input(x.copy())).numpy()
    got = ours(norm.numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    first = pretrained.FAMILIES[model].first_conv
    for layer in net.layers:
        if layer.weights:
            expected = layer.get_weights()
            if layer.name == first:  # caffe: the kernel's input channels reversed, so RGB goes in
                expected[0] = expected[0][:, :, ::-1, :]
            for a, b in zip(expected, ours.get_layer(layer.name).get_weights(), strict=True):
                np.testing.assert_array_equal(a, b)


def test_a_file_of_another_width_names_the_first_layer_and_copies_nothing(keras_home):
    publish(
        twin("mobilenet_v2", (96, 96, 3), alpha=0.35), pretrained.weights_file("mobilenet_v2", 0.5, 96).name
    )
    model = models.build("mobilenet_v2", input_shape=(96, 96, 3), alpha=0.5, include_top=False)
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(
        pretrained.WeightsError,
        match=r"layer 'block_1_project' holds weights of shapes \[\(1, 1, 48, 8\)\], "
        r"mobilenet_v2's \[\(1, 1, 48, 16\)\]",
    ):
        pretrained.load_imagenet(model, "mobilenet_v2", 0.5)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights, strict=True))


def test_what_cannot_have_imagenet_weights_says_why(keras_home):
    with pytest.raises(ValueError, match="resnet20.*has no published ImageNet weights.*mobilenet_v2"):
        models.build("resnet20", weights="imagenet")
    with pytest.raises(ValueError, match="include_top=True is the 1000-class"):
        models.build("mobilenet_v2", num_classes=10, weights="imagenet")
    with pytest.raises(ValueError, match="alpha 0.35, 0.5, 0.75, 1, 1.3, 1.4 only, not 0.6"):
        models.build("mobilenet_v2", alpha=0.6, weights="imagenet")
    wanted = pretrained.weights_file("mobilenet_v2", 0.35, 96)
    with pytest.raises(pretrained.WeightsError) as e:
        pretrained.locate(wanted, download=False)
    message = str(e.value)
    assert wanted.name in message and str(pretrained.cache_dir()) in message
    assert "kerascnn weights fetch mobilenet_v2 --alpha 0.35 --input-size 96 --out DIR" in message
    assert "kerascnn weights add DIR" in message


def test_a_mobilenet_uses_a_cached_file_of_another_size(keras_home):
    publish(
        twin("mobilenet_v2", (96, 96, 3), alpha=0.35), pretrained.weights_file("mobilenet_v2", 0.35, 224).name
    )
    model = models.build("mobilenet_v2", input_shape=(96, 96, 3), alpha=0.35, include_top=False)
    loaded = pretrained.load_imagenet(model, "mobilenet_v2", 0.35, download=False)
    assert loaded.file.name.endswith("_0.35_224_no_top.h5") and "224 px file" in loaded.note
    assert "Layers copied: 104 of 104" in loaded.line()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def weights_server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving a folder, as a mirror of Keras' weights store."""
    served = tmp_path / "served"
    served.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_fetch_from_a_mirror_then_add_then_list(keras_home, weights_server, tmp_path):
    served, url = weights_server
    name = pretrained.weights_file("mobilenet_v2", 0.35, 96).name
    net = twin("mobilenet_v2", (96, 96, 3), alpha=0.35)
    publish(net, name).rename(served / name)  # the mirror holds it; the cache does not
    out = tmp_path / "carry"
    args = ["weights", "fetch", "mobilenet_v2", "--alpha", "0.35", "--input-size", "96", "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--from", url])
    assert result.exit_code == 0, result.output
    assert (out / name).read_bytes() == (served / name).read_bytes()
    assert f"kerascnn weights add {out}" in result.output
    assert not (pretrained.cache_dir() / name).exists()
    listed = CliRunner().invoke(main, ["weights", "list"])
    assert listed.exit_code == 0 and "no ImageNet weights cached" in listed.output

    result = CliRunner().invoke(main, ["weights", "add", str(out)])
    assert result.exit_code == 0, result.output
    assert (pretrained.cache_dir() / name).read_bytes() == (served / name).read_bytes()
    listed = CliRunner().invoke(main, ["weights", "list"])
    assert name in listed.output and "mobilenet_v2 alpha 0.35 at 96" in listed.output
    model = models.build(
        "mobilenet_v2", input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights="imagenet"
    )
    np.testing.assert_array_equal(
        model.get_layer("Conv1").get_weights()[0], net.get_layer("Conv1").get_weights()[0]
    )

    missing = CliRunner().invoke(main, [*args[:-1], str(tmp_path / "other"), "--from", url + "nothing/"])
    assert missing.exit_code == 1 and "could not download" in missing.output and name in missing.output
    (out / name).write_bytes((out / name).read_bytes()[:-10])  # damaged on the way
    damaged = CliRunner().invoke(main, ["weights", "add", str(out)])
    assert damaged.exit_code == 1 and "sha256" in damaged.output
    stray = tmp_path / "model.h5"
    stray.write_bytes(b"x")
    bad = CliRunner().invoke(main, ["weights", "add", str(stray)])
    assert bad.exit_code == 1 and "not the name of a published ImageNet weights file" in bad.output
