"""``kerascnn train``: a dataset in, a trained and evaluated run folder out.

The run folder holds everything a later step needs, and nothing else reaches into this process:

    config.json        the run's full configuration (what `--resume` continues)
    model_best.keras   the inference model with the best validation accuracy
    model_last.keras   the inference model after the last finished epoch
    checkpoint.keras   the training model with its optimizer state (for --resume)
    state.json         the last finished epoch and the best validation accuracy so far
    history.csv        per-epoch loss/accuracy/learning rate
    tensorboard/       TensorBoard logs
    curves.png         loss and accuracy curves
    confusion.png      confusion matrix of the best model on the test split
    metrics.json       top-1, top-5 and per-class accuracy of the best model
    run.log            what happened, including skipped unreadable images

Every file is written to a temporary name and renamed, so a crash never leaves a truncated file; a
run killed at any moment continues with ``--resume`` from its last finished epoch.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import augment as aug
from . import data as kdata

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
DEFAULT_MODEL = "mobilenet_v1"


@dataclass
class TrainConfig:
    model: str = DEFAULT_MODEL
    data: str = "fashion_mnist"
    output: str | None = None
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float | None = None  # default per optimizer
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    weight_decay: float = 5e-4
    momentum: float = 0.9
    label_smoothing: float = 0.0
    bn_momentum: float | None = 0.9  # None keeps each architecture's own (MobileNetV2: 0.999)
    augment: str = "light"
    augment_overrides: dict = field(default_factory=dict)
    mixup: float = 0.0
    balance: str | None = None  # None | "oversample" | "weights"
    val_split: float = 0.1
    train_fraction: float = 1.0
    input_shape: tuple | None = None
    model_options: dict = field(default_factory=dict)
    mean: tuple = (127.5,)
    std: tuple = (127.5,)
    seed: int = 0
    precision: str = "float32"
    strategy: str = "auto"
    weights: str | None = None
    freeze_backbone: bool = False
    fine_tune_epochs: int = 0
    fine_tune_lr: float | None = None
    freeze_until: str | None = None
    quiet: bool = False

    def default_lr(self) -> float:
        return {"sgd": 0.05, "adam": 1e-3, "adamw": 2e-3}[self.optimizer]

    def check(self):
        def bad(option, msg):
            raise ValueError(f"{option}: {msg}")

        if self.epochs < 1:
            bad("--epochs", f"must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            bad("--batch-size", f"must be >= 1, got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            bad("--optimizer", f"choose one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            bad("--schedule", f"choose one of {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            bad("--precision", f"choose one of {', '.join(PRECISIONS)}")
        if self.strategy not in STRATEGIES:
            bad("--strategy", f"choose one of {', '.join(STRATEGIES)}")
        if self.balance not in (None, "oversample", "weights"):
            bad("--balance", "choose oversample or weights")
        if self.mixup < 0:
            bad("--mixup", f"alpha must be >= 0, got {self.mixup}")
        if not 0 <= self.label_smoothing < 1:
            bad("--label-smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        if self.warmup_epochs < 0 or self.warmup_epochs >= self.epochs:
            bad("--warmup-epochs", f"must be in [0, epochs), got {self.warmup_epochs}")
        if not 0 < self.train_fraction <= 1:
            bad("--train-fraction", f"must be in (0, 1], got {self.train_fraction}")
        if self.fine_tune_epochs and not self.freeze_backbone:
            bad("--fine-tune-epochs", "needs --freeze-backbone (train the new head first, then fine-tune)")


# ------------------------------------------------------------------------------------------------
# Files, written atomically
# ------------------------------------------------------------------------------------------------


def atomic_write_bytes(path: Path, data: bytes):
    """Write to a hidden temporary name in the same folder, then rename: never a truncated file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str):
    atomic_write_bytes(path, text.encode())


def atomic_save_model(model, path: Path):
    tmp = path.with_name(f".{path.stem}.partial.keras")
    model.save(tmp)
    os.replace(tmp, path)


def load_config(run_dir) -> TrainConfig:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: '{run_dir}' is not a kerascnn run folder")
    raw = json.loads(path.read_text())
    cfg = TrainConfig(**raw["train"])
    if cfg.input_shape is not None:
        cfg.input_shape = tuple(cfg.input_shape)
    cfg.mean, cfg.std = tuple(cfg.mean), tuple(cfg.std)
    return cfg


