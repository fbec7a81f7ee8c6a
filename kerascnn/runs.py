"""The run folder, read back in one place, and every file kerascnn writes, written atomically.

A run folder is what ``kerascnn train`` leaves (``kerascnn/train.py`` lists its files): ``config.json``
(``{"train": the TrainConfig fields, "kerascnn_version"}``), ``state.json`` (epochs done, best score,
``class_names``), ``model_best.keras`` and ``model_last.keras``, plus history, metrics and plots. The
steps after training (evaluate, retrieval, export, validate) read those *files* through :class:`Run`;
none imports the training code, so each also takes a model file made elsewhere (like timm's
``utils/``, which its library uses and which never imports its training script).

Every write goes to a hidden temporary name in the target's folder and is renamed over the target, so
an interrupted command never leaves a truncated file (:func:`atomic_path` for writers that take a path:
``model.save``, ``fig.savefig``, converters).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import KerascnnError
from .lock import WriteLock

MODEL_FILES = ("model_best.keras", "model_last.keras")  # a run folder's models, in order of preference
DEFAULT_MEAN = DEFAULT_STD = (127.5,)  # pixel units: what a model file without a run folder is given


class RunFileError(KerascnnError, FileNotFoundError):
    """A run folder or model file that is not there; the message names the path."""


class ModelFileError(KerascnnError, ValueError):
    """A model file that cannot be loaded, or is not a single fixed-size image classifier."""


class RunError(KerascnnError, RuntimeError):
    """The run stopped (NaN loss, bad resume); the message says what is kept and what to do."""


# ------------------------------------------------------------------------------------------------
# Atomic writes
# ------------------------------------------------------------------------------------------------


def file_digest(path, algorithm: str = "sha256", **options) -> str:
    """The hex digest of a file's bytes (``hashlib.file_digest``: read in blocks, never whole);
    ``algorithm`` and ``options`` as ``hashlib.new`` takes them (``"blake2b", digest_size=16``)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.new(algorithm, **options)).hexdigest()


@contextlib.contextmanager
def atomic_path(path):
    """A temporary path in ``path``'s folder ending in ``path``'s suffix (savers pick the format from
    it); renamed to ``path`` when the block succeeds, removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".partial{path.suffix}")
    os.close(fd)
    os.unlink(tmp)  # savers want to create the file themselves (and with the usual permissions)
    try:
        yield Path(tmp)
        _fsync(tmp)  # the bytes reach the disk before the name does
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _fsync(path) -> None:
    with contextlib.suppress(OSError):  # a path a saver did not create, or a file system without fsync
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path, obj, indent: int = 1, **kwargs) -> None:
    """``obj`` as JSON with a final newline (``kwargs`` go to ``json.dumps``: ``default``, ...)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, **kwargs) + "\n")


def atomic_save_model(model, path) -> None:
    with atomic_path(path) as tmp:
        model.save(tmp)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed: servers, CI, headless runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def atomic_save_figure(fig, path, dpi: int = 100) -> None:
    """Save a matplotlib figure (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------------
# Model files
# ------------------------------------------------------------------------------------------------


def resolve_model_file(path) -> Path:
    """A ``.keras``/``.h5`` file, or a run folder (its best model, else its last)."""
    p = Path(path)
    if p.is_dir():
        for name in MODEL_FILES:
            if (p / name).exists():
                return p / name
        raise RunFileError(f"run folder '{p}' has no {' or '.join(MODEL_FILES)}")
    if not p.exists():
        raise RunFileError(f"model file '{p}' does not exist")
    return p


def load_keras_model(model_file):
    """Load a ``.keras``/``.h5`` file for inference, flattened (:func:`kerascnn.graph.flatten`: nested
    models inlined, the same layers and weights); any failure is a :class:`ModelFileError` naming it."""
    import zipfile

    import keras

    path = Path(model_file)
    if path.suffix.lower() == ".keras" and path.is_file() and not zipfile.is_zipfile(path):
        # (Keras itself would say "File not found" for a file that is there)
        raise ModelFileError(
            f"{model_file}: cannot load the Keras model (not a .keras zip archive; truncated?)"
        )
    try:
        model = keras.saving.load_model(model_file, compile=False)
    except Exception as e:  # noqa: BLE001 - a corrupt, foreign or custom-layer file: say which and why
        raise ModelFileError(f"{model_file}: cannot load the Keras model ({type(e).__name__}: {e})") from None
    from .graph import GraphError, flatten

    try:  # nested backbones and Sequential models: one flat graph of the same layers (kerascnn.graph)
        return flatten(model, where=str(model_file))
    except GraphError as e:
        raise ModelFileError(str(e)) from None


def image_input_shape(model, model_file) -> tuple[int, int, int]:
    """(height, width, channels) of a model with one image input of fixed size, else a
    :class:`ModelFileError` naming the file: what evaluate, retrieval and export all need."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelFileError(
            f"{model_file}: the model has {len(model.inputs)} input(s) and {len(model.outputs)} output(s); "
            "kerascnn takes image classifiers with one image input and one scores output"
        )
    shape = model.input_shape
    if isinstance(shape, list) or len(shape) != 4 or None in shape[1:]:
        raise ModelFileError(
            f"{model_file}: expected one image input (N, H, W, C) of fixed size, got {shape}"
        )
    return tuple(int(s) for s in shape[1:])


