"""``kerascnn check DATA``: know your data before training (as cleanlab's Datalab, fastdup, Edge Impulse's
data explorer). DATA is anything ``kerascnn train --data`` takes; nothing is written into it.

What it finds, each with counts and examples (a table on the terminal, ``check.json`` with everything,
and ``check.png``, a contact sheet of the worst findings):

* **duplicates**: exact (the same file bytes; the same pixels for a built-in's or TFDS' images) and near
  (a mirrored, re-encoded or resized copy: a perceptual signature, confirmed on thumbnails; with a pretrained
  backbone cached, also embeddings within a cosine threshold: :mod:`kerascnn.check_images`,
  :mod:`kerascnn.check_labels`). Each group is within a class, or a **label conflict** (the same image
  under two labels), or a **leak** (the same image in two splits: a model is scored on what it trained
  on), or both;
* **bad files**: unreadable, truncated, tiny, extreme aspect ratio (:mod:`kerascnn.check_images`);
* **classes**: counts per class and split, the largest/smallest ratio, classes with few images;
* **label issues**: confident learning on out-of-fold probabilities of a linear probe on the embedding
  (:mod:`kerascnn.check_labels`; needs two classes).

:func:`quick_check` is the cheap part ``kerascnn train`` can run first: exact duplicates and leaks from
content hashes only (no decoding).

    >>> from kerascnn.check import run_check
    >>> report = run_check("photos/", out="check")
    >>> print(report.table())
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import data as kdata
from .check_config import FEW_IMAGES, OUT, CheckConfig
from .check_images import Facts, duplicate_groups, file_digest, near_pairs, read_arrays, read_files
from .data.decode import decode_many
from .errors import ConfigError

__all__ = ["CheckConfig", "CheckReport", "Items", "check_data", "list_items", "quick_check", "run_check"]

TFDS_SIDE = 64  # TFDS images are read decoded, at this side (their sizes are not checked)
_SPLIT_ORDER = {"train": 0, "all": 0, "val": 1, "validation": 1, "test": 2}


# ------------------------------------------------------------------------------------------------
# The images DATA names, every split
# ------------------------------------------------------------------------------------------------


@dataclass
class Items:
    """Every image of DATA, all splits: ids (a file's path as listed, or NAME:SPLIT:I), labels (-1:
    none), splits ("all" when DATA has none), the files (folders, file lists) or the decoded images
    (built-ins, TFDS)."""

    name: str
    ids: list[str]
    labels: np.ndarray
    splits: list[str]
    class_names: list[str]
    files: list[Path] | None = None
    images: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def split_counts(self) -> dict[str, int]:
        counts = Counter(self.splits)
        return {s: counts[s] for s in sorted(counts, key=lambda s: (_SPLIT_ORDER.get(s, 3), s))}

    def label_name(self, i: int) -> str | None:
        return self.class_names[self.labels[i]] if self.labels[i] >= 0 else None


def _builtin_items(data: str) -> Items:
    parts = kdata.builtin_splits(data)
    classes = kdata.FASHION_MNIST_CLASSES if data == "fashion_mnist" else kdata.MNIST_CLASSES
    ids, splits = [], []
    for split, (images, _) in parts.items():
        ids += [f"{data}:{split}:{i}" for i in range(len(images))]
        splits += [split] * len(images)
    images = np.concatenate([x for x, _ in parts.values()])
    labels = np.concatenate([y for _, y in parts.values()]).astype(np.int64)
    return Items(data, ids, labels, splits, list(classes), images=images)


def _tfds_items(data: str) -> Items:
    ids, labels, splits, images, classes = [], [], [], [], None
    for split in ("train", "validation", "val", "test"):
        try:
            source = kdata.open_images(data, (TFDS_SIDE, TFDS_SIDE), 3, split)
        except kdata.DataError:
            if split == "train":
                raise
            continue  # a split this dataset does not have
        got, _, _ = source.read(range(len(source.ids)))
        ids += source.ids
        labels += list(source.labels)
        splits += ["val" if split == "validation" else split] * len(source.ids)
        images.append(got)
        classes = source.class_names
    note = f"TFDS images are read decoded at {TFDS_SIDE}x{TFDS_SIDE}: their own sizes are not checked"
    return Items(data, ids, np.asarray(labels, np.int64), splits, classes, images=np.concatenate(images),
                 notes=[note])  # fmt: skip


def _folder_split_items(data: str, root: Path) -> Items:
    listed, notes = {}, []
    for split in kdata.SPLITS:
        if (root / split).is_dir():
            try:
                listed[split] = kdata.list_data(data, split)
            except kdata.DataError as e:
                notes.append(f"{root / split}: {e}")
    if not listed:
        raise kdata.DataError(f"--data '{data}': no image files in its train/val/test folders ({notes[0]})")
    names = sorted({c for _, _, classes in listed.values() for c in classes})
    files, labels, splits = [], [], []
    for split, (found, labs, classes) in listed.items():
        files += found
        labels += [names.index(classes[lab]) for lab in labs]
        splits += [split] * len(found)
        if classes != names:
            notes.append(
                f"{root / split} lacks the class folder(s) {', '.join(sorted(set(names) - set(classes)))}"
            )
    return Items(root.name, [str(f) for f in files], np.asarray(labels, np.int64), splits, names, files,
                 notes=notes)  # fmt: skip


def list_items(data: str) -> Items:
    """Every image DATA names, nothing decoded (built-ins and TFDS are arrays already). Raises
    :class:`kerascnn.data.DataError` for DATA that names no images (an empty folder, a bad file list)."""
    data = str(data)
    if data in kdata.BUILTINS:
        return _builtin_items(data)
    if kdata.is_tfds(data):
        return _tfds_items(data)
    if kdata.is_file_list(data):
        rows = kdata.read_file_list(data)
        names = rows.class_names
        labels = np.asarray([names.index(label) for label in rows.labels], np.int64)
        splits = [s or "all" for s in rows.splits]
        notes = [f"{len(rows.repeated)} repeated row(s) read once: {'; '.join(rows.repeated[:3])}"] * bool(
            rows.repeated
        )
        ids = [str(p) for p in rows.paths]
        return Items(Path(data).stem, ids, labels, splits, names, list(rows.paths), notes=notes)
    root = Path(data)
    if root.is_dir() and (root / "train").is_dir():
        return _folder_split_items(data, root)
    files, labels, classes = kdata.list_data(data)
    return Items(root.name, [str(f) for f in files], np.asarray(labels, np.int64), ["all"] * len(files),
                 classes, files)  # fmt: skip


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------


@dataclass
class CheckReport:
    """What :func:`check_data` found. ``as_json()`` is check.json; ``table()`` the terminal's text."""

    data: str
    images: int
    splits: dict[str, int]
    class_names: list[str]
    embedding: str
    duplicates: list[dict]
    bad_files: list[dict]
    classes: dict
    labels: dict
    seconds: float
    settings: dict
    notes: list[str]
    items: Items | None = None  # (not in check.json) what was checked, for the contact sheet
    quality: np.ndarray | None = None  # (not in check.json) per image, the label quality; NaN: not judged

    def summary(self) -> dict:
        dups = self.duplicates
        kinds = Counter(k for bad in self.bad_files for k in bad["kinds"])
        return {
            "images": self.images,
            "exact_duplicate_groups": sum(g["kind"] == "exact" for g in dups),
            "exact_duplicate_copies": sum(g["exact_copies"] for g in dups),
            "near_duplicate_groups": sum(g["kind"] == "near" for g in dups),
            "duplicate_copies": sum(len(g["members"]) - 1 for g in dups),
            "label_conflicts": sum(g["conflict"] for g in dups),
            "leaks": sum(g["leak"] for g in dups),
            "bad_files": len(self.bad_files),
            **{k: kinds.get(k, 0) for k in ("unreadable", "truncated", "tiny", "extreme_aspect")},
            "classes": len(self.class_names),
            "imbalance": self.classes.get("imbalance"),
            "few_image_classes": len(self.classes.get("few", [])),
            "label_issues": self.labels.get("count"),
        }

    def as_json(self) -> dict:
        return {
            "data": self.data,
            "summary": self.summary(),
            "splits": self.splits,
            "embedding": self.embedding,
            "duplicates": self.duplicates,
            "bad_files": self.bad_files,
            "classes": self.classes,
            "label_issues": self.labels,
            "notes": self.notes,
            "settings": self.settings,
            "seconds": round(self.seconds, 2),
        }

    def table(self, show: int | None = None) -> str:
        from .check_text import report_table

        return report_table(self, self.settings.get("show", 5) if show is None else show)


