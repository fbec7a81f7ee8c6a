"""``check.png``: a contact sheet of the worst findings of ``kerascnn check``, one finding per row:
duplicate groups side by side with each image's label and split (leaks and conflicts first), the
images with likely label errors (given -> suggested label, and the quality score), and the bad files
that still decode (unreadable ones as a grey tile). Drawn with Pillow, written to a temporary name and
renamed."""

from __future__ import annotations

from pathlib import Path

CELL = 96  # a thumbnail's side
GAP = 6
CAPTION = 13  # px per caption line (two lines under each thumbnail)
TITLE = 16  # px for a row's title
PER_ROW = 6  # thumbnails per row
DUPLICATE_ROWS = 6
LABEL_ROWS = 2
BAD_ROWS = 1
BACKGROUND, INK, MUTED, ALARM = (255, 255, 255), (20, 20, 20), (110, 110, 110), (190, 30, 30)


def _font(size: int = 11):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _thumbnail(items, i: int):
    """Item i as a CELL x CELL tile (the image fitted in it, on light grey), or None if it does not
    decode."""
    from PIL import Image

    from .data.decode import viewable_image

    try:
        if items.images is not None:
            arr = items.images[i]
            im = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
        else:
            im = viewable_image(items.files[i])
    except Exception:  # noqa: BLE001 - an unreadable file: drawn as a grey tile
        return None
    im = im.convert("RGB")
    scale = CELL / max(im.size)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    im = im.resize(size, Image.Resampling.NEAREST if scale > 2 else Image.Resampling.LANCZOS)
    tile = Image.new("RGB", (CELL, CELL), (235, 235, 235))
    tile.paste(im, ((CELL - im.width) // 2, (CELL - im.height) // 2))
    return tile


def _fit(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _name(item_id: str) -> str:
    """A caption's name for an item: its file name, or SPLIT:I of a built-in's image."""
    return item_id.split(":", 1)[1] if ":" in item_id and not Path(item_id).exists() else Path(item_id).name


def _where(member: dict) -> str:
    return ", ".join(t for t in (member["label"], None if member["split"] == "all" else member["split"]) if t)


def _rows(report) -> list[tuple[str, bool, list[tuple[int, str, str]]]]:
    """(title, alarming, [(item, caption line 1, caption line 2)]) per row of the sheet."""
    index = {item_id: i for i, item_id in enumerate(report.items.ids)}
    rows = []
    for g in report.duplicates[:DUPLICATE_ROWS]:
        flags = [f for f, on in (("LEAK", g["leak"]), ("LABEL CONFLICT", g["conflict"])) if on]
        mirrored = ", mirrored" if g["mirrored"] else ""
        title = f"{g['kind']} duplicates{mirrored}" + (f": {', '.join(flags)}" if flags else "")
        cells = [(index[m["id"]], _where(m), _name(m["id"])) for m in g["members"][:PER_ROW]]
        rows.append((title, bool(flags), cells))
    issues = report.labels.get("issues") or []
    for r in range(LABEL_ROWS):
        chunk = issues[r * PER_ROW : (r + 1) * PER_ROW]
        if chunk:
            cells = [
                (index[x["id"]], f"{x['label']} -> {x['suggested']}", f"{x['quality']:.3f} {_name(x['id'])}")
                for x in chunk
            ]
            title = "likely label errors: given -> suggested, quality (p of the given label)"
            rows.append((title + (" (more)" if r else ""), True, cells))
    bad = report.bad_files[: BAD_ROWS * PER_ROW]
    if bad:
        cells = [(index[b["id"]], "+".join(b["kinds"]), (f"{b['width']}x{b['height']} " if b["width"] else "")
                  + _name(b["id"])) for b in bad]  # fmt: skip
        rows.append(("bad files", False, cells))
    return rows


def write_sheet(report, path) -> Path:
    """Draw the contact sheet of ``report`` (a CheckReport with its items) to ``path`` (PNG)."""
    from PIL import Image, ImageDraw

    from .runs import atomic_path

    rows = _rows(report)
    font, bold = _font(11), _font(12)
    width = GAP + PER_ROW * (CELL + GAP)
    row_height = TITLE + CELL + 2 * CAPTION + GAP
    height = TITLE + GAP + max(1, len(rows)) * row_height
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    head = f"kerascnn check {report.data}: {report.images:,d} images"
    draw.text((GAP, 2), _fit(draw, head, bold, width - 2 * GAP), fill=INK, font=bold)
    if not rows:
        draw.text((GAP, TITLE + GAP), "no duplicates, label issues or bad files found", fill=MUTED, font=font)
    y = TITLE + GAP
    for title, alarming, cells in rows:
        draw.text(
            (GAP, y), _fit(draw, title, bold, width - 2 * GAP), fill=ALARM if alarming else INK, font=bold
        )
        for k, (i, line1, line2) in enumerate(cells):
            x = GAP + k * (CELL + GAP)
            tile = _thumbnail(report.items, i)
            if tile is None:
                draw.rectangle((x, y + TITLE, x + CELL - 1, y + TITLE + CELL - 1), fill=(200, 200, 200))
                draw.text((x + 4, y + TITLE + CELL // 2 - 6), "unreadable", fill=INK, font=font)
            else:
                sheet.paste(tile, (x, y + TITLE))
            draw.text((x, y + TITLE + CELL + 1), _fit(draw, line1, font, CELL), fill=INK, font=font)
            draw.text(
                (x, y + TITLE + CELL + 1 + CAPTION), _fit(draw, line2, font, CELL), fill=MUTED, font=font
            )
        y += row_height
    path = Path(path)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def sheet_size(report) -> tuple[int, int]:
    """The sheet's (width, height) in px for ``report`` (what :func:`write_sheet` draws)."""
    rows = len(_rows(report))
    return GAP + PER_ROW * (CELL + GAP), TITLE + GAP + max(1, rows) * (TITLE + CELL + 2 * CAPTION + GAP)
