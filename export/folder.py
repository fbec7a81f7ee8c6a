"""The export folder's bookkeeping: ``.kerascnn-export.json``, the record of the files ``kerascnn export``
wrote into it (each one's sha256 and bytes, the model it was made from, when), as pip's RECORD lists what
an install wrote and git refuses to overwrite an untracked file.

With it, an export into a folder that holds other files:

- replaces a file of its own (recorded, sha256 unchanged) as before, atomically;
- stops before it writes anything when it would replace a file it did not write (not recorded, or
  changed since: a user's own ``labels.txt`` or ``model.json``), naming the files, unless ``--force``;
- keeps what an earlier export of the same model wrote and this one does not make (``export --tflite``
  then ``export --quantize int8`` into one folder: both stay, both current);
- removes, once its own files are written, what an earlier export of another model wrote and this one
  does not replace (a retrained model's folder would otherwise hold the old model's ``.onnx``), unless
  ``--keep-stale``; a file changed since it was written is left in place and named as stale;
- never touches a file the record does not list (``notes.txt``).

While an export runs the record lists the files it may write as ``pending``; an export that stops midway
leaves them so, and the next export treats them as its own. A folder exported before the record existed
is read from its ``model.json`` (kerascnn's sidecar, which lists the files): those files, ``labels.txt``
and the int8 reports count as an earlier export's of an unknown model, replaced without ``--force`` and
never removed. ``validate`` reads the record to name the
files of a folder that are not the recorded export's model (:func:`stale_files`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from kerascnn.errors import KerascnnError
from kerascnn.runs import file_digest

from .formats import KIND_BY_SUFFIX

RECORD = ".kerascnn-export.json"
VERSION = 1
ABOUT = (
    "The files kerascnn export wrote into this folder, with their sha256. A later export replaces or "
    "removes only these, and only while their sha256 is unchanged; validate names the files of another "
    "model. Delete this file and kerascnn treats every file here as yours."
)


class RecordError(KerascnnError, ValueError):
    """The folder's record cannot be read; the message names it."""


def sha256_file(path) -> str:
    return file_digest(path)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def model_identity(model_file, model_name: str, weights: str = "", run_dir=None) -> dict:
    """What the record says a file was made from: the model file (path and sha256), its weights'
    fingerprint (equal for the same model saved twice) and the run folder."""
    return {
        "model": model_name,
        "path": str(Path(model_file).resolve()),
        "sha256": sha256_file(model_file),
        "weights": weights,
        "run": str(Path(run_dir).resolve()) if run_dir is not None else None,
    }


def same_model(a: dict, b: dict) -> bool:
    """The same weights (fingerprint) or the same model file (sha256)."""
    return bool(a.get("weights") and a.get("weights") == b.get("weights")) or bool(
        a.get("sha256") and a.get("sha256") == b.get("sha256")
    )


def is_source(path: Path, source: dict | None) -> bool:
    """``path`` is the model file ``source`` describes (a user's model kept in the export folder)."""
    return (
        bool(source)
        and str(path.resolve()) == source.get("path")
        and sha256_file(path) == source.get("sha256")
    )


def describe(source: dict | None) -> str:
    if not source:
        return "an unknown model"
    model, path, sha = source.get("model", "?"), source.get("path", "?"), source.get("sha256") or "?"
    return f"{model} from {path} (sha256 {sha[:12]})"


@dataclass
class Leftovers:
    """What an export found in its folder besides its own files, once they were written."""

    current: list[str] = field(default_factory=list)  # an earlier export's of the same model: kept
    removed: list[str] = field(default_factory=list)  # another model's export's, unchanged: removed
    kept: list[str] = field(default_factory=list)  # the same, kept (--keep-stale)
    changed: list[str] = field(default_factory=list)  # an earlier export's, changed since: left in place
    foreign: list[str] = field(default_factory=list)  # model files no recorded export wrote: left alone

    def lines(self) -> list[str]:
        out = []
        if self.current:
            out.append(f"  kept {', '.join(self.current)}: an earlier export of this same model wrote them")
        if self.removed:
            out.append(
                f"  removed {', '.join(self.removed)}: stale, written by an earlier export of another model "
                "into this folder (--keep-stale keeps them)"
            )
        if self.kept:
            out.append(
                f"  kept (--keep-stale) {', '.join(self.kept)}: stale, from an earlier export of another "
                "model; validate names them"
            )
        if self.changed:
            out.append(
                f"  stale, left in place: {', '.join(self.changed)}: written by an earlier export and "
                "modified since, so not removed; delete them if they are not yours"
            )
        if self.foreign:
            out.append(
                f"  left alone: {', '.join(self.foreign)}: not written by kerascnn export (not in {RECORD}); "
                "validate calls them stale"
            )
        return out