# ------------------------------------------------------------------------------------------------
# The checks
# ------------------------------------------------------------------------------------------------


def _problems(facts: Facts, cfg: CheckConfig) -> list[list[tuple[str, str]]]:
    """Per image: [(kind, reason)]: unreadable/truncated from reading it, tiny and extreme_aspect from
    its size."""
    out = []
    for i, found in enumerate(facts.problem):
        kinds = [found] if found else []
        w, h = int(facts.width[i]), int(facts.height[i])
        if w and h:
            if min(w, h) < cfg.min_side:
                kinds.append(("tiny", f"{w}x{h} px: a side under {cfg.min_side} px"))
            if max(w, h) > cfg.max_aspect * min(w, h):
                kinds.append(("extreme_aspect", f"{w}x{h} px: {max(w, h) / min(w, h):.1f}:1, over "
                              f"{cfg.max_aspect:g}:1"))  # fmt: skip
        out.append(kinds)
    return out


def _member(items: Items, i: int, **extra) -> dict:
    return {"id": items.ids[i], "label": items.label_name(i), "split": items.splits[i], **extra}


def _duplicate_groups(items: Items, facts: Facts, extra_pairs=()) -> list[dict]:
    """The duplicate groups (:func:`kerascnn.check_images.duplicate_groups`): exact (one content hash)
    and near (thumbnails, and ``extra_pairs`` (i, j, cosine) of a backbone's embedding), each within a
    class, a label conflict or a leak; conflicts and leaks first, then exact, then the largest."""
    pairs = [(a, b, "thumbnails", m, c) for a, b, m, c in zip(*near_pairs(facts), strict=True)]
    pairs += [(a, b, "embedding", False, c) for a, b, c in extra_pairs]
    out = []
    for group, found in duplicate_groups(facts, pairs):
        digests = Counter(facts.digest[i] for i in group)
        labels = {items.labels[i] for i in group if items.labels[i] >= 0}
        out.append({
            "kind": "exact" if len(digests) == 1 and None not in digests else "near",
            "conflict": len(labels) > 1,
            "leak": len({items.splits[i] for i in group}) > 1,
            "exact_copies": sum(n - 1 for d, n in digests.items() if d is not None),
            "mirrored": any(m for _, m, _ in found),
            "method": sorted({h for h, _, _ in found}),
            "similarity": round(min(s for _, _, s in found), 4),
            "members": [_member(items, i) for i in group],
        })  # fmt: skip
    out.sort(key=lambda g: (not (g["conflict"] or g["leak"]), g["kind"] != "exact", -len(g["members"])))
    return out


