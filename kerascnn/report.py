"""The run report: ``RUN/report.html``, one self-contained page about a run folder.

What the run is (the model, the data, the recipe line), how it trained (the curves from ``state.json``),
how it scores (``metrics.json``: the confusion matrix, per-class accuracy), where it fails (the most
confident mistakes of the split ``metrics.json`` was scored on, each with its Grad-CAM and the nearest
training images of the class it was taken for), what it costs (parameters, MACs), and, when they are
there, the export folder's files (``RUN/export/model.json``) and their validation
(``RUN/export/validate.json``, what ``kerascnn validate RUN/export --json`` writes).

The page needs nothing but itself: images are inline PNG data URIs, the CSS is inline, there is no
script and no font or file from elsewhere; it opens from the disk, offline, in any browser. Every
section is drawn from the files the steps left (as every step after training reads the run folder:
ARCHITECTURE.md), so the core never imports the export package; a section whose data is absent is left
out (a note says why when the reason is not obvious), and the page is written atomically.

    >>> from kerascnn.report import write_report
    >>> write_report("runs/r20")          # RUN/report.html, from the run folder alone
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from .errors import KerascnnError

REPORT_FILE = "report.html"  # in the run folder
EXPORT_FOLDER = "export"  # RUN/export: kerascnn export's default --out for a run folder
VALIDATE_FILE = "validate.json"  # RUN/export/validate.json: `kerascnn validate RUN/export --json` there
MAX_MISTAKES = 12  # mistakes shown (Grad-CAM and neighbours are computed for these only)
MAX_SCORED = 2000  # images of the scored split searched for mistakes (a seeded sample beyond it)
MAX_GALLERY = 2000  # training images embedded for the neighbours (a seeded sample beyond it)
NEIGHBOURS = 3  # nearest training images shown per mistake
MAX_CONFUSION_TABLE = 25  # classes up to which the confusion matrix is an HTML table (else an image)
DISPLAY = ("recipe", "curves", "confusion", "per-class", "mistakes", "model", "export", "validate")
BATCH = 256  # images read, scored or embedded at a time
THUMB = 96  # a thumbnail's longer side in pixels, about (small images are enlarged by a whole factor)


class ReportError(KerascnnError, RuntimeError):
    """The run report could not be made; the message names the run folder and the part that failed."""


def report_path(run_dir) -> Path:
    """Where :func:`write_report` writes: ``RUN/report.html``."""
    return Path(run_dir) / REPORT_FILE


def validate_json_path(run_dir) -> Path:
    """The validation table the report shows: ``RUN/export/validate.json``."""
    return Path(run_dir) / EXPORT_FOLDER / VALIDATE_FILE


def run_of_export_folder(path) -> Path | None:
    """The run folder when ``path`` is a run's export folder (``RUN/export``, beside ``RUN/config.json``),
    else None: where ``kerascnn validate`` writes ``validate.json`` and refreshes the report."""
    p = Path(path)
    if p.is_dir() and p.resolve().name == EXPORT_FOLDER and (p.resolve().parent / "config.json").is_file():
        return p.resolve().parent
    return None


@dataclass
class _Facts:
    """What the run folder says, read once."""

    run_dir: Path
    config: dict
    state: dict
    metrics: dict | None
    class_names: list[str]
    notes: list[str] = field(default_factory=list)  # lines for the header (what is missing, and why)
    failed: list[str] = field(default_factory=list)  # the parts that failed unexpectedly (a bug), said


@dataclass
class _Mistakes:
    """The most confident mistakes, ready to draw."""

    split: str  # "test" or "validation"
    scored: int  # images searched
    total: int  # images in the split
    items: list[dict]  # per mistake: image, cam, true, predicted, confidence, where, neighbours
    cam_layer: str | None
    cam_note: str | None
    neighbour_note: str | None


def write_report(run_dir, *, model=None, dataset=None, say=None) -> Path:
    """Write ``RUN/report.html`` (:func:`report_path`) and return its path.

    ``model``: the model of ``RUN/model_best.keras`` already in memory (loaded from the file otherwise).
    ``dataset``: the run's :class:`kerascnn.data.ImageData` as training loaded it (loaded again from
    ``config.json`` otherwise: its data, fractions, validation split and seed). ``say`` gets one line
    (where the page is, how long it took). A section whose data is missing (no finished epoch, the data
    gone, a model without a spatial layer) is left out or says why; a part that fails otherwise (a bug)
    is named in the page and in the line ``say`` gets, and the other parts are still shown. Raises
    :class:`ReportError` when the folder is no run or the page cannot be written."""
    start = time.monotonic()
    run_dir = Path(run_dir)
    facts = _read_run(run_dir)
    loaded = _Loaded(facts, model, dataset)
    built = {  # computed in this order (the model and the data first), shown in DISPLAY's
        "model": _part(facts, "model", lambda: _model_section(facts, loaded)),
        "mistakes": _part(facts, "mistakes", lambda: _mistakes_section(facts, loaded)),
        "recipe": _part(facts, "recipe", lambda: _recipe_section(facts, loaded)),
        "curves": _part(facts, "curves", lambda: _curves_section(facts)),
        "confusion": _part(facts, "confusion matrix", lambda: _confusion_section(facts)),
        "per-class": _part(facts, "per-class accuracy", lambda: _per_class_section(facts)),
        "export": _part(facts, "export table", lambda: _export_section(run_dir)),
        "validate": _part(facts, "validation table", lambda: _validate_section(run_dir)),
    }
    sections = [built[key] for key in DISPLAY]
    page = _page(facts, loaded, [s for s in sections if s])
    path = report_path(run_dir)
    from .runs import atomic_write_text

    try:
        atomic_write_text(path, page)
    except OSError as e:
        raise ReportError(f"{path}: cannot write the run report ({e.strerror or e})") from None
    if say is not None:
        failed = f"; {'; '.join(facts.failed)}" if facts.failed else ""
        say(f"run report: {path} ({time.monotonic() - start:.1f} s){failed}")
    return path


def _part(facts: _Facts, name: str, build) -> str | None:
    """One section's HTML; a KerascnnError (data gone, a model Grad-CAM cannot explain) becomes a note
    in the page; anything else (a bug) too, naming the part and the error, and the line ``say`` gets
    names it: one broken part never costs the others."""
    try:
        return build()
    except KerascnnError as e:
        facts.notes.append(f"{name}: {e}")
        return None
    except Exception as e:  # noqa: BLE001 - a bug in one part: the others are still shown, this one named
        failure = f"the {name} part failed ({type(e).__name__}: {e})"
        facts.notes.append(f"{failure}; the other parts are shown")
        facts.failed.append(failure)
        return None


# ------------------------------------------------------------------------------------------------
# The run folder's files, the model and the data
# ------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: cannot read it for the run report ({e})") from None
    if not isinstance(found, dict):
        raise ReportError(f"{path}: not a JSON object; the run report cannot read it")
    return found


def _read_run(run_dir: Path) -> _Facts:
    from .runs import ModelFileError, RunFileError, read_state, read_train_config

    try:
        config = read_train_config(run_dir)
        state = read_state(run_dir) or {}
    except (RunFileError, ModelFileError) as e:
        raise ReportError(f"no run report: {e}") from None
    metrics = _read_json(run_dir / "metrics.json")
    names = state.get("class_names") or (metrics or {}).get("class_names") or []
    facts = _Facts(run_dir, config, state, metrics, [str(n) for n in names])
    if not state.get("epoch"):
        facts.notes.append("no epoch has finished: there is no model to show yet")
    elif metrics is None:
        facts.notes.append(
            "metrics.json is missing: the run did not reach its end, where it is scored (kerascnn train "
            "--resume finishes it)"
        )
    return facts


class _Loaded:
    """The model (model_best.keras) and the dataset, loaded when a section first asks for them; a
    failure to load is kept and raised again to every section that needs them."""

    def __init__(self, facts: _Facts, model, dataset):
        self.facts, self._model, self._dataset = facts, model, dataset
        self._run = self._error = self._data_error = None
        self.shape = self.analysis = None  # (H, W, C) of the model; kerascnn.analysis.analyze's result

    def model(self):
        if self._error is not None:
            raise self._error
        if self._run is None:
            from .runs import Run, image_input_shape

            try:
                self._run = Run.open(self.facts.run_dir)
                self._model = self._run.load_model(self._model)
                self.shape = image_input_shape(self._model, self._run.model_file)
            except KerascnnError as e:
                self._error = e
                raise
        return self._model

    @property
    def run(self):
        self.model()
        return self._run

    def dataset(self):
        if self._dataset is not None:
            return self._dataset
        if self._data_error is not None:
            raise self._data_error
        from . import data as kdata

        self.model()
        cfg = self.facts.config
        if not cfg.get("data"):
            raise ReportError("config.json names no data")
        try:
            self._dataset = kdata.load_dataset(
                cfg["data"], self.shape[:2], self.shape[2], val_split=cfg.get("val_split", 0.1),
                train_fraction=cfg.get("train_fraction", 1.0), eval_fraction=cfg.get("eval_fraction", 1.0),
                seed=cfg.get("seed", 0), cache="stream",
            )  # fmt: skip
        except (KerascnnError, OSError) as e:
            self._data_error = ReportError(f"the run's data ({cfg['data']}) cannot be loaded: {e}")
            raise self._data_error from None
        return self._dataset


# ------------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------------


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _section(key: str, title: str, body: str, wide: bool = False) -> str:
    cls = ' class="wide"' if wide else ""
    return f'<section id="{key}"{cls}>\n<h2>{_e(title)}</h2>\n{body}\n</section>'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _table(head: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), attrs=None) -> str:
    """A table of already-escaped cells; ``numeric``: the right-aligned columns."""

    def cell(tag, i, v):
        return f'<{tag} class="num">{v}</{tag}>' if i in numeric else f"<{tag}>{v}</{tag}>"

    out = ["<table>", "<thead><tr>" + "".join(cell("th", i, h) for i, h in enumerate(head)) + "</tr></thead>"]
    out.append("<tbody>")
    for n, row in enumerate(rows):
        extra = f" {attrs[n]}" if attrs else ""
        out.append(f"<tr{extra}>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _recipe_section(facts: _Facts, loaded: _Loaded) -> str:
    cfg, state = facts.config, facts.state
    recipe = cfg.get("recipe") or {}
    parts = []
    if recipe.get("reason"):
        reason = str(recipe["reason"]).removeprefix("recipe: ")
        parts.append(f'<p class="recipe"><b>recipe:</b> {_e(reason)}</p>')
    else:
        chosen = [c for c in recipe.get("chosen", []) if c != "best_by"]
        derived = f" (derived: {', '.join(chosen)})" if chosen else ""
        parts.append(f'<p class="recipe"><b>recipe:</b> the options as given{_e(derived)}</p>')
    if recipe.get("best_by_reason") or state.get("best_by"):
        why = f" ({recipe['best_by_reason']})" if recipe.get("best_by_reason") else ""
        parts.append(_note(f"model_best.keras is chosen by {state.get('best_by', cfg.get('best_by'))}{why}"))
    if recipe.get("pretrained_hint"):
        parts.append(_note(recipe["pretrained_hint"]))
    stop = state.get("stopped_early")
    done = state.get("epoch", 0)
    if stop:
        parts.append(_note(f"stopped early after epoch {done}: {stop.get('reason', stop)}"))
    lr = cfg.get("lr")
    options = [
        ("model", cfg.get("model", "?") + _kwargs(cfg.get("model_options"))),
        ("data", cfg.get("data")),
        ("input", "x".join(map(str, cfg.get("input_shape") or [])) or None),
        ("epochs", f"{done} of {cfg.get('epochs')}" + (f" (+{cfg['fine_tune_epochs']} fine-tuning)"
                                                    if cfg.get("fine_tune_epochs") else "")),
        ("batch", cfg.get("batch_size")),
        ("optimizer", f"{cfg.get('optimizer')}, lr {lr:g}" if lr else f"{cfg.get('optimizer')}, default lr"),
        ("schedule", cfg.get("schedule")),
        ("augment", f"{cfg.get('augment')}{_kwargs(cfg.get('augment_overrides'))}"),
        ("weights", cfg.get("weights")),
        ("precision", cfg.get("precision")),
        ("images", _split_counts(loaded)),
    ]  # fmt: skip
    cells = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in options if v not in (None, ""))
    parts.append(f'<dl class="options">{cells}</dl>')
    return _section("recipe", "Recipe", "\n".join(parts))


def _kwargs(options) -> str:
    return f" ({' '.join(f'{k}={v}' for k, v in options.items())})" if options else ""


def _split_counts(loaded: _Loaded) -> str | None:
    data = loaded._dataset  # only when already in memory: the recipe is no reason to load the data
    if data is None:
        return None
    test = f", {len(data.test):,d} test" if data.test is not None else ", no test split"
    val = f", {len(data.val):,d} val" if data.val is not None else ""
    return f"{len(data.train):,d} train{val}{test}, {data.num_classes} classes"


def _history_series(history: list[dict], epochs: list[int], key: str) -> list[tuple[str, list, list]]:
    """(label, epochs, values) of ``key`` and ``val_key``, at the epochs that logged them (GoogLeNet logs
    its main output as predictions_*)."""
    found = []
    for prefix in ("", "val_"):
        for name in (prefix + key, f"{prefix}predictions_{key}"):
            points = [(e, float(row[name])) for e, row in zip(epochs, history, strict=True)
                      if isinstance(row.get(name), int | float)]  # fmt: skip
            if points:
                found.append((prefix + key, [e for e, _ in points], [v for _, v in points]))
                break
    return found


def _curves_section(facts: _Facts) -> str | None:
    history = facts.state.get("history") or []
    if not history:
        return None
    from .runs import pyplot

    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [int(row.get("epoch", i)) + 1 for i, row in enumerate(history)]
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.7))
    try:
        for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
            for label, xs, values in _history_series(history, epochs, key):
                ax.plot(xs, values, marker="o", markersize=3, label=label)
            for i in range(1, len(history)):  # the linear probe -> fine-tuning, and such
                if history[i].get("phase") != history[i - 1].get("phase"):
                    ax.axvline(epochs[i] - 0.5, color="grey", linestyle="--", linewidth=0.8)
            best = facts.state.get("best_epoch")
            if best:
                ax.axvline(best, color="#2e7d32", alpha=0.35, linewidth=4)
            ax.set_title(key, fontsize=10)
            ax.set_xlabel("epoch", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            if len(epochs) <= 12:
                ax.set_xticks(epochs)
                ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if ax.lines:
                ax.legend(fontsize=7)
        fig.tight_layout()
        png = _figure_png(fig)
    finally:
        plt.close(fig)
    best = facts.state.get("best_epoch")
    phases = list(dict.fromkeys(str(row["phase"]) for row in history if row.get("phase")))
    note = f"{len(history)} epoch(s)" + (
        f"; the green band is model_best.keras (epoch {best})" if best else ""
    )
    note += f"; phases: {', '.join(phases)} (dashed: where one ends)" if len(phases) > 1 else ""
    body = f'<img class="plot" alt="loss and accuracy per epoch" src="{png}">\n{_note(note)}'
    return _section("curves", "Training curves", body)


def _figure_png(fig, dpi: int = 150) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return _data_uri(buf.getvalue())


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _scored_what(metrics: dict) -> str:
    split = metrics.get("split", "test")
    return f"{metrics.get('samples', '?'):,} {'test' if split == 'test' else 'validation'} images"


def _confusion_section(facts: _Facts) -> str | None:
    metrics = facts.metrics or {}
    cm = metrics.get("confusion_matrix")
    if not cm:
        return None
    cm = np.asarray(cm, np.int64)
    names = metrics.get("class_names") or facts.class_names or [str(i) for i in range(len(cm))]
    if len(cm) > MAX_CONFUSION_TABLE:
        return _section("confusion", "Confusion matrix", _confusion_image(cm) + _note(
            f"{_scored_what(metrics)}; rows: the true class, columns: the predicted one, shaded by the "
            "share of the row"))  # fmt: skip
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    head = '<tr><th class="corner">true \\ predicted</th>' + "".join(
        f'<th title="{_e(n)}">{i}</th>' for i, n in enumerate(names)
    ) + "</tr>"  # fmt: skip
    rows = []
    for i, name in enumerate(names):
        cells = []
        for j in range(len(names)):
            s = float(share[i, j])
            colour = f"rgba(37,99,235,{s:.3f})" if i == j else f"rgba(220,60,40,{min(1.0, 1.6 * s):.3f})"
            ink = ' style="color:#fff"' if (s > 0.5 if i == j else s > 0.3) else ""
            title = f"{name} taken for {names[j]}: {cm[i, j]} ({100 * s:.1f}% of {name})"
            cells.append(
                f'<td title="{_e(title)}"><span style="background:{colour}"{ink}>{cm[i, j]}</span></td>'
            )
        rows.append(f'<tr><th class="row">{i} {_e(name)}</th>{"".join(cells)}</tr>')
    table = f'<table class="cm">\n<thead>{head}</thead>\n<tbody>\n' + "\n".join(rows) + "\n</tbody></table>"
    note = _note(
        f"{_scored_what(metrics)} scored by model_best.keras; rows: the true class, columns: the predicted "
        "class (its number); blue: right, red: wrong, shaded by the share of the row"
    )
    return _section("confusion", "Confusion matrix", table + note)


def _confusion_image(cm: np.ndarray) -> str:
    from .runs import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    try:
        ax.imshow(cm / np.maximum(cm.sum(axis=1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        fig.tight_layout()
        png = _figure_png(fig, dpi=110)
    finally:
        plt.close(fig)
    return f'<img class="plot" alt="confusion matrix" src="{png}">'


def _per_class_section(facts: _Facts) -> str | None:
    metrics = facts.metrics or {}
    per_class = metrics.get("per_class_accuracy")
    if not per_class:
        return None
    cm = np.asarray(metrics.get("confusion_matrix") or [], np.int64)
    rows, attrs = [], []
    for i, (name, acc) in enumerate(per_class.items()):
        support = correct = None
        confused = "-"
        if cm.ndim == 2 and i < len(cm):
            support, correct = int(cm[i].sum()), int(cm[i, i])
            off = cm[i].copy()
            off[i] = 0
            if off.max() > 0:
                j = int(off.argmax())
                taken = list(per_class)[j] if j < len(per_class) else str(j)
                confused = f"{_e(taken)} ({off[j]})"
        pct = "-" if acc is None else f"{100 * acc:.1f}%"
        bar = f'<span class="bar" style="--p:{0 if acc is None else 100 * acc:.1f}%">{pct}</span>'
        rows.append([str(i), _e(name), _e(support if support is not None else "-"),
                     _e(correct if correct is not None else "-"), bar, confused])  # fmt: skip
        attrs.append(f'class="class-row" data-class="{_e(name)}"')
    top1 = metrics.get("top1")
    body = _table(
        ["#", "class", "images", "right", "accuracy", "most often taken for"], rows, {0, 2, 3, 4}, attrs
    )
    if top1 is not None:
        body += _note(f"{_scored_what(metrics)}; top-1 {100 * top1:.2f}% over all")
    return _section("per-class", "Per-class accuracy", f'<div class="scroll">{body}</div>')


def _model_section(facts: _Facts, loaded: _Loaded) -> str | None:
    if not facts.state.get("epoch"):
        return None
    from .analysis import analyze, human

    model = loaded.model()
    run = loaded.run
    found = loaded.analysis = analyze(model)
    mean, std = run.normalization()
    rf = found.receptive_field
    size = run.model_file.stat().st_size
    items = [
        ("model file", f"{run.model_file.name} ({size / 1e6:.2f} MB)"),
        ("input", "x".join(map(str, loaded.shape))),
        ("normalization", f"(pixel - {_values(mean)}) / {_values(std)}"),
        ("parameters", f"{human(found.total_params)} ({found.total_params:,d}; trainable "
                       f"{found.trainable_params:,d})"),
        ("MACs per image", f"{human(found.total_macs)} ({found.total_macs:,d})"),
        ("layers", str(len(model.layers))),
        ("receptive field", "global" if rf is None else f"{rf:g} px at {found.receptive_field_layer}"),
    ]  # fmt: skip
    cells = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
    return _section("model", "Model", f'<dl class="options">{cells}</dl>')


def _values(values) -> str:
    values = [f"{float(v):g}" for v in values]
    return values[0] if len(set(values)) == 1 else "(" + ", ".join(values) + ")"


# ------------------------------------------------------------------------------------------------
# The most confident mistakes: Grad-CAM, and the nearest training images of the class predicted
# ------------------------------------------------------------------------------------------------


def _mistakes_section(facts: _Facts, loaded: _Loaded) -> str | None:
    if not facts.state.get("epoch"):
        return None
    found = find_mistakes(loaded)
    if found is None:
        return None
    which = f"{found.split} split" + ("" if found.split == "test" else " (the run has no test split)")
    among = (
        f"all {found.total:,d} images" if found.scored == found.total
        else f"{found.scored:,d} of its {found.total:,d} images (a seeded sample)"
    )  # fmt: skip
    if not found.items:
        none = _note(f"No mistake among {among} of the {which}.")
        return _section("mistakes", "Most confident mistakes", none, wide=True)
    lead = _note(
        f"The {len(found.items)} mistakes model_best.keras is surest of, among {among} of the {which}. "
        f"Each: the image, its Grad-CAM for the predicted class"
        + (f" (layer {found.cam_layer})" if found.cam_layer else "")
        + ", and the nearest training images of the predicted class (cosine similarity of the embeddings)."
    )
    notes = "".join(_note(n) for n in (found.cam_note, found.neighbour_note) if n)
    cards = "\n".join(_mistake_card(m) for m in found.items)
    body = f'{lead}{notes}\n<div class="mistakes">\n{cards}\n</div>'
    return _section("mistakes", f"Most confident mistakes ({found.split} split)", body, wide=True)


def _mistake_card(m: dict) -> str:
    image = _thumb(m["image"], "the image")
    cam = _thumb(_overlay(m["image"], m["cam"]), "Grad-CAM") if m["cam"] is not None else ""
    caption = (
        f'<figcaption>true <b>{_e(m["true"])}</b>, taken for <b class="bad">{_e(m["predicted"])}</b> '
        f'({100 * m["confidence"]:.1f}%)<br><span class="where">{_e(m["where"])}</span></figcaption>'
    )
    near = ""
    if m["neighbours"]:
        tiles = "".join(
            f'<div class="tile">{_thumb(img, "a training image of " + m["predicted"], "small")}'
            f"<span>{sim:.2f}</span></div>"
            for img, sim in m["neighbours"]
        )
        label = f'<div class="label">nearest {_e(m["predicted"])} in training</div>'
        near = f'<div class="near">{label}{tiles}</div>'
    pair = f'<div class="pair"><div class="tile">{image}<span>image</span></div>'
    pair += f'<div class="tile">{cam}<span>Grad-CAM</span></div>' if cam else ""
    return f'<figure class="mistake">{pair}</div>{near}{caption}</figure>'


def find_mistakes(loaded: _Loaded) -> _Mistakes | None:
    """The MAX_MISTAKES most confident mistakes of the scored split (test, else validation): the model's
    probabilities on (a seeded sample of) the split, the Grad-CAM of each mistake's predicted class and
    its nearest training images of that class."""
    from . import data as kdata
    from .evaluate import match_classes, predict

    model = loaded.model()
    dataset = loaded.dataset()
    split = dataset.eval_split
    if split is None or len(split) == 0:
        return None
    names = loaded.facts.class_names or list(dataset.class_names)
    index, _ = match_classes(names, dataset.class_names, "the model")
    rng = np.random.default_rng(0)
    picked = np.arange(len(split))
    if len(split) > MAX_SCORED:
        picked = np.sort(rng.choice(len(split), MAX_SCORED, replace=False))
    labels = index[np.asarray(split.labels)[picked]]
    mean, std = loaded.run.normalization()
    normalize = kdata.Normalization(tuple(mean), tuple(std))
    probs = np.concatenate([  # a batch at a time: only the mistakes' pixels are kept
        predict(model, np.asarray(split.images[picked[i : i + BATCH]]), normalize, batch_size=BATCH)
        for i in range(0, len(picked), BATCH)
    ])  # fmt: skip
    predicted = probs.argmax(axis=1)
    confidence = probs[np.arange(len(probs)), predicted]
    wrong = np.flatnonzero(predicted != labels)
    chosen = wrong[np.argsort(-confidence[wrong], kind="stable")][:MAX_MISTAKES]
    found = _Mistakes("test" if dataset.test is not None else "validation", len(picked), len(split), [],
                      None, None, None)  # fmt: skip
    if not len(chosen):
        return found
    images = np.asarray(split.images[picked[chosen]])
    cams = _cams(model, normalize.numpy(images), found)
    neighbours = _neighbours(loaded, dataset, index, images, predicted[chosen], found)
    for n, i in enumerate(chosen):
        where = split.paths[picked[i]] if split.paths else f"image {picked[i]} of the {found.split} split"
        found.items.append({
            "image": images[n], "cam": None if cams is None else cams[n],
            "true": _name(names, labels[i]), "predicted": _name(names, predicted[i]),
            "confidence": float(confidence[i]), "where": _short_path(where),
            "neighbours": neighbours[n] if neighbours else [],
        })  # fmt: skip
    return found


def _name(names: list[str], i) -> str:
    return names[int(i)] if int(i) < len(names) else str(int(i))


def _short_path(where: str) -> str:
    p = Path(where)
    return str(Path(*p.parts[-2:])) if len(p.parts) > 2 else where


def _cams(model, x: np.ndarray, found: _Mistakes):
    from .explain import ExplainError, gradcam, target_layer
    from .graph import layer_path

    try:
        layer = target_layer(model)
        cams, _, _ = gradcam(model, x, layer)
    except ExplainError as e:
        found.cam_note = f"no Grad-CAM: {e}"
        return None
    found.cam_layer = layer_path(model, layer.name)
    return cams


def _neighbours(loaded: _Loaded, dataset, index, queries, predicted, found: _Mistakes):
    """Per query: [(image, cosine)] of the NEIGHBOURS nearest training images of its predicted class,
    among at most MAX_GALLERY training images of the classes predicted (a seeded sample of each)."""
    from .retrieval import RetrievalError, load_extractor

    train = dataset.train
    if train is None or len(train) == 0:
        found.neighbour_note = "no training images to compare with"
        return None
    try:
        extractor = load_extractor(loaded.facts.run_dir, model=loaded.model())
    except RetrievalError as e:
        found.neighbour_note = f"no nearest training images: {e}"
        return None
    labels = index[np.asarray(train.labels)]
    classes = sorted(set(int(c) for c in predicted))
    per_class = max(1, MAX_GALLERY // len(classes))
    rng = np.random.default_rng(1)
    gallery = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if len(members) > per_class:
            members = rng.choice(members, per_class, replace=False)
        gallery.extend(members.tolist())
    if not gallery:
        found.neighbour_note = "no training image of the predicted classes"
        return None
    gallery = np.sort(np.asarray(gallery, np.int64))
    vectors = np.concatenate([  # a batch at a time: only the neighbours' pixels are read again
        extractor.embed(np.asarray(train.images[gallery[i : i + BATCH]]), batch_size=BATCH)
        for i in range(0, len(gallery), BATCH)
    ])  # fmt: skip
    asked = extractor.embed(np.asarray(queries))
    sampled = any(int((labels == c).sum()) > per_class for c in classes)
    if sampled:
        found.neighbour_note = (
            f"nearest among {len(gallery):,d} training images of the predicted classes (a seeded sample of "
            f"at most {per_class:,d} per class)"
        )
    nearest = []
    for q, c in zip(asked, predicted, strict=True):
        members = np.flatnonzero(labels[gallery] == c)
        best = members[np.argsort(-(vectors[members] @ q), kind="stable")[:NEIGHBOURS]]
        nearest.append([(int(b), float(vectors[b] @ q)) for b in best])
    wanted = np.unique([b for hits in nearest for b, _ in hits]).astype(np.int64)
    pictures = dict(zip(wanted.tolist(), np.asarray(train.images[gallery[wanted]]), strict=True))
    return [[(pictures[b], sim) for b, sim in hits] for hits in nearest]


def _scale(h: int, w: int) -> tuple[int, int]:
    side = max(h, w)
    factor = max(1, round(THUMB / side)) if side < THUMB else THUMB / side
    return max(1, round(w * factor)), max(1, round(h * factor))


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, np.uint8)
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]


def _overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The image in grey-scale with the heatmap over it (jet, 45%), uint8 RGB."""
    import matplotlib

    base = _rgb(image).astype(np.float32).mean(axis=-1, keepdims=True).repeat(3, axis=-1)
    heat = matplotlib.colormaps["jet"](np.clip(cam, 0, 1))[..., :3] * 255
    return np.clip(0.55 * base + 0.45 * heat, 0, 255).astype(np.uint8)


