"""The terminal table of ``kerascnn check`` (:class:`kerascnn.check.CheckReport.table`): a summary, then
duplicates (leaks and conflicts first), bad files, classes and label issues, each with its count and
the first few examples."""

from __future__ import annotations

import os
from pathlib import Path

MAX_CLASS_ROWS = 20  # classes listed in the classes section (the largest and smallest always)


def _n(value, word: str) -> str:
    return f"{value:,d} {word}{'' if value == 1 else 's'}"


def _prefix(data: str) -> str:
    """What the table leaves off the front of file paths: DATA's folder (or a file list's), with a
    slash; '' for a built-in or a folder given as '.'."""
    path = Path(data)
    folder = path if path.is_dir() else path.parent if path.suffix.lower() in (".csv", ".tsv") else None
    return str(folder) + os.sep if folder is not None and str(folder) != "." else ""


def _short(item_id: str, prefix: str) -> str:
    return item_id[len(prefix) :] if prefix and item_id.startswith(prefix) else item_id


def _who(member: dict, prefix: str) -> str:
    tags = [t for t in (member.get("label"), None if member["split"] == "all" else member["split"]) if t]
    name = _short(member["id"], prefix)
    return f"{name} ({', '.join(tags)})" if tags else name


def _first(total: int, show: int, what: str) -> str:
    return f"{what}: {total:,d}" + (f" (first {show})" if total > show else "")


def _summary(report, s: dict) -> list[str]:
    dups = report.duplicates
    mirrored = sum(g["mirrored"] for g in dups if g["kind"] == "near")
    bad = ", ".join(
        f"{s[k]:,d} {text}" for k, text in (
            ("unreadable", "unreadable"), ("truncated", "truncated"),
            ("tiny", f"tiny (< {report.settings['min_side']} px)"),
            ("extreme_aspect", f"extreme aspect (> {report.settings['max_aspect']:g}:1)"),
        )
    )  # fmt: skip
    rows = [
        ("exact duplicates", f"{_n(s['exact_duplicate_groups'], 'group')}; "
                             f"{_n(s['exact_duplicate_copies'], 'extra copy').replace('copys', 'copies')}"),
        ("near-duplicates", f"{_n(s['near_duplicate_groups'], 'group')}"
                            + (f" ({mirrored:,d} mirrored)" if mirrored else "")),
        ("label conflicts", f"{_n(s['label_conflicts'], 'group')}: one image under two or more labels"),
        ("leaks across splits", f"{_n(s['leaks'], 'group')}: one image in two or more splits"),
        ("bad files", f"{s['bad_files']:,d}: {bad}"),
        ("classes", _classes_line(report)),
        ("label issues", _labels_line(report.labels)),
    ]  # fmt: skip
    return ["summary"] + [f"  {name:<22}{text}" for name, text in rows]


def _classes_line(report) -> str:
    c = report.classes
    if not report.class_names:
        return "none (unlabeled images)"
    if c["largest"]["count"] == c["smallest"]["count"]:
        ratio = f"balanced, {c['largest']['count']:,d} each in {c['split']}"
    elif c["imbalance"] is None:
        ratio = f"a class with no readable image in {c['split']} ({c['smallest']['name']})"
    else:
        ratio = (
            f"largest/smallest {c['imbalance']:g} ({c['largest']['name']} {c['largest']['count']:,d} / "
            f"{c['smallest']['name']} {c['smallest']['count']:,d} in {c['split']})"
        )
    return f"{len(report.class_names)}: {ratio}; {len(c['few'])} under {c['few_threshold']} images"


def _labels_line(labels: dict) -> str:
    if labels.get("skipped"):
        return labels["skipped"]
    return (
        f"{labels['count']:,d} ({labels['share']:.1%} of {labels['images']:,d}); the probe's out-of-fold "
        f"accuracy {labels['probe_accuracy']:.1%}"
    )