def _class_counts(items: Items, facts: Facts) -> dict:
    """Per class: readable images per split; the imbalance (largest/smallest class) in the training
    split ("train", else all); the classes with fewer than FEW_IMAGES there."""
    if not items.class_names:
        return {"per_class": [], "imbalance": None, "few": [], "note": "unlabeled images: no classes"}
    splits = list(items.split_counts())
    train = "train" if "train" in splits else "all"
    table = []
    for c, name in enumerate(items.class_names):
        mine = (items.labels == c) & facts.decoded
        per = {s: int((mine & (np.asarray(items.splits) == s)).sum()) for s in splits}
        table.append({"name": name, "count": int(mine.sum()), "splits": per})
    counts = [row["splits"].get(train, 0) for row in table]
    largest, smallest = max(counts), min(counts)
    few = [row["name"] for row, n in zip(table, counts, strict=True) if n < FEW_IMAGES]
    return {
        "per_class": table,
        "split": train,
        "largest": {"name": table[counts.index(largest)]["name"], "count": largest},
        "smallest": {"name": table[counts.index(smallest)]["name"], "count": smallest},
        "imbalance": round(largest / smallest, 2) if smallest else None,
        "few": few,
        "few_threshold": FEW_IMAGES,
    }


def _is_colour(facts: Facts) -> bool:
    """Most decoded images have colour (their 8x8 thumbnail's channels differ by more than 8 levels)."""
    ok = facts.colour[facts.decoded].astype(np.int16)
    if not len(ok):
        return False
    spread = (ok.max(-1) - ok.min(-1)).reshape(len(ok), -1).max(1)
    return bool((spread > 8).mean() >= 0.5)


