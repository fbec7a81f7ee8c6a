"""What a network looks at: Grad-CAM heatmaps (Selvaraju et al. 2017) and the feature maps of one layer
per stage.

Grad-CAM weighs the feature maps ``A`` of a spatial layer (by default the last one whose maps are at
least 2x2) by the mean gradient of the class score over each map, sums them and keeps the positive
part: ``relu(sum_k mean_ij(d score / d A_ij^k) * A^k)``, scaled to [0, 1] and resized to the model's
input. The score is the class's log-probability when the model ends in a softmax (the gradient of the
probability itself vanishes once the model is sure), else the model's output for the class, as
pytorch-grad-cam's ``ClassifierOutputTarget`` on logits.

Works on any Keras model with one image input (N, H, W, C): every zoo family and a user's own model.
The library side of ``kerascnn explain``; the CLI only parses and prints.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import KerascnnError

TOP_K = 3  # classes shown on the overlay
FEATURE_CHANNELS = 8  # feature maps shown per stage (the most active ones)


class ExplainError(KerascnnError, ValueError):
    """A model or layer Grad-CAM cannot work on; the message names it and what would."""


def _spatial(shape) -> bool:
    return isinstance(shape, tuple | list) and len(shape) == 4 and all(isinstance(s, int) for s in shape[1:3])


def spatial_layers(model) -> list:
    """The layers whose output is one (N, H, W, C) map, in the model's order (the input excluded)."""
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):  # a layer used more than once has no single output
            continue
        if _spatial(shape):
            found.append(layer)
    return found


def target_layer(model, name: str | None = None):
    """The layer Grad-CAM explains: ``name`` (``--layer``), else the last spatial layer whose maps are at
    least 2x2 (a 1x1 map cannot say where). Unknown or non-spatial layers raise :class:`ExplainError`."""
    from .graph import GraphError, layer_path, resolve_layer

    layers = spatial_layers(model)
    if name is not None:  # a layer name, or its path inside a nested model (mobilenetv2_1.00_96/out_relu)
        hint = ", ".join(layer_path(model, layer.name) for layer in layers[-8:]) or "none"
        try:
            layer = resolve_layer(model, name)
        except GraphError:
            raise ExplainError(
                f"--layer {name}: '{model.name}' has no layer of that name; its last spatial layers: {hint}"
            ) from None
        if layer not in layers:
            raise ExplainError(
                f"--layer {name}: its output {tuple(layer.output.shape)} is not one (N, H, W, C) map; "
                f"choose a spatial layer: {hint}"
            )
        return layer
    if not layers:
        raise ExplainError(
            f"'{model.name}' has no spatial layer (no layer outputs an (N, H, W, C) map): Grad-CAM explains "
            "convolutional networks"
        )
    wide = [layer for layer in layers if min(layer.output.shape[1:3]) >= 2]
    return (wide or layers)[-1]


def stage_layers(model) -> list:
    """One layer per stage: the last spatial layer before each change of the maps' size."""
    layers = spatial_layers(model)
    picked = []
    for i, layer in enumerate(layers):
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if nxt is None or tuple(nxt.output.shape[1:3]) != tuple(layer.output.shape[1:3]):
            picked.append(layer)
    return picked


def _ends_in_softmax(model) -> bool:
    import keras

    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    return activation is keras.activations.softmax or isinstance(last, keras.layers.Softmax)


def gradcam(model, x: np.ndarray, layer=None, class_index: int | None = None):
    """Grad-CAM of ``model`` on the model inputs ``x`` (N, H, W, C, already normalised) at ``layer``
    (default :func:`target_layer`): (heatmaps (N, H, W) in [0, 1] at the input's size, the model's
    outputs (N, classes), the explained class per image: ``class_index`` or the predicted one)."""
    import keras
    import tensorflow as tf

    if len(model.inputs) != 1:
        raise ExplainError(f"'{model.name}' has {len(model.inputs)} inputs; Grad-CAM needs one image input")
    layer = layer or target_layer(model)
    grad_model = keras.Model(model.inputs, [layer.output, model.outputs[0]])
    x = tf.convert_to_tensor(x, tf.float32)
    softmax = _ends_in_softmax(model)
    with tf.GradientTape() as tape:
        raw_maps, outputs = grad_model(x, training=False)  # (bfloat16/float16 under mixed precision)
        maps, outputs = tf.cast(raw_maps, tf.float32), tf.cast(outputs, tf.float32)
        n_classes = int(outputs.shape[-1])
        if class_index is None:
            classes = tf.argmax(outputs, axis=-1, output_type=tf.int32)
        else:
            if not 0 <= class_index < n_classes:
                raise ExplainError(f"--class {class_index}: the model has classes 0 to {n_classes - 1}")
            classes = tf.fill([tf.shape(outputs)[0]], class_index)
        picked = tf.gather(outputs, classes, axis=1, batch_dims=1)
        score = tf.math.log(picked + 1e-12) if softmax else picked
    grads = tf.cast(tape.gradient(score, raw_maps), tf.float32)  # (the cast maps are not on the path)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # (N, 1, 1, K)
    cam = tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1))  # (N, h, w)
    cam = tf.image.resize(cam[..., None], tuple(int(s) for s in x.shape[1:3]), method="bilinear")[..., 0]
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    cam = tf.where(peak > 0, cam / tf.maximum(peak, 1e-12), tf.zeros_like(cam))
    return cam.numpy().astype(np.float32), outputs.numpy(), classes.numpy()