class ExportRecord:
    """The record of one folder (empty when it has none)."""

    def __init__(self, folder, data: dict | None = None):
        self.folder = Path(folder)
        self.data = data or {}
        self._start: dict = {}
        self._planned: list[str] = []
        self._before: dict[str, str] = {}

    @property
    def path(self) -> Path:
        return self.folder / RECORD

    @property
    def exists(self) -> bool:
        return bool(self.data)

    @property
    def files(self) -> dict[str, dict]:
        return self.data.get("files", {})

    @property
    def pending(self) -> set[str]:
        return set(self.data.get("pending", ()))

    @property
    def source(self) -> dict:
        return self.data.get("export", {}).get("source") or {}

    @classmethod
    def read(cls, folder) -> ExportRecord:
        path = Path(folder) / RECORD
        if not path.exists():
            return cls(folder, _legacy_record(Path(folder)))
        try:
            data = json.loads(path.read_text())
            files = data["files"]
            if not isinstance(files, dict) or not all(
                isinstance(e, dict) and isinstance(e.get("sha256"), str) for e in files.values()
            ):
                raise ValueError("'files' is not a table of files with their sha256")
            if not isinstance(data.get("pending", []), list):
                raise ValueError("'pending' is not a list")
        except (OSError, ValueError, KeyError, TypeError) as e:
            why = f"{type(e).__name__}: {e}"
            raise RecordError(f"{path}: not an export record kerascnn can read ({why})") from None
        return cls(folder, data)

    def ours(self, name: str, pending: set[str] | None = None) -> bool:
        """Written by a kerascnn export and unchanged since (or listed by an export that did not finish)."""
        path = self.folder / name
        if not path.is_file():
            return False
        if name in (self.pending if pending is None else pending):
            return True
        entry = self.files.get(name)
        return entry is not None and sha256_file(path) == entry["sha256"]

    def conflicts(self, planned) -> list[str]:
        """The files of ``planned`` that exist and are not the record's own."""
        return [n for n in dict.fromkeys(planned) if (self.folder / n).exists() and not self.ours(n)]

    def conflict_message(self, conflicts: list[str], model_file=None) -> str:
        why = []
        for name in conflicts:
            entry = self.files.get(name)
            reason = "not written by kerascnn export"
            if entry:
                reason = f"modified since the export of {entry.get('time', '?')} wrote it"
            if model_file is not None and (self.folder / name).resolve() == Path(model_file).resolve():
                reason += "; it is the model being exported"
            why.append(f"{name} ({reason})")
        note = f" (the folder has no {RECORD}, the record of what kerascnn export wrote)"
        note = "" if self.exists else note
        return (
            f"--out {self.folder}: the export would replace {len(conflicts)} file(s) not as kerascnn export "
            f"wrote them{note}: "
            f"{', '.join(why)}. Nothing was written: move them, give another --out, or pass --force to "
            "replace them"
        )

    def begin(self, planned, source: dict, version: str = "") -> None:
        """Before the first write: the files it may write are ``pending`` (an export that stops midway
        leaves them so, and the next export knows them as its own)."""
        self._start = json.loads(json.dumps(self.data))
        self._planned = list(dict.fromkeys(planned))
        self._before = {n: sha256_file(self.folder / n) for n in self._planned if (self.folder / n).is_file()}
        self.data = {
            "about": ABOUT,
            "version": VERSION,
            "export": {"source": source, "time": now(), "kerascnn": version},
            "pending": sorted(set(self._planned) | self.pending),
            "files": dict(self.files),
        }
        self._save()

    def abandon(self) -> None:
        """The export wrote nothing: the record as it was."""
        self.data = self._start
        if self.data:
            self._save()
        else:
            self.path.unlink(missing_ok=True)

    def finish(self, written, keep_stale: bool = False) -> Leftovers:
        """After the last write: record ``written`` (and any planned file whose bytes changed), then
        remove (or with ``keep_stale`` keep) what an earlier export left that this one did not write."""
        export = self.data["export"]
        was_pending = set(self._start.get("pending", ()))
        prior = self._start.get("export", {})
        old = dict(self.files)
        made = set(written) | {
            n
            for n in self._planned
            if (self.folder / n).is_file() and sha256_file(self.folder / n) != self._before.get(n)
        }
        files: dict[str, dict] = {}
        for name in sorted(made):
            if (self.folder / name).is_file():
                files[name] = self._entry(name, export)
        left = Leftovers()
        for name in sorted((set(old) | was_pending) - set(files)):
            path = self.folder / name
            if not path.is_file():
                continue  # gone: forgotten
            entry = old.get(name)
            made_from = (entry or {}).get("source") if entry else prior.get("source")
            if entry is not None and entry.get("legacy"):
                continue  # from before the record: of an unknown model, never removed (nor recorded)
            if not self.ours(name, was_pending):
                files[name] = entry
                left.changed.append(name)
            elif same_model(made_from or {}, export.get("source") or {}):
                files[name] = entry if entry is not None else self._entry(name, prior)
                left.current.append(name)
            elif keep_stale:
                unchanged = entry is not None and sha256_file(path) == entry["sha256"]
                files[name] = entry if unchanged else self._entry(name, prior)
                left.kept.append(name)
            else:
                path.unlink()
                left.removed.append(name)
                if path.parent != self.folder and not any(path.parent.iterdir()):
                    path.parent.rmdir()  # qat/, emptied
        left.foreign = [
            p.name
            for p in sorted(self.folder.iterdir())
            if p.is_file()
            and p.suffix.lower() in KIND_BY_SUFFIX
            and p.name not in files
            and not p.name.startswith(".")
            and not is_source(p, export.get("source"))
        ]
        self.data = {k: v for k, v in self.data.items() if k != "pending"} | {"files": files}
        self._save()
        return left

    def _entry(self, name: str, export: dict) -> dict:
        path = self.folder / name
        return {
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
            "source": export.get("source"),
            "time": export.get("time"),
        }

    def _save(self) -> None:
        from kerascnn.runs import atomic_write_json

        atomic_write_json(self.path, self.data)