def _reader(items: Items):
    """read(positions, side) -> uint8 RGB (n, side, side, 3), for the backbone."""
    if items.images is not None:
        return lambda positions, side: kdata.adapt_images(items.images[positions], (side, side), 3)

    def read(positions, side):
        decoded = decode_many([items.files[p] for p in positions], (side, side), 3)
        return np.stack([a if a is not None else np.zeros((side, side, 3), np.uint8) for a, _ in decoded])

    return read


def _embedding(items: Items, facts: Facts, cfg: CheckConfig, say):
    """The embedding for the probe (and for near-duplicates when it is a backbone's)."""
    from .check_labels import (
        BACKBONE_MIN_SIDE,
        EMBED_SIDE,
        backbone_embedding,
        cached_backbone,
        pixel_embedding,
    )
    from .models.pretrained import WeightsError, fetch_commands, weights_file

    fetch = fetch_commands(weights_file("mobilenet_v2", 1.0, EMBED_SIDE))

    colour = _is_colour(facts)
    ok = np.flatnonzero(facts.decoded)
    side = int(np.median(np.minimum(facts.width[ok], facts.height[ok]))) if len(ok) else 0
    why = "--embedding pixels"
    if cfg.embedding != "pixels":
        wanted = cached_backbone()
        if cfg.embedding == "backbone" or (colour and side > BACKBONE_MIN_SIDE and wanted is not None):
            if wanted is None:
                raise ConfigError(
                    "--embedding backbone: no MobileNet ImageNet weights (without the classifier) in the "
                    f"Keras cache; {fetch}"
                )
            try:
                if say:
                    say(f"check: embedding {len(ok):,d} images with {wanted.describe()}")
                return backbone_embedding(wanted, _reader(items), len(items.ids), ok, say)
            except WeightsError as e:
                if cfg.embedding == "backbone":
                    raise
                why = f"the cached backbone could not be loaded: {e}"
        elif not colour:
            why = "grey images: a pretrained backbone is used for colour photos"
        elif side <= BACKBONE_MIN_SIDE:
            why = f"images of {side} px: a pretrained backbone is used above {BACKBONE_MIN_SIDE} px"
        else:
            why = f"no MobileNet ImageNet weights in the Keras cache: {fetch}"
    return pixel_embedding(facts, colour, why)