def _thumb(image: np.ndarray, alt: str, cls: str = "") -> str:
    from PIL import Image

    rgb = _rgb(image)
    size = _scale(*rgb.shape[:2])
    resample = Image.Resampling.NEAREST if size[0] >= rgb.shape[1] else Image.Resampling.LANCZOS
    picture = Image.fromarray(rgb, "RGB")
    if image.shape[-1] == 1:
        picture = picture.convert("L")
    buf = io.BytesIO()
    picture.resize(size, resample).save(buf, format="PNG", optimize=True)
    return (
        f'<img class="{" ".join(["thumb", *cls.split()])}" alt="{_e(alt)}" src="{_data_uri(buf.getvalue())}">'
    )


# ------------------------------------------------------------------------------------------------
# The export folder: its files (model.json) and their validation (validate.json)
# ------------------------------------------------------------------------------------------------


def _newer(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_mtime > b.stat().st_mtime + 1
    except OSError:
        return False


def _mb(n) -> str:
    return "-" if not isinstance(n, int | float) else f"{n / 1e6:.3f}"


def _export_section(run_dir: Path) -> str | None:
    folder = run_dir / EXPORT_FOLDER
    sidecar = _read_json(folder / "model.json")
    if sidecar is None:
        return None
    files = sidecar.get("files") or {}
    rows = []
    for name, entry in files.items():
        entry = entry if isinstance(entry, dict) else {}
        meta = entry.get("metadata") or {}
        quant = entry.get("quantization") or meta.get("quantization") or "-"
        io_types = f"{meta.get('input_dtype', '?')}/{meta.get('output_dtype', '?')}" if meta else "-"
        rows.append([_e(name), _e(entry.get("kind", "-")), _e(quant), _e(io_types), _mb(entry.get("bytes")),
                     _mb(entry.get("gzip_bytes"))])  # fmt: skip
    for name, error in (sidecar.get("failed") or {}).items():
        rows.append([_e(name), "-", '<b class="bad">failed</b>', _e(error), "-", "-"])
    model = sidecar.get("model") or {}
    parts = [_table(["file", "kind", "quantization", "input/output", "MB", "gzip MB"], rows, {4, 5})]
    if model:
        size = "x".join(map(str, model.get("input_size") or [])) + f"x{model.get('channels', '?')}"
        labels = len(model.get("labels") or [])
        parts.append(_note(
            f"{model.get('model_name', '?')}: input {size}, {model.get('channel_order', '')} mean "
            f"{_values(model.get('mean') or [0])} std {_values(model.get('std') or [1])}, {labels} labels; "
            f"from {folder}/model.json"
        ))  # fmt: skip
    if _newer(run_dir / "model_best.keras", folder / "model.json"):
        parts.append(_note("model_best.keras was written after this export: export again for the files to "
                           "hold the model shown here"))  # fmt: skip
    return _section("export", "Export", "\n".join(parts))


def _fmt(value, spec: str) -> str:
    return "-" if not isinstance(value, int | float) else format(value, spec)


def _count(n) -> str:
    return f"{n:,d}" if isinstance(n, int) else "?"


def _validate_section(run_dir: Path) -> str | None:
    path = validate_json_path(run_dir)
    found = _read_json(path)
    if found is None:
        return None
    rows, attrs, notes = [], [], []
    for r in found.get("rows") or []:
        status = str(r.get("status", "?"))
        tone = "good" if status == "ok" else "bad" if status == "FAIL" else "muted"
        badge = f'<b class="{tone}">{_e(status)}</b>'
        ci = r.get("agreement_ci95")
        rows.append([
            _e(r.get("format", "?")), _e(r.get("file", "?")), badge, _fmt(r.get("size_mb"), ".3f"),
            _fmt(r.get("top1"), ".2f"), _fmt(r.get("drop_pp"), "+.2f"), _fmt(r.get("agreement"), ".2f"),
            f"{ci[0]:.1f}-{ci[1]:.1f}" if isinstance(ci, list) and len(ci) == 2 else "-",
            _fmt(r.get("ms_per_image"), ".2f"),
        ])  # fmt: skip
        attrs.append('class="validate-row"')
        for text in (r.get("error"), r.get("note")):
            if text:
                notes.append(
                    f"<li><b>{_e(r.get('file', '?'))}</b> ({_e(r.get('format', '?'))}): {_e(text)}</li>"
                )
    head = ["format", "file", "status", "MB", "top-1 %", "drop pp", "agree %", "95% CI", "ms/img"]
    passed = found.get("passed")
    verdict = "passed" if passed else "failed" if passed is not None else "?"
    summary = (
        f'<p><b class="{"good" if passed else "bad"}">{verdict}</b> on {_count(found.get("images"))} '
        "images of "
        f"{_e(found.get('data', '?'))}{' (labeled)' if found.get('labeled') else ' (unlabeled: agreement)'}; "
        f"reference {_e(found.get('reference') or 'none')}, "
        f"--max-drop {_e(found.get('max_drop', '?'))} points, "
        f"MediaPipe {_e(found.get('mediapipe', '?'))}</p>"
    )
    parts = [summary, _table(head, rows, {3, 4, 5, 6, 7, 8}, attrs)]
    if notes:
        parts.append(f'<div class="accel"><b>Accelerators and notes</b><ul>{"".join(notes)}</ul></div>')
    if found.get("stale"):
        parts.append(_note(f"stale files, not validated: {', '.join(map(str, found['stale']))}"))
    if _newer(path.parent / "model.json", path):
        parts.append(_note("validated before the latest export: run kerascnn validate again"))
    return _section("validate", "Validation", "\n".join(parts), wide=True)


# ------------------------------------------------------------------------------------------------
# The page
# ------------------------------------------------------------------------------------------------

_CSS = """
:root{--fg:#1d2430;--muted:#5b6472;--line:#e3e7ee;--bg:#f3f5f8;--accent:#2563eb;--bad:#c0392b;--good:#2e7d32}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
 color:var(--fg);background:var(--bg)}
header{background:#1d2430;color:#fff;padding:18px 28px 16px}
header h1{margin:0;font-size:22px;font-weight:600}
header .sub{color:#c5cedb;margin-top:3px;font-size:13px;overflow-wrap:anywhere}
.figures{display:flex;flex-wrap:wrap;gap:10px;margin-top:14px}
.figure{background:rgba(255,255,255,.09);border-radius:8px;padding:7px 14px;min-width:118px}
.figure b{display:block;font-size:19px;font-weight:600}
.figure span{color:#c5cedb;font-size:12px}
.notes{margin:10px 0 0;padding:0 0 0 18px;color:#ffd28a;font-size:13px}
main{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:16px;padding:16px 28px 28px;
 max-width:1500px;margin:0 auto}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:14px 18px;min-width:0}
section.wide{grid-column:1/-1}
h2{font-size:16px;margin:0 0 10px;font-weight:600}
p{margin:6px 0}
p.note{color:var(--muted);font-size:12.5px}
p.recipe{margin-top:0}
dl.options{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;margin:10px 0 0}
dl.options dt{color:var(--muted)}
dl.options dd{margin:0;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;font-size:13px}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{color:var(--muted);font-weight:600;border-bottom:2px solid var(--line);white-space:nowrap}
.num{text-align:right}
.scroll{max-height:460px;overflow:auto}
.bar{display:inline-block;min-width:64px;padding:0 4px;border-radius:3px;
 background:linear-gradient(90deg,#cfe0ff var(--p),#f1f3f6 var(--p))}
table.cm{width:auto;font-size:12px}
table.cm td{padding:1px;border:none;text-align:center;vertical-align:middle}
table.cm td span{display:block;min-width:34px;padding:4px 2px;border-radius:3px}
table.cm th{border:none;padding:2px 6px;text-align:center;vertical-align:middle}
table.cm th.row{text-align:left;white-space:nowrap;font-weight:500}
table.cm th.corner{font-size:11px;color:var(--muted);font-weight:400;text-align:left}
img.plot{width:100%;height:auto;display:block}
b.bad{color:var(--bad)} b.good{color:var(--good)} b.muted{color:var(--muted)}
.mistakes{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:12px;margin-top:10px}
figure.mistake{margin:0;border:1px solid var(--line);border-radius:8px;padding:10px;display:grid;
 grid-template-columns:auto 1fr;grid-template-rows:auto auto;gap:6px 16px}
figure.mistake figcaption{grid-column:1/-1;font-size:13px}
figure.mistake .where{color:var(--muted);font-size:12px;overflow-wrap:anywhere}
.pair,.near{display:flex;gap:8px;align-items:flex-start;flex-wrap:wrap}
.near .label{width:100%;font-size:11.5px;color:var(--muted)}
.tile{display:flex;flex-direction:column;align-items:center;font-size:11px;color:var(--muted)}
img.thumb{width:88px;height:88px;object-fit:contain;image-rendering:pixelated;border-radius:4px;
 border:1px solid var(--line);background:#000}
img.thumb.small{width:64px;height:64px}
.accel{margin-top:10px;font-size:13px}
.accel ul{margin:4px 0 0;padding-left:18px}
footer{color:var(--muted);font-size:12px;text-align:center;padding:0 0 20px}
@media (max-width:900px){main{grid-template-columns:1fr}.mistakes{grid-template-columns:1fr}}
"""


def _header(facts: _Facts, loaded: _Loaded) -> str:
    from .evaluate import format_interval, wilson_interval

    cfg, state, metrics = facts.config, facts.state, facts.metrics or {}
    model = cfg.get("model", "model") + _kwargs(cfg.get("model_options"))
    title = f"{model} on {cfg.get('data', '?')}"
    shape = "x".join(map(str, cfg.get("input_shape") or []))
    figures = []
    if metrics.get("top1") is not None and metrics.get("samples"):
        n = int(metrics["samples"])
        ci = format_interval(wilson_interval(round(metrics["top1"] * n), n))
        split = metrics.get("split", "test")
        figures.append((f"{100 * metrics['top1']:.2f}%", f"top-1, {n:,d} {split} images, 95% CI {ci}"))
        topk = next(
            (k for k in metrics if k.startswith("top") and k not in ("top1",) and k[3:].isdigit()), None
        )
        if topk:
            figures.append((f"{100 * metrics[topk]:.2f}%", f"top-{topk[3:]}"))
        last = metrics.get("last")
        if last and last.get("top1") is not None:
            figures.append(
                (f"{100 * last['top1']:.2f}%", f"top-1 of model_last.keras (epoch {last.get('epoch')})")
            )
    if state.get("epoch"):
        figures.append((f"{state['epoch']}", f"epochs; the best: {state.get('best_epoch', '?')} "
                                             f"by {state.get('best_by', '?')}"))  # fmt: skip
    if loaded.analysis is not None:
        from .analysis import human

        figures.append((human(loaded.analysis.total_params), "parameters"))
        figures.append((human(loaded.analysis.total_macs), "MACs per image"))
    if metrics and metrics.get("split") == "val":
        facts.notes.insert(0, "no test split: the scores, the confusion matrix and the mistakes are of the "
                              "validation split, which also chose model_best.keras")  # fmt: skip
    boxes = "".join(f'<div class="figure"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for v, k in figures)
    notes = "".join(f"<li>{_e(n)}</li>" for n in facts.notes)
    when = datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        f"<header>\n<h1>{_e(title)}</h1>\n"
        f'<div class="sub">input {_e(shape or "?")} &middot; {len(facts.class_names)} classes &middot; '
        "run folder "
        f"{_e(facts.run_dir.resolve())} &middot; report written {when}</div>\n"
        f'<div class="figures">{boxes}</div>\n'
        + (f'<ul class="notes">{notes}</ul>\n' if notes else "")
        + "</header>"
    )


def _page(facts: _Facts, loaded: _Loaded, sections: list[str]) -> str:
    header = _header(facts, loaded)
    title = f"{facts.config.get('model', 'run')} on {facts.config.get('data', '?')}: kerascnn run report"
    body = "\n".join(sections) or _section(
        "empty", "Nothing to show yet", _note("The run has no finished epoch.")
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{header}\n<main>\n{body}\n</main>\n"
        f"<footer>kerascnn run report &middot; {_e(REPORT_FILE)} is rewritten by kerascnn train, evaluate, "
        "export and validate</footer>\n</body>\n</html>\n"
    )