def _legacy_record(folder: Path) -> dict:
    """A folder exported before the record existed, read from kerascnn's ``model.json`` (its ``model``
    metadata and ``files`` table): those files, ``labels.txt`` and ``model.json`` itself and the int8
    reports, as an earlier export's (``legacy``: of an unknown model). Empty when there is no such
    model.json."""
    try:
        sidecar = json.loads((folder / "model.json").read_text())
        names = list(sidecar["files"]) + list((sidecar.get("int8_report") or {}).values())
        model = sidecar["model"]["model_name"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    files = {}
    for name in [*names, "labels.txt", "model.json"]:
        if isinstance(name, str) and (folder / name).is_file():
            files[name] = {"sha256": sha256_file(folder / name), "legacy": True, "source": {"model": model}}
    return {"legacy": True, "files": files} if files else {}


def stale_files(folder) -> dict[str, str]:
    """The model files of ``folder`` that are not of its recorded export's model, each with why: from an
    earlier export of another model, or not written by any recorded export. Empty without a record."""
    folder = Path(folder)
    record = ExportRecord.read(folder)
    if not record.exists or record.data.get("legacy"):
        return {}
    current, when = record.source, record.data.get("export", {}).get("time", "?")
    stale = {}
    for path in sorted(folder.iterdir()):
        name = path.name
        if not path.is_file() or path.suffix.lower() not in KIND_BY_SUFFIX or name.startswith("."):
            continue
        entry = record.files.get(name)
        if entry is not None and entry.get("legacy"):
            continue  # from before the record: its model is not known
        if name in record.pending and (entry is None or sha256_file(path) != entry["sha256"]):
            continue  # written by the export that did not finish: the record's model
        if entry is None and is_source(path, current):
            stale[name] = (
                "not an exported file: the model file the folder's export was made from (its copy, "
                "which the export wrote, is validated); not validated: name the file to validate it"
            )
        elif entry is None:
            stale[name] = (
                f"stale: {RECORD} does not list it, so no kerascnn export into this folder wrote it (the "
                f"folder's export of {when} is of {describe(current)}); not validated: remove it, or name "
                "the file to validate it"
            )
        elif not same_model(entry.get("source") or {}, current):
            stale[name] = (
                f"stale: left by an earlier export ({entry.get('time', '?')}) of another model, "
                f"{describe(entry.get('source'))}; the folder's export of {when} is of {describe(current)}; "
                "not validated: remove it, or name the file to validate it"
            )
    return stale