# ------------------------------------------------------------------------------------------------
# The run folder
# ------------------------------------------------------------------------------------------------


def read_train_config(run_dir) -> dict:
    """The ``train`` section of a run folder's ``config.json`` (the TrainConfig fields, as saved)."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise RunFileError(f"{path} does not exist: '{run_dir}' is not a kerascnn run folder")
    try:
        return json.loads(path.read_text())["train"]
    except (ValueError, KeyError) as e:
        raise ModelFileError(f"{path}: not a kerascnn run configuration ({type(e).__name__}: {e})") from None


def load_config(run_dir):
    """The TrainConfig a run folder was trained with (what ``--resume`` continues)."""
    from .config import TrainConfig

    saved = read_train_config(run_dir)
    try:
        cfg = TrainConfig(**saved)
    except TypeError as e:
        raise RunError(
            f"{Path(run_dir) / 'config.json'}: not a kerascnn training configuration ({e})"
        ) from None
    if cfg.input_shape is not None:
        cfg.input_shape = tuple(cfg.input_shape)
    cfg.mean, cfg.std = tuple(cfg.mean), tuple(cfg.std)
    return cfg


def read_state(run_dir) -> dict | None:
    """A run folder's ``state.json`` (epochs done, best score, class names), or None before epoch 1."""
    path = Path(run_dir) / "state.json"
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or not isinstance(state.get("epoch", 0), int):
            raise ValueError("not an object with an integer 'epoch'")
        return state
    except (OSError, ValueError) as e:
        raise RunFileError(f"{path}: not a kerascnn run state ({e}); the run folder is damaged") from None


# ------------------------------------------------------------------------------------------------
# One epoch's files, committed together
# ------------------------------------------------------------------------------------------------
#
# The models of an epoch (checkpoint.keras, model_last.keras and, when it improved, model_best.keras)
# are first written under staged names tied to the epoch (``.checkpoint.e0003.keras``); then state.json,
# which lists them under "pending", is renamed into place: that rename is the commit. After it the
# staged files are renamed over the models. A process killed at any instant leaves either the old state
# with stray staged files (rolled back: deleted) or the new state with some files still staged (rolled
# forward: renamed), so checkpoint.keras is always the model state.json describes, and a resumed run
# continues at an epoch boundary with the optimizer step count of an uninterrupted one.

_STAGED = re.compile(r"^\..+\.e\d{4,}\.keras$")
_PARTIAL = re.compile(r"^\..+\.partial(\..+)?$")


def staged_name(name: str, epoch: int) -> str:
    p = Path(name)
    return f".{p.stem}.e{epoch:04d}{p.suffix}"


def commit_epoch(run_dir, epoch: int, models: dict, state: dict) -> dict:
    """Save ``models`` (file name -> Keras model) for ``epoch`` and commit them with ``state``, which is
    returned as written (with its "pending" list). A failure (a full disk) removes what this call staged
    and leaves the previous epoch's files and state as they were."""
    run_dir = Path(run_dir)
    pending = {name: staged_name(name, epoch) for name in models}
    state = {**state, "pending": pending}
    try:
        for name, model in models.items():
            atomic_save_model(model, run_dir / pending[name])
        atomic_write_json(run_dir / "state.json", state)  # the commit
    except BaseException:
        for staged in pending.values():
            with contextlib.suppress(OSError):
                os.unlink(run_dir / staged)
        raise
    _promote(run_dir, pending)
    return state


def initial_state(class_names: list[str] | None = None) -> dict:
    """The state of a run no epoch of which has finished (what :func:`commit_epoch` builds on)."""
    return {"epoch": 0, "best": None, "history": [], "class_names": class_names}


def write_or_stop(run_dir, write: Callable[[], object], epoch: int = 0):
    """Run a write into the run folder ``run_dir`` whose last committed epoch is ``epoch``; a full disk
    (or any OS error) becomes a :class:`RunError` that names the folder and says how to go on. The
    writers leave no partial file."""
    try:
        return write()
    except OSError as e:
        kept = f"epoch {epoch} and its files are kept" if epoch else "no epoch had finished"
        raise RunError(
            f"could not write to the run folder '{run_dir}': {e.strerror or e} ({kept}); free space "
            "(or fix the folder) and continue with --resume"
        ) from None


def _promote(run_dir: Path, pending: dict) -> list[str]:
    done = []
    for name, staged in pending.items():
        if (run_dir / staged).exists():
            os.replace(run_dir / staged, run_dir / name)
            done.append(name)
    return done