def _label_part(items: Items, facts: Facts, embedding, cfg: CheckConfig, say) -> tuple[dict, np.ndarray]:
    """Confident learning on the decoded labeled images: (the report's label_issues, quality per image)."""
    quality = np.full(len(items.ids), np.nan)
    judged = np.flatnonzero(facts.decoded & (items.labels >= 0))
    present = sorted({int(c) for c in items.labels[judged]})
    skipped = None
    if not cfg.label_issues:
        skipped = "skipped (--no-label-issues)"
    elif not items.class_names:
        skipped = "the images have no labels (a folder without class folders)"
    elif len(present) < 2:
        only = ", ".join(items.class_names[c] for c in present) or "none readable"
        skipped = f"label issues need at least 2 classes; {items.name} has {len(present)} ({only})"
    if skipped:
        return {"count": None, "skipped": skipped, "issues": []}, quality
    import cleanlab

    from .check_labels import label_issues

    if say:
        say(f"check: label issues: a linear probe on {len(judged):,d} images, {cfg.folds} folds")
    found = label_issues(embedding.vectors[judged], items.labels[judged], cfg.folds, cfg.seed, say)
    probs, classes = found["probs"], found["classes"]
    quality[judged] = found["quality"]
    counts = np.bincount(items.labels[judged], minlength=len(items.class_names))
    issues = []
    for k in found["issues"]:
        i, best = int(judged[k]), int(probs[k].argmax())
        given = int(np.searchsorted(classes, items.labels[i]))
        issues.append({
            **_member(items, i),
            "suggested": items.class_names[classes[best]],
            "quality": round(float(found["quality"][k]), 4),
            "p_given": round(float(probs[k, given]), 4),
            "p_suggested": round(float(probs[k, best]), 4),
        })  # fmt: skip
    few = [items.class_names[c] for c in present if counts[c] < found["folds"]]
    return {
        "count": len(issues),
        "skipped": None,
        "images": len(judged),
        "share": round(len(issues) / len(judged), 4),
        "method": (
            f"confident learning (cleanlab {cleanlab.__version__}: find_label_issues pruned by noise rate, "
            "ranked by self-confidence) on out-of-fold probabilities of a logistic-regression probe"
        ),
        "embedding": embedding.text,
        "folds": found["folds"],
        "probe_accuracy": round(found["accuracy"], 4),
        "note": (f"class(es) with fewer images than folds, weakly judged: {', '.join(few)}" if few else None),
        "issues": issues,
    }, quality


def check_data(data: str, config: CheckConfig | None = None, say=None) -> CheckReport:
    """Check DATA (every split) and return the report; nothing is written (:func:`run_check` writes)."""
    from .check_images import cosine_pairs
    from .check_labels import NEAR_COSINE

    cfg = config or CheckConfig()
    start = time.perf_counter()
    items = list_items(data)
    if say:
        say(f"check: {len(items.ids):,d} images in {data}: hashing and decoding them")

    def progress(done, total):
        if say and done % 10_000 == 0:
            say(f"check: read {done:,d} of {total:,d}")

    facts = (
        read_files(items.files, progress=progress) if items.files is not None else read_arrays(items.images)
    )
    problems = _problems(facts, cfg)
    embedding = _embedding(items, facts, cfg, say)
    extra = ()
    if embedding.unit:
        extra = list(
            zip(*cosine_pairs(embedding.vectors, np.flatnonzero(facts.decoded), NEAR_COSINE), strict=True)
        )
    duplicates = _duplicate_groups(items, facts, extra)
    bad = [
        {**_member(items, i), "kinds": [k for k, _ in found], "reasons": [r for _, r in found],
         "width": int(facts.width[i]), "height": int(facts.height[i])}
        for i, found in enumerate(problems) if found
    ]  # fmt: skip
    labels, quality = _label_part(items, facts, embedding, cfg, say)
    notes = list(items.notes)
    if set(items.splits) == {"all"} and duplicates:
        notes.append(
            "DATA has no train/val/test split: `kerascnn train --val-split` draws one at random, so a "
            "duplicate group may land on both sides of it (a leak); remove the copies first"
        )
    return CheckReport(
        data=str(data), images=len(items.ids), splits=items.split_counts(), class_names=items.class_names,
        embedding=embedding.text, duplicates=duplicates, bad_files=bad, classes=_class_counts(items, facts),
        labels=labels, seconds=time.perf_counter() - start, settings=cfg.as_dict(), notes=notes,
        items=items, quality=quality,
    )  # fmt: skip


