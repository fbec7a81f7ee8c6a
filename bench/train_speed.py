"""Training throughput, in one run on one machine:

1. kerascnn's resnet20 (32x32x3, batch 128, SGD) against the same network in plain PyTorch
   (bench/torch_resnet20.py, run with --torch-python, an interpreter that has torch 2.13);
2. the real pipeline (uint8 images in memory -> shuffle, batch, augment, normalise, prefetch) against
   pre-normalised float tensors from memory, for the same model: the pipeline overhead.

    .venv/bin/python bench/train_speed.py --torch-python /tmp/torchenv/bin/python

Each figure is images/s over --steps steps after a warm-up epoch (tracing excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kerascnn import augment as aug  # noqa: E402
from kerascnn import data as kdata  # noqa: E402
from kerascnn.models import build  # noqa: E402
from kerascnn.optim import compile_options  # noqa: E402


class Timer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def keras_images_per_s(dataset, steps, batch_size, shape, classes=10):
    keras.utils.set_random_seed(0)
    model = build("resnet20", input_shape=shape, num_classes=classes)
    model.compile(
        keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
        loss="categorical_crossentropy",
        **compile_options(),
    )
    timer = Timer()
    model.fit(dataset.repeat(), steps_per_epoch=steps, epochs=2, callbacks=[timer], verbose=0)
    return steps * batch_size / timer.times[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--torch-python", default=None, help="Python with torch installed.")
    parser.add_argument("--augment", default="standard")
    args = parser.parse_args()
    b, steps = args.batch_size, args.steps
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "batch_size": b,
        "steps": steps,
    }

    # 1. resnet20 32x32x3 on random in-memory tensors, kerascnn vs PyTorch
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (b * 4, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 10, b * 4), 10)
    tensors = tf.data.Dataset.from_tensor_slices((x, y)).batch(b).cache().prefetch(kdata.PREFETCH_BATCHES)
    tensors = tensors.with_options(kdata.pipeline_options())
    results["kerascnn_resnet20_images_per_s"] = keras_images_per_s(tensors, steps, b, (32, 32, 3))
    if args.torch_python:
        script = Path(__file__).with_name("torch_resnet20.py")
        out = subprocess.run(
            [args.torch_python, str(script), "--batch-size", str(b), "--steps", str(steps)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        torch = json.loads(out.strip().splitlines()[-1])
        results["torch"] = torch["framework"]
        results["torch_resnet20_images_per_s"] = torch["images_per_s"]
        results["ratio_kerascnn_over_torch"] = (
            results["kerascnn_resnet20_images_per_s"] / torch["images_per_s"]
        )

    # 2. pipeline overhead on Fashion-MNIST at 32x32x1: the real pipeline vs in-memory tensors
    ds = kdata.load_dataset("fashion_mnist", (32, 32), 1, val_split=0.0)
    split = ds.train.subset(np.arange(b * 40))
    norm = kdata.Normalization()
    augmenter = aug.Augmenter(aug.augment_config(args.augment), 10, seed=0)
    real = kdata.make_dataset(split, 10, b, norm, training=True, augmenter=augmenter)
    pre_x = norm.numpy(split.images)
    pre_y = keras.utils.to_categorical(split.labels, 10)
    memory = tf.data.Dataset.from_tensor_slices((pre_x, pre_y)).batch(b).cache()
    memory = memory.prefetch(kdata.PREFETCH_BATCHES)
    memory = memory.with_options(kdata.pipeline_options())
    results["memory_images_per_s"] = keras_images_per_s(memory, steps, b, (32, 32, 1))
    results["pipeline_images_per_s"] = keras_images_per_s(real, steps, b, (32, 32, 1))
    results["pipeline_augment"] = args.augment
    results["ratio_pipeline_over_memory"] = results["pipeline_images_per_s"] / results["memory_images_per_s"]
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
