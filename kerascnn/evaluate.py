"""Metrics of a classifier on a labelled split: top-1, top-5, per-class accuracy, confusion matrix,
optionally with test-time augmentation; and the run folder's plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import KerascnnError
from .runs import atomic_save_figure, atomic_write_json, pyplot


class ClassMatchError(KerascnnError, ValueError):
    """The data's classes are not the model's; the message names both lists and the way to map them."""


def _unnamed(names: list[str]) -> bool:
    """Class names that carry no meaning: digit folders, or a model's positions ('0', '1', ...)."""
    return all(str(n).isdigit() for n in names)


def match_classes(model_names, data_names, where: str, mapping: dict | None = None):
    """(index, note): for each of the data's classes, the index of the model's class of that name, and a
    sentence to say once when the match was not plain (another order, another case, a user's map).

    As ``validate`` matches an exported file's labels: by name (the same names in another order are
    mapped), then ignoring case when that is unambiguous; by position only when either side is unnamed
    (digit folders, a model without names) and the counts agree. ``mapping`` ({data name: model name},
    ``--class-map``) renames the data's classes first. The data may hold fewer classes than the model (a
    test folder of some classes). Anything else raises :class:`ClassMatchError` naming both lists."""
    model_names = [str(n) for n in model_names]
    data_names = [str(n) for n in data_names]
    mapping = dict(mapping or {})
    unknown = [k for k in mapping if k not in data_names]
    if unknown:
        raise ClassMatchError(
            f"--class-map: {', '.join(unknown)} is not a class of the data ({', '.join(data_names)})"
        )
    wanted = [mapping.get(n, n) for n in data_names]
    how = f"mapped as given ({_pairs(mapping)}) and " if mapping else ""
    if wanted == model_names:
        return np.arange(len(model_names)), (
            f"classes mapped as given: {_pairs(mapping)}" if mapping else None
        )
    if len(set(wanted)) == len(wanted) and set(wanted) <= set(model_names):
        index = np.array([model_names.index(n) for n in wanted])
        return index, f"classes {how}matched by name: the data's order differs from {where}'s"
    folded = [n.casefold() for n in model_names]
    if len(set(folded)) == len(folded) and all(n.casefold() in folded for n in wanted):
        index = np.array([folded.index(n.casefold()) for n in wanted])
        if len(set(index.tolist())) == len(index):
            renamed = {w: model_names[i] for w, i in zip(wanted, index, strict=True) if w != model_names[i]}
            return index, f"classes {how}matched by name ignoring case: {_pairs(renamed)}"
    if (
        len(model_names) == len(data_names)
        and (_unnamed(model_names) or _unnamed(data_names))
        and not mapping
    ):
        return np.arange(len(model_names)), None
    missing = [n for n in wanted if n not in model_names]
    raise ClassMatchError(
        f"the data's classes ({', '.join(data_names)}) are not {where}'s ({', '.join(model_names)}): "
        f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not among the model's. If they are "
        "the same classes under other names, map them: --class-map DATA_NAME=MODEL_NAME (repeatable)"
    )


def _pairs(mapping: dict) -> str:
    return ", ".join(f"{a} -> {b}" for a, b in mapping.items())


def predict(model, images: np.ndarray, normalize, batch_size: int = 256, tta: int = 1) -> np.ndarray:
    """Posteriors (N, classes) for uint8 images; ``tta > 1`` averages augmented copies."""
    from .augment import tta_predict

    return tta_predict(model, images, tta, normalize, batch_size=batch_size)


def predict_arrays(model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Inference-mode outputs of model inputs already normalised, called eagerly a batch at a time
    (``model.predict`` traces a graph and builds a tf.data pipeline first: slower for the few hundred
    images of a probe or a lab measurement)."""
    outs = [np.asarray(model(x[i : i + batch_size], training=False)) for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% for z = 1.96) of a proportion, in percent: unlike the normal
    approximation it stays inside [0, 100] and is honest at 0 or n successes and for small n."""
    if n <= 0:
        return 0.0, 100.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half) * 100), float(min(1.0, centre + half) * 100)


def format_interval(interval: tuple[float, float]) -> str:
    return f"[{interval[0]:.1f}, {interval[1]:.1f}]"


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (labels.astype(np.int64), predicted.astype(np.int64)), 1)
    return cm


