"""The user model of issue 26, made as a user makes it: keras.applications MobileNetV2 (alpha 0.35, 32x32,
weights=None) nested as one layer behind Rescaling, a GAP + Dense head, 3 epochs on 6,000 Fashion-MNIST
images at 32x32 RGB; saved as OUT/user.keras and OUT/user.h5, with OUT/data (600 unseen test images as
class folders of PNGs) for calibration and validation.

    .venv/bin/python bench/nested_user_model.py OUT [EPOCHS]
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from kerascnn.data import load_builtin  # noqa: E402


def rgb32(images):
    return np.stack(
        [np.asarray(Image.fromarray(i).resize((32, 32), Image.BILINEAR).convert("RGB")) for i in images]
    )


def main(out: Path, epochs: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (x, y), (xt, yt) = load_builtin("fashion_mnist")
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None
    )
    for layer in base.layers:  # keras.applications' momentum 0.999 leaves the moving statistics unset
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    inputs = keras.Input((32, 32, 3), name="image")
    h = base(keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs))
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs, name="user_mnv2")
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(rgb32(x[:6000]).astype("float32"), y[:6000], batch_size=128, epochs=epochs, verbose=2)
    model.save(out / "user.keras")
    model.save(out / "user.h5")
    for i, (im, label) in enumerate(zip(rgb32(xt[:600]), yt[:600], strict=True)):
        folder = out / "data" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(folder / f"{i}.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 3)