def load_keras_model(model_file):
    """Load a ``.keras``/``.h5`` file for inference; any failure is a ``ValueError`` naming the file."""
    import keras

    try:
        return keras.saving.load_model(model_file, compile=False)
    except Exception as e:  # noqa: BLE001 - a corrupt, foreign or custom-layer file: say which and why
        raise ValueError(f"{model_file}: cannot load the Keras model ({type(e).__name__}: {e})") from None


def resolve_model_file(path) -> Path:
    """A ``.keras``/``.h5`` file, or a run folder (its best model)."""
    p = Path(path)
    if p.is_dir():
        for name in ("model_best.keras", "model_last.keras"):
            if (p / name).exists():
                return p / name
        raise FileNotFoundError(f"run folder '{p}' has no model_best.keras or model_last.keras")
    if not p.exists():
        raise FileNotFoundError(f"model file '{p}' does not exist")
    return p


# ------------------------------------------------------------------------------------------------
# Optimizer, schedule, strategy
# ------------------------------------------------------------------------------------------------


def make_schedule(cfg: TrainConfig, steps_per_epoch: int, epochs: int, lr: float):
    import keras

    total = max(1, steps_per_epoch * epochs)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.schedule == "step":  # x0.1 at 50% and 75% of training, after the warm-up
        if warmup:
            raise ValueError("--warmup-epochs: not available with --schedule step; use cosine or constant")
        bounds = [int(total * 0.5), int(total * 0.75)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, [lr, lr * 0.1, lr * 0.01])
    alpha = 1.0 if cfg.schedule == "constant" else 0.0
    if warmup:
        return keras.optimizers.schedules.CosineDecay(
            0.0, max(1, total - warmup), alpha=alpha, warmup_target=lr, warmup_steps=warmup
        )
    if cfg.schedule == "constant":
        return lr
    return keras.optimizers.schedules.CosineDecay(lr, total, alpha=alpha)


def make_optimizer(cfg: TrainConfig, schedule):
    import keras

    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(
            schedule, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(schedule)
    return keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay)


def make_strategy(name: str):
    import tensorflow as tf

    if name == "multiworker":  # before anything initialises the TensorFlow context
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """In a multi-worker run only the chief (worker 0) writes the run folder."""
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = tf_config.get("task") or {}
    if not task or task.get("type") == "chief":
        return True
    has_chief = "chief" in tf_config.get("cluster", {})
    return task.get("type") == "worker" and task.get("index", 0) == 0 and not has_chief


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------


def default_input_shape(entry, data: str) -> tuple:
    """The model's own input, except for the 28x28 grayscale built-ins: 32x32x1 (or the model's
    minimum size), not an upsampled 224x224x3 copy of every image."""
    if data in kdata.BUILTINS:
        side = max(32, entry.min_size)
        return (side, side, 1)
    return tuple(entry.input_shape)


def build_model(cfg: TrainConfig, num_classes: int, input_shape):
    """The training model: GoogLeNet with its auxiliary heads (``train`` strips them for saving)."""
    from . import models

    options = dict(cfg.model_options)
    if cfg.model == "googlenet":
        options.setdefault("aux_logits", True)
    return models.get_entry(cfg.model).fn(input_shape=input_shape, num_classes=num_classes, **options)


def transfer_weights(target, source, skip=()) -> list[str]:
    """Copy weights layer by layer, by name, where the shapes agree; return the names copied.

    ``skip``: layers to leave as initialised (the classifier head, which belongs to the old task)."""
    copied = []
    for layer in target.layers:
        if not layer.weights or layer.name in skip:
            continue
        try:
            src = source.get_layer(layer.name)
        except ValueError:
            continue
        src_w = src.get_weights()
        if len(src_w) == len(layer.weights) and all(
            a.shape == tuple(b.shape) for a, b in zip(src_w, layer.weights, strict=True)
        ):
            layer.set_weights(src_w)
            copied.append(layer.name)
    return copied