def metrics_from_probs(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    labels = labels.astype(np.int64)
    num_classes = len(class_names)
    pred = probs.argmax(axis=1)
    k = min(5, num_classes)
    topk = np.argsort(-probs, axis=1)[:, :k]
    cm = confusion_matrix(labels, pred, num_classes)
    support = cm.sum(axis=1)
    per_class = {
        name: (float(cm[i, i] / support[i]) if support[i] else None) for i, name in enumerate(class_names)
    }
    return {
        "samples": int(len(labels)),
        "top1": float((pred == labels).mean()),
        f"top{k}": float((topk == labels[:, None]).any(axis=1).mean()),
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
    }


def evaluate(model, split, normalize, class_names, batch_size: int = 256, tta: int = 1) -> dict:
    probs = predict(model, split.images, normalize, batch_size=batch_size, tta=tta)
    result = metrics_from_probs(probs, split.labels, class_names)
    result["tta"] = tta
    return result


def plot_confusion(cm, class_names, path: Path, title: str = "Confusion matrix"):
    plt = pyplot()

    cm = np.asarray(cm)
    n = len(class_names)
    size = max(5.0, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    fig.tight_layout()
    atomic_save_figure(fig, path)


def plot_curves(history: list[dict], path: Path):
    plt = pyplot()

    epochs = [int(row["epoch"]) + 1 for row in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("loss", ax1), ("accuracy", ax2)):
        for prefix in ("", "val_"):
            # multi-output models (GoogLeNet's auxiliary heads) log the main output as predictions_*
            for name in (prefix + key, f"{prefix}predictions_{key}"):
                values = [float(row[name]) for row in history if row.get(name) not in (None, "")]
                if values and len(values) == len(epochs):
                    ax.plot(epochs, values, marker="o", label=prefix + key)
                    break
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_save_figure(fig, path)


def write_json(obj, path: Path):
    atomic_write_json(path, obj, indent=2)


def report_run(run_dir, dataset, normalize, state: dict, batch_size: int, model_name: str, write=True) -> str:
    """A finished run's report: model_best.keras scored on ``dataset``'s test split (val when there is
    none), and model_last.keras on the same images when it is another epoch (best against last), into
    metrics.json; confusion.png and curves.png (``write``: this process writes the run's files). Returns
    the line for the run log."""
    import keras

    run_dir = Path(run_dir)
    split = dataset.eval_split

    def score(name):
        model = keras.saving.load_model(run_dir / name, compile=False)
        return evaluate(model, split, normalize, dataset.class_names, batch_size=batch_size)

    metrics = score("model_best.keras")
    metrics["split"] = "test" if dataset.test is not None else "val"
    best_epoch, epochs = state.get("best_epoch"), int(state["epoch"])
    metrics["best_by"], metrics["best_epoch"] = state.get("best_by", "val_accuracy"), best_epoch
    row = next((r for r in state["history"] if r["epoch"] + 1 == best_epoch), {})
    metrics["best_val_accuracy"] = row.get("val_accuracy", row.get("val_predictions_accuracy"))
    metrics["epochs"] = epochs
    metrics["skipped_images"] = [p for p, _ in dataset.skipped]
    topk = next(k for k in metrics if k.startswith("top") and k != "top1")
    last_line = ""
    if best_epoch is not None and best_epoch != epochs:
        last = score("model_last.keras")
        metrics["last"] = {"epoch": epochs, "top1": last["top1"], topk: last[topk]}
        last_line = f"; model_last.keras (epoch {epochs}): top-1 {last['top1']:.4f}, {topk} {last[topk]:.4f}"
    if write:
        write_json(metrics, run_dir / "metrics.json")
        plot_confusion(
            metrics["confusion_matrix"],
            dataset.class_names,
            run_dir / "confusion.png",
            title=f"{model_name} on {dataset.name} ({metrics['split']})",
        )
        plot_curves(state["history"], run_dir / "curves.png")
    which = f" of model_best.keras (epoch {best_epoch}, by {metrics['best_by']})" if best_epoch else ""
    return (
        f"{metrics['split']} top-1 {metrics['top1']:.4f}, {topk} {metrics[topk]:.4f} "
        f"({metrics['samples']} images){which}{last_line}"
    )