@dataclass
class Explained:
    image: str
    heatmap_png: Path
    heatmap_npy: Path
    top: list[tuple[str, float]]  # (class, score) of the TOP_K best classes
    explained_class: str
    features_png: Path | None = None


def explain_files(
    model_path, images: list[str], out, layer: str | None = None, class_spec: str | None = None,
    features: bool = False, mean=None, std=None,
) -> list[Explained]:  # fmt: skip
    """``kerascnn explain``: for each image file, ``out/<stem>_gradcam.png`` (the image, the heatmap over
    it, the top classes) and ``out/<stem>_gradcam.npy`` (the heatmap, H x W at the model's input size, in
    [0, 1]); with ``features``, ``out/<stem>_features.png`` (the most active maps of one layer per
    stage). ``class_spec``: a class index or name (default: the predicted class)."""
    from . import data as kdata
    from .graph import layer_path
    from .runs import Run, atomic_write_bytes, image_input_shape

    run = Run.open(model_path)
    model = run.load_model()
    h, w, c = image_input_shape(model, run.model_file)
    layer_obj = target_layer(model, layer)
    n_classes = int(model.outputs[0].shape[-1])
    names = run.class_names if run.class_names and len(run.class_names) == n_classes else None
    names = names or [str(i) for i in range(n_classes)]
    class_index = _class_index(class_spec, names)
    mean, std = run.normalization(mean, std)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results, used = [], set()
    for path in images:
        try:
            pixels = kdata.decode_image(path, (h, w), c)
        except FileNotFoundError:
            raise ExplainError(f"image '{path}' does not exist") from None
        except kdata.ImageReadError as e:  # it names the file and what is wrong
            raise ExplainError(str(e)) from None
        except (OSError, ValueError) as e:
            raise ExplainError(f"image '{path}': cannot read it ({e})") from None
        x = (pixels.astype(np.float32) - np.float32(mean)) / np.float32(std)
        cams, outputs, classes = gradcam(model, x[None], layer_obj, class_index)
        stem = _unique_stem(Path(path).stem, used)
        buf = io.BytesIO()
        np.save(buf, cams[0])
        npy = out / f"{stem}_gradcam.npy"
        atomic_write_bytes(npy, buf.getvalue())
        order = np.argsort(-outputs[0])[:TOP_K]
        top = [(names[i], float(outputs[0][i])) for i in order]
        png = out / f"{stem}_gradcam.png"
        shown = layer_path(model, layer_obj.name)
        _save_overlay(pixels, cams[0], top, names[int(classes[0])], shown, png)
        feat_png = None
        if features:
            feat_png = out / f"{stem}_features.png"
            _save_features(model, x[None], feat_png)
        results.append(Explained(str(path), png, npy, top, names[int(classes[0])], feat_png))
    return results


def _class_index(spec: str | None, names: list[str]) -> int | None:
    if spec is None:
        return None
    if spec in names:
        return names.index(spec)
    try:
        index = int(spec)
    except ValueError:
        shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
        raise ExplainError(f"--class {spec}: not a class of the model ({shown}) nor an index") from None
    if not 0 <= index < len(names):
        raise ExplainError(f"--class {spec}: the model has classes 0 to {len(names) - 1}")
    return index


def _unique_stem(stem: str, used: set) -> str:
    name, n = stem, 2
    while name in used:  # two images of the same name from different folders
        name, n = f"{stem}_{n}", n + 1
    used.add(name)
    return name


def _save_overlay(pixels: np.ndarray, cam: np.ndarray, top, explained: str, layer: str, path: Path) -> None:
    from .runs import atomic_save_figure, pyplot

    plt = pyplot()

    image = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
    cmap = "gray" if pixels.shape[-1] == 1 else None
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.8))
    axes[0].imshow(image, cmap=cmap, vmin=0, vmax=255)
    axes[0].set_title("image")
    axes[1].imshow(image, cmap=cmap, vmin=0, vmax=255)
    axes[1].imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    axes[1].set_title(f"Grad-CAM: {explained} ({layer})", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.text(0.5, 0.02, "   ".join(f"{name}: {score:.3f}" for name, score in top), ha="center", fontsize=9)
    atomic_save_figure(fig, path)


def _save_features(model, x: np.ndarray, path: Path) -> None:
    """A grid: one row per stage (:func:`stage_layers`), its FEATURE_CHANNELS most active maps."""
    import keras

    from .graph import layer_path
    from .runs import atomic_save_figure, pyplot

    plt = pyplot()

    stages = stage_layers(model)
    if not stages:
        raise ExplainError(f"'{model.name}' has no spatial layer: --features has no maps to show")
    outs = keras.Model(model.inputs, [layer.output for layer in stages])(x, training=False)
    outs = outs if isinstance(outs, list | tuple) else [outs]
    fig, axes = plt.subplots(
        len(stages), FEATURE_CHANNELS, figsize=(1.4 * FEATURE_CHANNELS, 1.5 * len(stages))
    )
    axes = np.atleast_2d(axes)
    for row, (layer, maps) in enumerate(zip(stages, outs, strict=True)):
        maps = np.asarray(maps, np.float32)[0]
        order = np.argsort(-maps.mean(axis=(0, 1)))[:FEATURE_CHANNELS]
        for col in range(FEATURE_CHANNELS):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(order):
                ax.imshow(maps[..., order[col]], cmap="viridis")
        h, w = maps.shape[:2]
        axes[row, 0].set_title(f"{layer_path(model, layer.name)} {h}x{w}", fontsize=7, loc="left")
    atomic_save_figure(fig, path)