def load_pretrained(cfg: TrainConfig, shape):
    """The source model of ``--weights``: a .keras file, a run folder, or 'imagenet'."""
    import keras

    if cfg.weights == "imagenet":
        apps = {
            "vgg16": "VGG16", "vgg19": "VGG19", "resnet50": "ResNet50", "resnet101": "ResNet101",
            "resnet152": "ResNet152", "mobilenet_v1": "MobileNet", "mobilenet_v2": "MobileNetV2",
            "densenet121": "DenseNet121", "densenet169": "DenseNet169", "densenet201": "DenseNet201",
        }  # fmt: skip
        if cfg.model not in apps:
            raise ValueError(
                f"--weights imagenet: only the keras.applications backbones have ImageNet weights "
                f"({', '.join(apps)}); '{cfg.model}' does not"
            )
        if shape[2] != 3:
            raise ValueError("--weights imagenet needs 3-channel input; pass --input-shape H,W,3")
        try:
            return getattr(keras.applications, apps[cfg.model])(
                weights="imagenet", include_top=False, input_shape=shape
            )
        except Exception as e:  # noqa: BLE001 - offline: name what could not be fetched
            raise RuntimeError(
                f"--weights imagenet: could not fetch the {apps[cfg.model]} ImageNet weights file ({e}). "
                "It is downloaded from the Keras weights store on first use; without internet, pass "
                "--weights PATH to a local .keras file"
            ) from e
    return keras.saving.load_model(resolve_model_file(cfg.weights), compile=False)


def set_bn_momentum(model, momentum: float) -> int:
    """Set the moving-average momentum of every BatchNormalization layer; returns how many.

    keras.applications' MobileNetV2 uses 0.999, which needs thousands of steps before the moving
    statistics forget their initial values: a short run from scratch then predicts one class in
    inference mode. 0.9 (PyTorch's 0.1) tracks the statistics within an epoch."""
    import keras

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.momentum = momentum
    return len(layers)


def set_backbone_trainable(model, trainable: bool, new_layers=(), freeze_until: str | None = None):
    """Freeze/unfreeze everything but the head: the layers after the global pooling / flatten and the
    ``new_layers`` that did not come from the pretrained model.

    BatchNormalization layers of the backbone stay frozen even when it is unfrozen for fine-tuning, as
    in the Keras transfer-learning guide: in Keras 3 a frozen BN runs in inference mode, so the
    pretrained statistics are kept instead of being overwritten by a few small batches."""
    import keras

    head = set(_head_layer_names(model)) | set(new_layers)
    names = [layer.name for layer in model.layers]
    if freeze_until is not None and freeze_until not in names:
        raise ValueError(f"--freeze-until: model '{model.name}' has no layer '{freeze_until}'")
    frozen_prefix = names.index(freeze_until) + 1 if freeze_until else 0
    for i, layer in enumerate(model.layers):
        if layer.name in head:
            layer.trainable = True
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        else:
            layer.trainable = trainable and i >= frozen_prefix


def _head_layer_names(model) -> list[str]:
    import keras

    names = [layer.name for layer in model.layers]
    for i in range(len(model.layers) - 1, -1, -1):
        if isinstance(
            model.layers[i],
            keras.layers.GlobalAveragePooling2D | keras.layers.GlobalMaxPooling2D | keras.layers.Flatten,
        ):
            return names[i:]
    return names[-1:]


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


class RunError(RuntimeError):
    """The run stopped (NaN loss, bad resume); the message says what is kept and what to do."""


def _make_logger(run_dir: Path):
    def log(msg: str, echo: bool = True):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(run_dir / "run.log", "a") as f:
            f.write(f"{stamp} {msg}\n")
        if echo:  # --quiet only quiets the progress bars
            print(msg, flush=True)

    return log


def compile_options() -> dict:
    """XLA where it pays: on GPUs. On CPUs XLA-compiled training is about 3x slower (measured on the
    2-core machine of BENCHMARKS.md), so ``fit`` runs the plain TensorFlow graph there."""
    import tensorflow as tf

    return {"jit_compile": bool(tf.config.list_logical_devices("GPU"))}


def _compile(model, optimizer, cfg: TrainConfig, num_classes: int):
    import keras

    loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    # Top-5 during training only in float32 (tf.math.in_top_k rejects float16/bfloat16 predictions);
    # the final metrics.json always has it.
    if num_classes > 5 and keras.mixed_precision.global_policy().compute_dtype == "float32":
        metrics.append(keras.metrics.TopKCategoricalAccuracy(k=5, name="top5"))
    if len(model.outputs) > 1:  # GoogLeNet with its auxiliary heads
        from .models.inception import googlenet_loss_weights

        weights = googlenet_loss_weights()
        model.compile(
            optimizer,
            loss={name: loss for name in weights},
            loss_weights=weights,
            metrics={"predictions": metrics},
            **compile_options(),
        )
    else:
        model.compile(optimizer, loss=loss, metrics=metrics, **compile_options())


