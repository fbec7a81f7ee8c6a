"""``kerascnn train``: a dataset in, a trained and evaluated run folder out.

The run folder holds everything a later step needs, and nothing else reaches into this process:

    config.json        the run's full configuration (what `--resume` continues)
    model_best.keras   the inference model with the best validation accuracy
    model_last.keras   the inference model after the last finished epoch
    checkpoint.keras   the training model with its optimizer state (for --resume)
    state.json         the last finished epoch, its optimizer step count, the best validation accuracy
    .kerascnn.lock     held while a command writes the folder (one writer at a time)
    history.csv        per-epoch loss/accuracy/learning rate
    tensorboard/       TensorBoard logs
    curves.png         loss and accuracy curves
    confusion.png      confusion matrix of the best model on the test split
    metrics.json       top-1, top-5 and per-class accuracy of the best model
    run.log            what happened, including skipped unreadable images

Every file is written to a temporary name and renamed, so a crash never leaves a truncated file; an
epoch's models and state.json are committed together (:func:`kerascnn.runs.commit_epoch`), so a run
killed at any moment continues with ``--resume`` from its last finished epoch, with the optimizer step
count of an uninterrupted run. An epoch is kept only when its losses and weights are finite: a diverged
epoch stops the run and leaves the last good files as they were.

``fit`` is given callbacks of one job each (:mod:`kerascnn.callbacks`): the BatchNorm statistics
measured before each validation, early stopping on val_loss in the last phase, and each epoch's commit
into the run folder (with the divergence check and history.csv).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np

from kerascnn.config import (  # noqa: F401 - TrainConfig and the choices are kerascnn.train's API too
    DEFAULT_MODEL,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    STRATEGIES,
    TrainConfig,
)
from kerascnn.errors import ConfigError, KerascnnError

from . import augment as aug
from . import best_by, recipe, transfer
from . import data as kdata
from .callbacks import BN_STAT_IMAGES, EpochCommit, PreciseBatchNorm, ResumableEarlyStopping, write_history
from .distribute import cluster_task, is_chief, make_strategy, prebuild_for_multiworker, worker_shard
from .lock import WriteLock
from .optim import compile_model, make_optimizer, make_schedule
from .runs import (
    MODEL_FILES,
    RunError,
    atomic_write_json,
    clear_run_folder,
    holds_a_run,
    initial_state,
    load_config,
    new_run_problem,
    read_state,
    recover_run_folder,
    write_or_stop,
)

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
    valid = models.option_names(cfg.model)
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise ConfigError(
            f"--model-kwargs {unknown[0]}: {cfg.model} has no option '{unknown[0]}'; "
            f"its options: {', '.join(valid)}"
        )
    if cfg.model == "googlenet":
        options.setdefault("aux_logits", True)
    try:
        return models.get_entry(cfg.model).fn(input_shape=input_shape, num_classes=num_classes, **options)
    except TypeError as e:  # an option a builder forwards to another that does not take it
        if "keyword argument" not in str(e):
            raise
        raise ConfigError(f"--model-kwargs: {cfg.model}: {e}; its options: {', '.join(valid)}") from None
    except ValueError as e:  # a value the architecture cannot take (depth=7, alpha=-1)
        if isinstance(e, KerascnnError):
            raise
        raise ConfigError(f"--model {cfg.model} --model-kwargs {_shown(options)}: {e}") from None


def set_bn_momentum(model, momentum: float) -> int:
    """Set the moving-average momentum of every BatchNormalization layer; returns how many.

    keras.applications' MobileNetV2 uses 0.999, which needs thousands of steps before the moving
    statistics forget their initial values: a short run from scratch then predicts one class in
    inference mode. 0.9 (PyTorch's 0.1) tracks the statistics within an epoch."""

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.momentum = momentum
    return len(layers)


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


def _make_logger(run_dir: Path):
    def log(msg: str, echo: bool = True):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(run_dir / "run.log", "a") as f:
            f.write(f"{stamp} {msg}\n")
        if echo:  # --quiet only quiets the progress bars
            print(msg, flush=True)

    return log


@dataclass
class _Run:
    """One training run in progress: what each stage of :func:`train` hands the next."""

    cfg: TrainConfig
    resume: bool
    strategy: object
    run_dir: Path
    chief: bool
    state: dict | None = None  # state.json: epochs done, best, history, class names
    lock: WriteLock | None = None  # held from the first write to the end of the run
    from_checkpoint: bool = False  # resuming from a committed epoch (else the model starts afresh)
    extended: bool = False  # resuming with more --epochs than the run was started with
    dataset: kdata.ImageData | None = None
    normalize: kdata.Normalization | None = None
    augmenter: aug.Augmenter | None = None
    phases: list[tuple[str, int, float]] = field(default_factory=list)  # (name, epochs, peak lr)
    messages: list[str] = field(default_factory=list)  # logged once the run folder exists
    model: object = None  # the model trained (with GoogLeNet's auxiliary heads)
    inference: object = None  # the model saved (without them)
    new_layers: list[str] = field(default_factory=list)  # layers --weights did not fill
    derive: tuple | None = None  # a new run's (given, native size, model reason, pretrained) for
    # kerascnn.recipe.apply_recipe
    bn_images: object = None  # the training images BatchNorm statistics are measured on (or None)
    log: Callable = print


def train(
    cfg: TrainConfig, resume: bool = False, given: dict[str, str] | None = None, overwrite: bool = False
) -> Path:
    """Train (or resume) a run; returns the run folder. The stages: open the run, load the data,
    build the models, (then only) write the run folder, fit the phases, report on the test split.

    ``given`` maps the TrainConfig fields the user set explicitly to their option names; resuming, they
    must match the run's, except ``epochs``, which may grow (see :func:`_apply_resume_options`). With
    ``given`` (``kerascnn train`` always passes it), a new run derives the fields not in it from the data
    (:mod:`kerascnn.recipe`); ``given=None`` (a Python caller) trains ``cfg`` exactly as it is.
    ``overwrite``: a new run in a folder that holds an earlier kerascnn run, which is deleted first
    (only once the new run's data and model are ready; nothing of it is kept)."""
    if resume and given is not None and not cfg.output:  # the folder of a run whose model the recipe
        recipe.apply_model_choice(cfg, given)  # chose: runs/<the model chosen for this data>
    if resume and overwrite:
        raise ConfigError("--overwrite starts the run afresh, --resume continues it: give one of them")
    run = _open_run(cfg, resume, given or {}, derive=given is not None and not resume, overwrite=overwrite)
    try:
        _load_data(run)
        _build_models(run)  # a model that cannot be built writes nothing
        _start_run_folder(run, overwrite)
        _fit_phases(run)
        _report(run)
    finally:
        if run.lock is not None:
            run.lock.release()
    return run.run_dir


def _open_run(
    cfg: TrainConfig, resume: bool, given: dict[str, str], derive: bool = False, overwrite: bool = False
) -> _Run:
    """Check the configuration, start the strategy and find the run folder (and, resuming, lock it,
    finish or undo a half-done commit and read its state). ``derive``: a new run whose model and input
    shape (when --model is not given) come from the data (:func:`kerascnn.recipe.choose_model`)."""
    from . import models

    cfg.check(recipe_may_freeze=derive and "model" not in given)
    native, model_reason, pretrained = None, None, None
    if derive:
        native, model_reason, pretrained = recipe.apply_model_choice(cfg, given)
        cfg.check()
    models.get_entry(cfg.model)  # unknown model: error before anything is written
    # First TensorFlow call: MultiWorkerMirroredStrategy must configure collectives at program start.
    strategy = make_strategy(cfg.strategy)
    run_dir = Path(cfg.output or f"runs/{cfg.model}")
    chief = is_chief()
    if not chief:  # in a multi-worker run the other workers keep their files apart from the chief's
        task = cluster_task()[1]
        run_dir = run_dir / f"{task['type']}{task.get('index', 0)}"
    if not resume:
        problem = new_run_problem(run_dir, overwrite)
        if problem:
            raise RunError(problem)
        derived = (given, native, model_reason, pretrained) if derive else None
        return _Run(cfg, resume, strategy, run_dir, chief, derive=derived)
    if not (run_dir / "config.json").exists():
        what = "holds files that are not a kerascnn run" if holds_a_run(run_dir) else "holds no run"
        raise RunError(
            f"--resume: '{run_dir}' {what} (no config.json); start a run without --resume"
            + (", in a new or empty folder" if what.startswith("holds files") else "")
        )
    lock = WriteLock.for_run(run_dir).acquire()
    try:
        saved = load_config(run_dir)
        extended = _apply_resume_options(saved, cfg, given, run_dir)
        state = read_state(run_dir)
        stopped = (state or {}).get("stopped_early")
        if extended and stopped:
            raise ConfigError(
                f"--epochs {saved.epochs}: the run in '{run_dir}' stopped early at epoch {stopped['epoch']} "
                f"({stopped['reason']}), and an early-stopped run is not extended; start a new run from "
                f"its weights instead: --weights {run_dir} --epochs {saved.epochs}"
            )
        recovered = recover_run_folder(run_dir, state)
        from_checkpoint = bool(state and state.get("epoch")) and (run_dir / "checkpoint.keras").exists()
    except BaseException:
        lock.release()
        raise
    run = _Run(saved, resume, strategy, run_dir, chief, state, lock, from_checkpoint, extended)
    run.messages.extend(f"--resume: {action}" for action in recovered)
    if extended:
        run.messages.append(
            f"--resume: --epochs {saved.epochs}: the run is extended to {saved.epochs} epochs"
        )
    if not from_checkpoint:
        run.messages.append("--resume: no epoch had finished; the run starts again from epoch 0")
    if saved.recipe.get("reason"):
        run.messages.append(f"--resume: the recipe recorded in config.json: {saved.recipe['reason']}")
    if stopped:
        run.messages.append(
            f"--resume: the run stopped early at epoch {stopped['epoch']} ({stopped['reason']}); it is not "
            "continued. Start a new run (--weights "
            f"{run_dir}) to train more"
        )
    return run


def _apply_resume_options(saved: TrainConfig, cfg: TrainConfig, given: dict[str, str], run_dir: Path) -> bool:
    """Resuming continues the saved configuration. Options given on the command line must match it,
    except ``--epochs``, which may grow (the schedule is stretched to the new total; see
    :func:`_fit_phases`); anything else is refused, naming the option. True when epochs grew."""
    saved.quiet = cfg.quiet  # how to show progress is the resuming command's choice
    extended = False
    for name, option in given.items():
        new, old = getattr(cfg, name), getattr(saved, name)
        if name in ("quiet", "output") or new == old:
            continue
        if name == "cache":  # how the images are kept never changes their pixels: the new choice holds
            saved.cache = new
            continue
        if name == "epochs" and new > old and not saved.fine_tune_epochs:
            saved.epochs, extended = new, True
            continue
        why = (
            "a run can only be extended (more epochs, without --fine-tune-epochs)"
            if name == "epochs"
            else "a resumed run keeps the options it was started with"
        )
        way = (
            f"start a new run from its weights instead: --weights {run_dir} {option} {_shown(new)}"
            if any((run_dir / name).exists() for name in MODEL_FILES)
            else f"no epoch of it finished, so nothing is lost by starting it again: {option} {_shown(new)} "
            "--overwrite (without --resume)"
        )
        raise ConfigError(
            f"{option} {_shown(new)}: the run in '{run_dir}' was started with {_shown(old)}, and {why}; {way}"
        )
    return extended


def _shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "(none)"
    return "(default)" if value is None else str(value)


def _load_data(run: _Run) -> None:
    """The dataset at the model's input size, its normalization, the augmenter and the phases."""
    from . import models

    cfg = run.cfg
    keras.utils.set_random_seed(cfg.seed)
    shape = tuple(cfg.input_shape or default_input_shape(models.get_entry(cfg.model), cfg.data))
    cfg.input_shape = shape
    dataset = kdata.load_dataset(
        cfg.data,
        shape[:2],
        shape[2],
        val_split=cfg.val_split,
        train_fraction=cfg.train_fraction,
        eval_fraction=cfg.eval_fraction,
        seed=cfg.seed,
        cache=cfg.cache,
        say=run.messages.append,
    )
    if dataset.val is None:
        raise kdata.DataError(
            f"--data {cfg.data}: no validation images; use --val-split > 0 or a val/ folder"
        )
    if run.from_checkpoint and run.state.get("class_names") != dataset.class_names:
        raise kdata.DataError(
            f"--resume: the classes of --data {cfg.data} ({', '.join(dataset.class_names)}) are not those "
            f"the run was started with ({', '.join(run.state.get('class_names') or [])})"
        )
    run.dataset = dataset
    source = transfer.source_normalization(cfg) if not run.from_checkpoint else None
    if source is not None:  # the input the --weights were trained with (ImageNet: per family)
        cfg.mean, cfg.std = source
    run.normalize = kdata.Normalization(tuple(cfg.mean), tuple(cfg.std))
    if cfg.precision != "float32":
        keras.mixed_precision.set_global_policy(cfg.precision)
    recipe_line = None
    if run.derive is not None:  # a new run: what the command line left out, from the loaded data
        recipe_line = recipe.apply_recipe(cfg, len(dataset.train), dataset.num_classes, *run.derive)
    best_line = best_by.apply_best_by(cfg, len(dataset.val), run.state if run.resume else None)
    run.augmenter = aug.Augmenter(
        aug.augment_config(cfg.augment, **cfg.augment_overrides), dataset.num_classes, cfg.seed
    )
    lr = cfg.lr or cfg.default_lr()
    run.phases = [("probe", 1, lr)] if cfg.linear_probe else [("train", cfg.epochs, lr)]
    if cfg.fine_tune_epochs:
        run.phases.append(("fine_tune", cfg.fine_tune_epochs, cfg.fine_tune_lr or lr / 10))
    test = len(dataset.test) if dataset.test is not None else 0
    run.messages = [
        f"{'resuming' if run.resume else 'training'} {cfg.model} on {dataset.name}: {len(dataset.train)} "
        f"train, {len(dataset.val)} val, {test} test images, {dataset.num_classes} classes, input {shape}",
        *run.messages,  # what _open_run found
        *(f"skipped unreadable image {path}: {reason}" for path, reason in dataset.skipped),
        *([f"{len(dataset.skipped)} unreadable image(s) skipped"] if dataset.skipped else []),
        f"strategy {type(run.strategy).__name__}, {run.strategy.num_replicas_in_sync} replica(s), "
        f"{cfg.precision}",
        *([recipe_line] if recipe_line else []),
        *([cfg.recipe["pretrained_hint"]] if recipe_line and "pretrained_hint" in cfg.recipe else []),
        *([best_line] if best_line else []),
    ]


def _build_models(run: _Run) -> None:
    """The model to train (the checkpoint when resuming; else built, with --weights copied in) and the
    inference model that is saved (GoogLeNet's auxiliary heads stripped)."""
    cfg, shape = run.cfg, run.cfg.input_shape
    with run.strategy.scope():
        if run.from_checkpoint:
            model = _load_checkpoint(run)
        else:
            model = build_model(cfg, run.dataset.num_classes, shape)
            if cfg.weights:
                run.new_layers, line = transfer.copy_weights(cfg, model)
                run.messages.append(line)
            if cfg.bn_momentum is not None:
                set_bn_momentum(model, cfg.bn_momentum)
        inference = model
        if len(model.outputs) > 1:
            from .models.inception import strip_auxiliary_heads

            inference = strip_auxiliary_heads(model)
    run.model, run.inference = model, inference


def _load_checkpoint(run: _Run):
    """checkpoint.keras, checked against the state.json it was committed with."""
    import zipfile

    path = run.run_dir / "checkpoint.keras"
    way = f"start a new run from its last model instead: --weights {run.run_dir / MODEL_FILES[1]}"
    if not zipfile.is_zipfile(path):  # (Keras would say "File not found" of a file that is there)
        raise RunError(f"--resume: {path} is damaged (not a whole .keras zip archive: truncated?); {way}")
    try:
        model = keras.saving.load_model(path, compile=True)
    except Exception as e:  # noqa: BLE001 - any loader failure is a damaged file
        raise RunError(f"--resume: {path} cannot be loaded ({type(e).__name__}: {e}); {way}") from None
    want = run.state.get("optimizer_steps")
    have = int(model.optimizer.iterations.numpy()) if model.optimizer is not None else None
    if want is not None and have != want:
        raise RunError(
            f"--resume: {path} holds {have} optimizer steps, but state.json says epoch {run.state['epoch']} "
            f"ended at {want}: the run folder was changed by hand; start a new run"
        )
    return model


def _start_run_folder(run: _Run, overwrite: bool = False) -> None:
    """The run folder (locked; with ``overwrite``, the earlier run in it deleted), its log and (a new
    run) its config.json; the initial state when no epoch has finished."""
    if not run.resume:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        run.lock = WriteLock.for_run(run.run_dir).acquire()
        if overwrite:
            clear_run_folder(run.run_dir, run.lock)
        if holds_a_run(run.run_dir, name_the_writer=False):  # started by another since _open_run looked
            raise RunError(f"'{run.run_dir}' already holds a run; pass --output for a new run folder")
        recover_run_folder(run.run_dir, None)  # what a run killed before its config.json left
        config = {"train": asdict(run.cfg), "kerascnn_version": _version()}
        write_or_stop(
            run.run_dir,
            lambda: atomic_write_json(run.run_dir / "config.json", config, indent=2, default=list),
        )
    if run.from_checkpoint:  # history.csv is derived from state.json: rewrite it to match
        history, path = run.state["history"], run.run_dir / "history.csv"
        write_or_stop(run.run_dir, lambda: write_history(history, path), int(run.state["epoch"]))
    else:
        run.state = initial_state(run.dataset.class_names)
    run.log = _make_logger(run.run_dir)
    for message in run.messages:
        run.log(message)


def _fit_phases(run: _Run) -> None:
    """Fit each phase (train, then --fine-tune-epochs) from where the run stands; a phase started
    before is continued with its optimizer state, a new one gets a fresh optimizer and schedule."""
    cfg, dataset, model = run.cfg, run.dataset, run.model
    label_fn = None
    if len(model.outputs) > 1:
        output_names = list(model.output_names)

        def label_fn(y):
            return {name: y for name in output_names}

    shard = worker_shard(run.strategy)
    train_ds = kdata.make_dataset(
        dataset.train, dataset.num_classes, cfg.batch_size, run.normalize, training=True,
        augmenter=run.augmenter, mixup_alpha=cfg.mixup, oversample=cfg.balance == "oversample",
        seed=cfg.seed, label_fn=label_fn, shard=shard,
    )  # fmt: skip
    val_ds = kdata.make_dataset(
        dataset.val, dataset.num_classes, cfg.batch_size, run.normalize, label_fn=label_fn, shard=shard
    )
    class_weight = (
        aug.class_weights(dataset.train.labels, dataset.num_classes) if cfg.balance == "weights" else None
    )
    steps = math.ceil(len(dataset.train) / cfg.batch_size)
    done, start = int(run.state["epoch"]), 0
    if run.strategy.num_replicas_in_sync == 1 and any(
        isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers
    ):  # measured BatchNorm statistics before each validation (kerascnn.callbacks.PreciseBatchNorm)
        pick = np.random.default_rng(cfg.seed).permutation(len(dataset.train))[:BN_STAT_IMAGES]
        # uint8, normalised a batch at a time (a quarter of the memory of float32: 154 MB at 224x224x3)
        run.bn_images = dataset.train.images[pick]  # (read once from a streamed split)
    stopped = run.state.get("stopped_early")
    for phase, epochs, lr in run.phases:
        end = start + epochs
        if done < end and not stopped:
            if not run.from_checkpoint or run.state.get("phase") != phase:
                with run.strategy.scope():
                    if cfg.freeze_backbone:
                        transfer.set_backbone_trainable(
                            model, phase == "fine_tune", run.new_layers, cfg.freeze_until
                        )
                    optimizer = make_optimizer(cfg, make_schedule(cfg, steps, epochs, lr))
                    compile_model(model, optimizer, cfg, dataset.num_classes)
            elif run.extended:  # the same optimizer state, its schedule stretched to the new total
                model.optimizer.learning_rate = make_schedule(cfg, steps, epochs, lr)
            if cfg.freeze_backbone:
                trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
                what = "the head as a linear probe" if phase == "probe" else f"{epochs} epochs at lr {lr:g}"
                run.log(f"phase {phase}: {what}, {trainable:,d} trainable parameters")
            if phase == "probe":
                _probe(run, val_ds)
            else:
                _fit(
                    run, phase, train_ds, val_ds, class_weight, initial_epoch=max(done, start), end_epoch=end
                )
            done = int(run.state["epoch"])
            stopped = run.state.get("stopped_early")
        start = end
    total = sum(p[1] for p in run.phases)
    if done < total and not stopped:
        raise RunError(f"the run stopped at epoch {done} of {total}")


def _probe(run: _Run, val_ds) -> None:
    """The frozen phase as a linear probe (:mod:`kerascnn.probe`), committed as the run's first epoch."""
    from .probe import fit_head

    cfg, dataset = run.cfg, run.dataset
    plain = kdata.make_dataset(dataset.train, dataset.num_classes, cfg.batch_size, run.normalize)
    logs = fit_head(
        run.model, plain, val_ds, dataset.train.labels, dataset.val.labels, dataset.num_classes,
        cfg.label_smoothing, cfg.seed, log=run.log,
    )  # fmt: skip
    commit = EpochCommit(
        run.run_dir, dataset.num_classes, run.state, run.inference, "probe", log=run.log, best_by=cfg.best_by
    )
    commit.set_model(run.model)
    commit.set_params({"epochs": 1})
    commit.on_epoch_end(0, logs)
    run.state = commit.state
    if commit.diverged is not None:
        raise RunError(f"{commit.diverged}; the run stopped")


def _fit(run: _Run, phase: str, train_ds, val_ds, class_weight, initial_epoch: int, end_epoch: int) -> None:
    """``model.fit`` from ``initial_epoch`` to ``end_epoch`` with the run's callbacks (kerascnn.callbacks:
    precise BatchNorm before each validation, early stopping in the last phase, each epoch committed);
    a diverged epoch stops the run with what is kept and what to do."""
    import tensorflow as tf

    callbacks = [keras.callbacks.TerminateOnNaN()]
    if run.bn_images is not None:
        callbacks.append(PreciseBatchNorm(run.bn_images, normalize=run.normalize))
    stopper = None
    if run.cfg.patience and phase == run.phases[-1][0]:  # (the head phase of --fine-tune-epochs always
        history = run.state["history"]  # hands over to the fine-tuning): counted on where the run is
        stopper = ResumableEarlyStopping(
            run.cfg.patience, [row.get("val_loss") for row in history if row.get("phase", "train") == phase]
        )
        callbacks.append(stopper)
    commit = EpochCommit(
        run.run_dir, run.dataset.num_classes, run.state, run.inference, phase,
        stopped_early=(lambda: stopper.stopped) if stopper is not None else None, log=run.log,
        best_by=run.cfg.best_by,
    )  # fmt: skip
    callbacks.append(commit)
    if run.chief:
        callbacks.append(
            keras.callbacks.TensorBoard(log_dir=str(run.run_dir / "tensorboard"), write_graph=False)
        )
    if isinstance(run.strategy, tf.distribute.MultiWorkerMirroredStrategy):
        prebuild_for_multiworker(run.model, run.strategy, train_ds)
    run.model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=end_epoch,
        initial_epoch=initial_epoch,
        class_weight=class_weight,
        callbacks=callbacks,
        # progress bars only on a terminal: piped, Keras' bar would write ANSI sequences
        verbose=2 if run.cfg.quiet or not sys.stdout.isatty() else 1,
        shuffle=False,  # the pipeline shuffles
    )
    run.state = commit.state
    if commit.diverged is not None:
        epoch = run.state["epoch"]
        kept = (
            f"The files of the last good epoch ({epoch}) are kept unchanged in {run.run_dir}; continue from "
            f"them in a new run: --weights {run.run_dir}"
            if epoch
            else "No epoch had finished, so there is nothing to resume: start again in place with --overwrite"
        )
        cfg = run.cfg
        tips = [f"a lower --lr (this run: {cfg.lr or cfg.default_lr():g})"]
        if not cfg.clip_norm:
            tips.append("gradient clipping (--clip-norm 1.0)")
        if cfg.precision != "float32":
            tips.append("--precision float32")
        raise RunError(f"{commit.diverged}; the run stopped. {kept}. Try {', '.join(tips)}.")


def _report(run: _Run) -> None:
    """The best model (and the last, when it is another epoch) scored on the test split (val when there is
    none): metrics.json, the plots, the log line (kerascnn.evaluate.report_run) and RUN/report.html."""
    from . import evaluate as kevaluate

    line = kevaluate.report_run(
        run.run_dir, run.dataset, run.normalize, run.state, run.cfg.batch_size, run.cfg.model, write=run.chief
    )
    run.log(line)
    if run.chief:  # RUN/report.html (kerascnn.report): a failure of the page is said, never the run's
        from .report import write_report

        try:
            write_report(run.run_dir, dataset=run.dataset, say=run.log)
        except KerascnnError as e:
            run.log(f"run report not written: {e}")


def _version() -> str:
    from . import __version__

    return __version__