def _inside(out: Path, data: str) -> bool:
    root = Path(data)
    if not root.is_dir():
        return False
    out, root = Path(os.path.realpath(out)), Path(os.path.realpath(root))
    return out == root or root in out.parents


def run_check(data: str, out=OUT, config: CheckConfig | None = None, say=None) -> CheckReport:
    """:func:`check_data`, then ``out/check.json`` and ``out/check.png`` (each written to a temporary
    name, then renamed; ``out=None`` writes nothing). ``out`` may not lie inside a DATA folder: check
    never writes into the data (a new folder there would read as a class)."""
    from .runs import atomic_write_json

    if out is not None and _inside(Path(out), str(data)):
        raise ConfigError(
            f"--out {out}: inside the data folder '{data}', where it would read as one more class folder; "
            "choose a folder outside it"
        )
    report = check_data(data, config, say)
    if out is not None:
        from .check_sheet import write_sheet

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "check.json", report.as_json())
        write_sheet(report, out / "check.png")
    return report


# ------------------------------------------------------------------------------------------------
# The cheap check kerascnn train runs first
# ------------------------------------------------------------------------------------------------


def _digests_of_files(files: list[Path]) -> list[str | None]:
    """Content hashes of the files whose size another file shares (a file of a size of its own has no
    copy): most photo sets hash a few files, not all. None for the others and for unreadable files."""
    sizes = []
    for f in files:
        try:
            sizes.append(os.path.getsize(f))
        except OSError:
            sizes.append(-1)
    shared = {s for s, n in Counter(sizes).items() if n > 1 and s > 0}
    out: list[str | None] = [None] * len(files)
    for i, f in enumerate(files):
        if sizes[i] in shared:
            try:
                out[i] = file_digest(f)
            except OSError:
                pass
    return out


def quick_check(data: str) -> str | None:
    """One line warning of exact duplicates in DATA (the same file bytes, or the same pixels for a
    built-in), saying how many cross splits (a leak) or labels (a conflict); None when there are none,
    and for TFDS (whose images would have to be decoded). Cheap: files are hashed only when another file
    has their size, nothing is decoded; Fashion-MNIST's 70,000 images take about a second."""
    if kdata.is_tfds(str(data)):
        return None
    items = list_items(str(data))
    if items.images is not None:
        rows = items.images.reshape(len(items.images), -1)
        digests = [hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest() for row in rows]
    else:
        digests = _digests_of_files(items.files)
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(digests):
        if d is not None:
            groups.setdefault(d, []).append(i)
    found = [g for g in groups.values() if len(g) > 1]
    if not found:
        return None
    copies = sum(len(g) - 1 for g in found)
    leaks = sum(len({items.splits[i] for i in g}) > 1 for g in found)
    conflicts = sum(len({int(items.labels[i]) for i in g}) > 1 for g in found)
    parts = [f"{copies} exact duplicate image(s) in {items.name} ({len(found)} group(s) of identical "
             f"{'files' if items.files is not None else 'images'})"]  # fmt: skip
    if leaks:
        parts.append(f"{leaks} across splits (a leak: the model is scored on images it trained on)")
    if conflicts:
        parts.append(f"{conflicts} under different labels")
    if set(items.splits) == {"all"}:
        parts.append("a validation split drawn at random may put copies on both sides")
    worst = next((g for g in found if len({items.splits[i] for i in g}) > 1), found[0])
    example = f"e.g. {items.ids[worst[0]]} = {items.ids[worst[1]]}"
    return (
        f"warning: {'; '.join(parts)}; {example}. `kerascnn check {data}` lists them, with near-duplicates, "
        "bad files and likely label errors"
    )