def _duplicates(report, show: int, prefix: str) -> list[str]:
    dups = report.duplicates
    lines = [_first(len(dups), show, "duplicates") + ", leaks and label conflicts first"]
    for g in dups[:show]:
        flags = (
            ", ".join(f for f, on in (("leak", g["leak"]), ("conflict", g["conflict"])) if on) or "same class"
        )
        how = f"mirrored, {g['similarity']:.3f}" if g["mirrored"] else f"{g['similarity']:.3f}"
        members = " = ".join(_who(m, prefix) for m in g["members"][:3])
        more = f" and {len(g['members']) - 3} more" if len(g["members"]) > 3 else ""
        detail = "" if g["kind"] == "exact" else f"  [{'; '.join(g['method'])}: {how}]"
        lines.append(f"  {g['kind']:<6}{flags:<16}{members}{more}{detail}")
    return lines


def _bad(report, show: int, prefix: str) -> list[str]:
    lines = [_first(len(report.bad_files), show, "bad files")]
    for b in report.bad_files[:show]:
        lines.append(f"  {'+'.join(b['kinds']):<20} {_short(b['id'], prefix)}: {'; '.join(b['reasons'])}")
    return lines


def _classes(report) -> list[str]:
    c = report.classes
    if not report.class_names:
        return ["classes: none (a folder of unlabeled images)"]
    splits = list(report.splits)
    width = max(12, *(len(r["name"]) for r in c["per_class"][:MAX_CLASS_ROWS]))
    head = (
        f"  {'class':<{width}}"
        + "".join(f"{s:>9}" for s in splits)
        + ("" if splits == ["all"] else f"{'all':>9}")
    )
    lines = [f"classes: {len(report.class_names)} (readable images)", head]
    rows = c["per_class"]
    if len(rows) > MAX_CLASS_ROWS:
        keep = {c["largest"]["name"], c["smallest"]["name"]}
        rows = [r for r in rows if r["name"] in keep] + [r for r in rows if r["name"] not in keep]
    for r in rows[:MAX_CLASS_ROWS]:
        few = "  (few)" if r["name"] in c["few"] else ""
        cells = "".join(f"{r['splits'][s]:>9,d}" for s in splits)
        total = "" if splits == ["all"] else f"{r['count']:>9,d}"
        lines.append(f"  {r['name']:<{width}}{cells}{total}{few}")
    if len(c["per_class"]) > MAX_CLASS_ROWS:
        lines.append(f"  ... and {len(c['per_class']) - MAX_CLASS_ROWS} more (check.json)")
    return lines


def _labels(report, show: int, prefix: str) -> list[str]:
    labels = report.labels
    if labels.get("skipped"):
        return [f"label issues: {labels['skipped']}"]
    lines = [_first(labels["count"], show, "label issues") + ", worst first (quality: p of the given label)"]
    if labels.get("note"):
        lines.append(f"  note: {labels['note']}")
    for issue in labels["issues"][:show]:
        lines.append(
            f"  {issue['quality']:.3f}  {issue['label']} -> {issue['suggested']} "
            f"(p {issue['p_given']:.2f} vs {issue['p_suggested']:.2f})  {_short(issue['id'], prefix)}"
        )
    return lines


def report_table(report, show: int = 5) -> str:
    """The whole report as text; file paths relative to DATA (or to a file list's folder)."""
    prefix = _prefix(report.data)
    s = report.summary()
    splits = ", ".join(f"{k} {v:,d}" for k, v in report.splits.items())
    classes = f", {len(report.class_names)} classes" if report.class_names else ", unlabeled"
    took = f"{report.seconds:.1f} s"
    where = f"; paths below {prefix}" if prefix else ""
    lines = [
        f"kerascnn check {report.data}: {report.images:,d} images ({splits}){classes}, {took}{where}",
        f"embedding: {report.embedding}",
        "",
        *_summary(report, s),
        "",
        *_duplicates(report, show, prefix),
        "",
        *_bad(report, show, prefix),
        "",
        *_classes(report),
        "",
        *_labels(report, show, prefix),
    ]
    for note in report.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)
