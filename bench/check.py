"""Know your data (issue 44, item 2): ``kerascnn check`` on Fashion-MNIST, timed, and its label issues
scored against labels flipped on purpose.

* ``full``: ``check fashion_mnist`` (70,000 images, train and test): exact and near-duplicate groups,
  leaks and label conflicts found, label issues flagged, and the wall time per 1,000 images, per stage;
* ``flipped``: a stratified subset of the training split (``--subset``, default 5,000) written as PNG
  class folders, ``--flip`` (5%) of them filed under another class chosen at random, then
  ``check`` on the folder: how many of the flipped images rank in the lowest ``--flip`` share of label
  quality (precision = recall there, as that share holds as many images as were flipped), and the
  precision and recall of cleanlab's own flagged set;
* ``photos`` (optional, ``--photos DIR``): ``check`` on a folder of photos, e.g. the 501 tuxpaint photos
  bench/photos.py builds (with its MobileNet v1 file in ``KERAS_HOME``).

    .venv/bin/python bench/check.py --runs full,flipped --json /tmp/check-bench.json
    KERAS_HOME=/tmp/pb/keras_home .venv/bin/python bench/check.py --runs photos --photos /tmp/pb/photos

Not a test: ``full`` takes a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERASCNN_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kerascnn import check  # noqa: E402
from kerascnn import data as kdata  # noqa: E402
from kerascnn.check_config import CheckConfig  # noqa: E402


def _say(line: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {line}", flush=True)


def run_full(args) -> dict:
    start = time.perf_counter()
    warning = check.quick_check("fashion_mnist")
    quick = time.perf_counter() - start
    report = check.run_check("fashion_mnist", args.out / "full", CheckConfig(seed=args.seed), say=_say)
    s = report.summary()
    print(report.table(8))
    return {
        "images": report.images,
        "seconds": round(report.seconds, 1),
        "seconds_per_1000": round(1000 * report.seconds / report.images, 2),
        "quick_check_seconds": round(quick, 2),
        "quick_check": warning,
        **{k: s[k] for k in ("exact_duplicate_groups", "exact_duplicate_copies", "near_duplicate_groups",
                             "duplicate_copies", "label_conflicts", "leaks", "label_issues")},
        "probe_accuracy": report.labels["probe_accuracy"],
        "embedding": report.embedding,
    }  # fmt: skip


def _write_subset(root: Path, n: int, flip: float, seed: int) -> tuple[set[str], list[str]]:
    """n training images of Fashion-MNIST (stratified) as PNG class folders, ``flip`` of them filed
    under another class at random: the flipped files' names."""
    from PIL import Image

    images, labels = kdata.builtin_splits("fashion_mnist")["train"]
    classes = [c.replace("/", "-") for c in kdata.FASHION_MNIST_CLASSES]
    rng = np.random.default_rng(seed)
    per = n // len(classes)
    picks = np.concatenate([rng.choice(np.flatnonzero(labels == c), per, replace=False) for c in range(10)])
    flipped_at = set(rng.choice(len(picks), int(round(flip * len(picks))), replace=False).tolist())
    flipped = set()
    for k, i in enumerate(picks):
        label = int(labels[i])
        if k in flipped_at:
            label = int(rng.choice([c for c in range(10) if c != label]))
            flipped.add(f"{i}.png")
        (root / classes[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i][..., 0]).save(root / classes[label] / f"{i}.png")
    return flipped, classes


def run_flipped(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "fashion_subset"
        flipped, _ = _write_subset(root, args.subset, args.flip, args.seed)
        report = check.run_check(str(root), args.out / "flipped", CheckConfig(seed=args.seed), say=_say)
        names = [Path(i).name for i in report.items.ids]
        order = np.argsort(report.quality, kind="stable")
        top = {names[i] for i in order[: len(flipped)]}
        found = {Path(x["id"]).name for x in report.labels["issues"]}
        hit_top, hit_found = len(top & flipped), len(found & flipped)
        print(report.table(8))
        return {
            "images": report.images,
            "flipped": len(flipped),
            "top_share_hits": hit_top,
            "top_share_precision_recall": round(hit_top / len(flipped), 3),
            "flagged": len(found),
            "flagged_precision": round(hit_found / max(1, len(found)), 3),
            "flagged_recall": round(hit_found / len(flipped), 3),
            "probe_accuracy": report.labels["probe_accuracy"],
            "seconds": round(report.seconds, 1),
            "embedding": report.embedding,
        }


def run_photos(args) -> dict:
    report = check.run_check(str(args.photos), args.out / "photos", CheckConfig(seed=args.seed), say=_say)
    print(report.table(12))
    s = report.summary()
    mirrors = [g for g in report.duplicates if any("_mirror" in m["id"] for m in g["members"])]
    return {
        "images": report.images,
        "seconds": round(report.seconds, 1),
        "near_duplicate_groups": s["near_duplicate_groups"],
        "groups_with_a_mirror_file": len(mirrors),
        "bad_files": s["bad_files"],
        "label_issues": s["label_issues"],
        "probe_accuracy": report.labels.get("probe_accuracy"),
        "embedding": report.embedding,
    }


RUNS = {"full": run_full, "flipped": run_flipped, "photos": run_photos}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="full,flipped", help=f"comma-separated: {', '.join(RUNS)}")
    parser.add_argument("--subset", type=int, default=5000, help="images of the flipped-labels run")
    parser.add_argument("--flip", type=float, default=0.05, help="share of the subset's labels flipped")
    parser.add_argument("--photos", type=Path, default=None, help="a photo folder for the photos run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "check-bench")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    from kerascnn import quiet

    quiet.quiet_python_libraries()
    quiet.import_tensorflow()
    results = {}
    for name in args.runs.split(","):
        print(f"== {name}", flush=True)
        results[name] = RUNS[name](args)
        print(json.dumps(results[name], indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