def _val_accuracy(logs: dict) -> float | None:
    for key in ("val_accuracy", "val_predictions_accuracy"):
        if key in logs:
            return float(logs[key])
    return None


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Train (or resume) a run; returns the run folder."""
    import keras
    import tensorflow as tf

    from . import evaluate as kevaluate
    from . import models

    cfg.check()
    entry = models.get_entry(cfg.model)  # unknown model: error before anything is written
    # First TensorFlow call: MultiWorkerMirroredStrategy must configure collectives at program start.
    strategy = make_strategy(cfg.strategy)
    run_dir = Path(cfg.output or f"runs/{cfg.model}")
    chief = is_chief()
    if not chief:  # in a multi-worker run the other workers keep their files apart from the chief's
        task = json.loads(os.environ["TF_CONFIG"])["task"]
        run_dir = run_dir / f"{task['type']}{task['index']}"
    if resume:
        saved = load_config(run_dir)
        saved.quiet = cfg.quiet  # how to show progress is the resuming command's choice
        cfg = saved
        state = (
            json.loads((run_dir / "state.json").read_text()) if (run_dir / "state.json").exists() else None
        )
        if state is None or not (run_dir / "checkpoint.keras").exists():
            raise RunError(f"--resume: '{run_dir}' has no finished epoch to resume from; start it again")
    elif run_dir.exists() and any(not p.name.startswith("worker") for p in run_dir.iterdir()):
        # (other workers' sub-folders may appear first in a multi-worker run)
        raise RunError(
            f"'{run_dir}' already holds a run; pass --resume to continue it or --output for a new run folder"
        )

    keras.utils.set_random_seed(cfg.seed)
    shape = tuple(cfg.input_shape or default_input_shape(entry, cfg.data))
    cfg.input_shape = shape
    dataset = kdata.load_dataset(
        cfg.data,
        shape[:2],
        shape[2],
        val_split=cfg.val_split,
        train_fraction=cfg.train_fraction,
        seed=cfg.seed,
    )
    if dataset.val is None:
        raise kdata.DataError(
            f"--data {cfg.data}: no validation images; use --val-split > 0 or a val/ folder"
        )
    normalize = kdata.Normalization(tuple(cfg.mean), tuple(cfg.std))
    if resume and state.get("class_names") != dataset.class_names:
        raise kdata.DataError(
            f"--resume: the classes of --data {cfg.data} ({', '.join(dataset.class_names)}) are not those "
            f"the run was started with ({', '.join(state.get('class_names') or [])})"
        )

    if cfg.precision != "float32":
        keras.mixed_precision.set_global_policy(cfg.precision)
    augmenter = aug.Augmenter(
        aug.augment_config(cfg.augment, **cfg.augment_overrides), dataset.num_classes, cfg.seed
    )
    steps = math.ceil(len(dataset.train) / cfg.batch_size)
    phases = [("train", cfg.epochs, cfg.lr or cfg.default_lr())]
    if cfg.fine_tune_epochs:
        phases.append(
            ("fine_tune", cfg.fine_tune_epochs, cfg.fine_tune_lr or (cfg.lr or cfg.default_lr()) / 10)
        )

    # The model (and --weights) before the run folder: a model that cannot be built writes nothing.
    messages = [
        f"{'resuming' if resume else 'training'} {cfg.model} on {dataset.name}: {len(dataset.train)} train, "
        f"{len(dataset.val)} val, {len(dataset.test) if dataset.test is not None else 0} test images, "
        f"{dataset.num_classes} classes, input {shape}",
        *(f"skipped unreadable image {path}: {reason}" for path, reason in dataset.skipped),
        *([f"{len(dataset.skipped)} unreadable image(s) skipped"] if dataset.skipped else []),
        f"strategy {type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s), {cfg.precision}",
    ]
    new_layers: list[str] = []
    with strategy.scope():
        if resume:
            model = keras.saving.load_model(run_dir / "checkpoint.keras", compile=True)
        else:
            model = build_model(cfg, dataset.num_classes, shape)
            if cfg.weights:
                source = load_pretrained(cfg, shape)
                copied = transfer_weights(model, source, skip=set(_head_layer_names(model)))
                if not copied:
                    raise RunError(
                        f"--weights {cfg.weights}: no layer of '{cfg.model}' matches the source model"
                    )
                new_layers = [
                    layer.name for layer in model.layers if layer.weights and layer.name not in copied
                ]
                messages.append(
                    f"--weights {cfg.weights}: {len(copied)} layers copied, new: {', '.join(new_layers)}"
                )
            if cfg.bn_momentum is not None:
                set_bn_momentum(model, cfg.bn_momentum)
        inference = model
        if len(model.outputs) > 1:
            from .models.inception import strip_auxiliary_heads

            inference = strip_auxiliary_heads(model)

    run_dir.mkdir(parents=True, exist_ok=True)
    log = _make_logger(run_dir)
    if not resume:
        atomic_write_text(
            run_dir / "config.json",
            json.dumps({"train": asdict(cfg), "kerascnn_version": _version()}, indent=2, default=list) + "\n",
        )
    for message in messages:
        log(message)
    state = state if resume else {"epoch": 0, "best": None, "history": [], "class_names": dataset.class_names}
    total_epochs = sum(p[1] for p in phases)

    label_fn = None
    if len(model.outputs) > 1:
        output_names = list(model.output_names)

        def label_fn(y):
            return {name: y for name in output_names}

    train_ds = kdata.make_dataset(
        dataset.train, dataset.num_classes, cfg.batch_size, normalize, training=True, augmenter=augmenter,
        mixup_alpha=cfg.mixup, oversample=cfg.balance == "oversample", seed=cfg.seed, label_fn=label_fn,
    )  # fmt: skip
    val_ds = kdata.make_dataset(
        dataset.val, dataset.num_classes, cfg.batch_size, normalize, label_fn=label_fn
    )
    class_weight = (
        aug.class_weights(dataset.train.labels, dataset.num_classes) if cfg.balance == "weights" else None
    )

    done = int(state["epoch"])
    start_phase_epoch = 0
    for phase, epochs, lr in phases:
        end_epoch = start_phase_epoch + epochs
        if done >= end_epoch:
            start_phase_epoch = end_epoch
            continue
        fresh_phase = not resume or state.get("phase") != phase
        if fresh_phase:
            with strategy.scope():
                if cfg.freeze_backbone:
                    set_backbone_trainable(model, phase == "fine_tune", new_layers, cfg.freeze_until)
                schedule = make_schedule(cfg, steps, epochs, lr)
                _compile(model, make_optimizer(cfg, schedule), cfg, dataset.num_classes)
        if cfg.freeze_backbone:
            trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
            log(f"phase {phase}: {epochs} epochs at lr {lr:g}, {trainable:,d} trainable parameters")
        callback = _RunCallback(run_dir, model, inference, state, phase, log, chief, dataset.class_names)
        callbacks = [keras.callbacks.TerminateOnNaN(), callback]
        if chief:
            callbacks.append(
                keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False)
            )
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            _prebuild_for_multiworker(model, strategy, train_ds)
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=end_epoch,
            initial_epoch=max(done, start_phase_epoch),
            class_weight=class_weight,
            callbacks=callbacks,
            # progress bars only on a terminal: piped, Keras' bar would write ANSI sequences
            verbose=2 if cfg.quiet or not sys.stdout.isatty() else 1,
            shuffle=False,  # the pipeline shuffles
        )
        if callback.nan_epoch is not None:
            kept = (
                f"The models of the last good epoch ({state['epoch']}) are kept in {run_dir}; continue "
                f"from them in a new run with a lower --lr: --weights {run_dir}"
                if state["epoch"]
                else "No epoch had finished, so there is nothing to resume: lower --lr and start again"
            )
            raise RunError(f"the loss became NaN in epoch {callback.nan_epoch}; the run stopped. {kept}")
        done = int(state["epoch"])
        start_phase_epoch = end_epoch

    if done < total_epochs:
        raise RunError(f"the run stopped at epoch {done} of {total_epochs}")
    # Final evaluation with the best model on the test split (or val when there is none).
    best = keras.saving.load_model(run_dir / "model_best.keras", compile=False)
    split = dataset.eval_split
    metrics = kevaluate.evaluate(best, split, normalize, dataset.class_names, batch_size=cfg.batch_size)
    metrics["split"] = "test" if dataset.test is not None else "val"
    metrics["best_val_accuracy"] = state["best"]
    metrics["epochs"] = done
    metrics["skipped_images"] = [p for p, _ in dataset.skipped]
    if chief:
        kevaluate.write_json(metrics, run_dir / "metrics.json")
        kevaluate.plot_confusion(
            metrics["confusion_matrix"],
            dataset.class_names,
            run_dir / "confusion.png",
            title=f"{cfg.model} on {dataset.name} ({metrics['split']})",
        )
        kevaluate.plot_curves(state["history"], run_dir / "curves.png")
    topk = next(k for k in metrics if k.startswith("top") and k != "top1")
    log(
        f"{metrics['split']} top-1 {metrics['top1']:.4f}, {topk} {metrics[topk]:.4f} "
        f"({metrics['samples']} images)"
    )
    return run_dir


def _prebuild_for_multiworker(model, strategy, dataset):
    """Work around keras-team/keras#20585 (open since Keras 3.0): ``fit`` under
    MultiWorkerMirroredStrategy fails twice in Keras 3.15.

    1. It builds the model from a cross-worker mean of the first distributed batch, an eager collective
       reduce that fails ("Attempt to convert a value (PerReplica...)"): build the model, loss, metrics
       and optimizer from a local batch instead, so that ``fit`` has nothing left to build.
    2. It reduces the scalar logs across workers with ``strategy.reduce("MEAN", v, axis=0)``, which
       fails on scalars ("Invalid reduction dimension 0"): reduce the logs over the local replica
       instead. Gradients are still all-reduced across workers by the strategy, so every worker applies
       the same update (the test checks the weights end identical); only the printed loss/metrics are
       each worker's own.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    batch = next(iter(dataset))
    with strategy.scope():
        model._symbolic_build(data_batch=batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    tf_trainer._collective_all_reduce_multi_worker = lambda strategy: False


def _version() -> str:
    from . import __version__

    return __version__


def _make_callback_class():
    import keras

    class RunCallback(keras.callbacks.Callback):
        """After each finished epoch: checkpoint (training model + optimizer), last and best inference
        models, history and state, each written atomically. A NaN loss stops training and saves
        nothing, so the last good checkpoint stays."""

        def __init__(self, run_dir, train_model, inference, state, phase, log, chief, class_names):
            super().__init__()
            self.run_dir, self.train_model, self.inference = Path(run_dir), train_model, inference
            self.state, self.phase, self.log, self.chief = state, phase, log, chief
            self.class_names = class_names
            self.nan_epoch = None

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            loss = logs.get("loss")
            if loss is None or not math.isfinite(float(loss)):
                self.nan_epoch = epoch + 1
                self.model.stop_training = True
                self.log(f"epoch {epoch + 1}: loss is {loss}; stopping, nothing saved for this epoch")
                return
            lr = self.train_model.optimizer.learning_rate
            row = {"epoch": epoch, "phase": self.phase, "lr": float(np.asarray(lr))}
            row.update({k: float(v) for k, v in logs.items() if k != "learning_rate"})
            val = _val_accuracy(logs)
            improved = val is not None and (self.state["best"] is None or val > self.state["best"])
            # All workers save (a multi-worker save is collective); the chief's is the run's.
            atomic_save_model(self.train_model, self.run_dir / "checkpoint.keras")
            atomic_save_model(self.inference, self.run_dir / "model_last.keras")
            if improved or not (self.run_dir / "model_best.keras").exists():
                atomic_save_model(self.inference, self.run_dir / "model_best.keras")
                if improved:
                    self.state["best"] = val
            self.state["history"].append(row)
            self.state.update(epoch=epoch + 1, phase=self.phase, class_names=self.class_names)
            _write_history(self.state["history"], self.run_dir / "history.csv")
            atomic_write_text(self.run_dir / "state.json", json.dumps(self.state, indent=1) + "\n")
            self.log(
                f"epoch {epoch + 1}: loss {logs.get('loss', float('nan')):.4f}, val_accuracy "
                f"{val if val is not None else float('nan'):.4f}{' (best)' if improved else ''}",
                echo=False,  # Keras' progress bar shows the epoch already
            )

    return RunCallback


def _RunCallback(*args):  # noqa: N802 - built lazily so importing kerascnn.train stays light
    return _make_callback_class()(*args)


def _write_history(history: list[dict], path: Path):
    keys = []
    for row in history:
        keys.extend(k for k in row if k not in keys)
    from io import StringIO

    buf = StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buf.getvalue())