def recover_run_folder(run_dir, state: dict | None) -> list[str]:
    """Finish or undo an epoch's commit that a killed process left half done, and remove the temporary
    files of interrupted writes; returns what was done, for the log. Call it holding the run's lock."""
    run_dir = Path(run_dir)
    pending = (state or {}).get("pending") or {}
    actions = [f"finished the commit of {name}" for name in _promote(run_dir, pending)]
    for p in sorted(run_dir.iterdir()):
        if p.is_file() and (_STAGED.match(p.name) or _PARTIAL.match(p.name)):
            p.unlink()
            actions.append(f"removed {p.name}, left by an interrupted write")
    return actions


# ------------------------------------------------------------------------------------------------
# Run folders: is there room for a new run?
# ------------------------------------------------------------------------------------------------


def holds_a_run(run_dir: Path, name_the_writer: bool = True) -> bool:
    """Anything in the folder but hidden files (the lock, what an interrupted write left) and, in a
    multi-worker run, other workers' sub-folders. Another command writing it is named."""
    if not run_dir.exists():
        return False
    if not any(not p.name.startswith((".", "worker")) for p in run_dir.iterdir()):
        return False
    lock = WriteLock.for_run(run_dir)
    if name_the_writer and lock.lock_file.exists():  # (no lock file: no writer, and none is made here)
        lock.acquire().release()  # LockedError, naming the writer, while one runs
    return True


def new_run_problem(run_dir: Path, overwrite: bool) -> str | None:
    """Why a new run cannot start in ``run_dir`` (None when it can): it holds a run (unless
    ``overwrite``), or files that are not a kerascnn run (never deleted, even with ``overwrite``)."""
    if not holds_a_run(run_dir):
        return None
    if not (run_dir / "config.json").exists():
        files = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
        more = f" and {len(files) - 5} more" if len(files) > 5 else ""
        return (
            f"'{run_dir}' holds files that are not a kerascnn run ({', '.join(files[:5])}{more}); give "
            "--output a new or empty folder"
        )
    if overwrite:
        return None
    return (
        f"'{run_dir}' already holds a run; pass --resume to continue it, --overwrite to start it again in "
        "place (deleting it), or --output for a new run folder"
    )


def clear_run_folder(run_dir: Path, lock: WriteLock) -> None:
    """``--overwrite``: delete the earlier run in ``run_dir`` (a kerascnn run: it has a config.json),
    under its write ``lock``, which stays."""
    if not (run_dir / "config.json").exists():
        return
    for p in run_dir.iterdir():
        if p != lock.lock_file:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


@dataclass
class Run:
    """A model file and what its run folder says about it (nothing, for a model made elsewhere)."""

    model_file: Path
    folder: Path | None = None  # the run folder, when config.json sits beside the model file
    config: dict = field(default_factory=dict)  # config.json's "train" section
    class_names: list[str] | None = None  # state.json's, in the model's output order
    preprocessing: object = None  # kerascnn.graph.Preprocessing of the loaded model, if it has any
    state: dict = field(default_factory=dict)  # state.json's (epochs done, the best epoch and by what)

    @classmethod
    def open(cls, path) -> Run:
        """A run folder (its best model) or a model file, with the run folder's config when it has one."""
        model_file = resolve_model_file(path)
        folder = model_file.parent if (model_file.parent / "config.json").exists() else None
        if folder is None:
            return cls(model_file)
        state = read_state(folder) or {}
        return cls(model_file, folder, read_train_config(folder), state.get("class_names"), state=state)

    def last_epoch_file(self) -> Path | None:
        """model_last.keras, when this is a run folder's model_best.keras and that is another epoch than
        the last (what ``evaluate`` scores beside it: best against last)."""
        best, last = self.state.get("best_epoch"), self.state.get("epoch")
        if self.folder is None or self.model_file.name != MODEL_FILES[0] or best in (None, last):
            return None
        path = self.folder / MODEL_FILES[1]
        return path if path.is_file() else None

    def best_note(self) -> str:
        """Which epoch model_best.keras is, and by what, against the last."""
        return (
            f"model_best.keras is epoch {self.state.get('best_epoch')} by "
            f"{self.state.get('best_by', 'val_accuracy')}, model_last.keras epoch {self.state.get('epoch')}"
        )

    @property
    def data(self) -> str | None:
        return self.config.get("data")

    @property
    def val_split(self) -> float:
        return self.config.get("val_split", 0.1)

    @property
    def seed(self) -> int:
        return self.config.get("seed", 0)

    def normalization(self, mean=None, std=None) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) in pixel units: the user's when given, else the run's, else none (0 and 1) for a
        model that normalizes its input itself (Rescaling/Normalization layers, see ``load_model``),
        else 127.5."""
        raw = self.preprocessing is not None
        mean = mean if mean is not None else self.config.get("mean", (0.0,) if raw else DEFAULT_MEAN)
        std = std if std is not None else self.config.get("std", (1.0,) if raw else DEFAULT_STD)
        return tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def load_model(self, model=None):
        """The model, flattened; notes the normalization layers at its input in ``preprocessing``.
        ``model``, when given (an in-memory model standing for this run's file), is flattened instead
        of loading the file."""
        from .graph import flatten, input_preprocessing

        if model is None:
            model = load_keras_model(self.model_file)
        else:
            model = flatten(model, where=str(self.model_file))
        self.preprocessing = input_preprocessing(model)
        return model
