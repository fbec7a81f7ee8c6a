"""What ``kerascnn check`` reads from each image (:mod:`kerascnn.check`): a content hash, the size, what
is wrong with the file, a 32x32 grey thumbnail and its perceptual signature; and the near-duplicate
pairs those thumbnails give.

**Exact duplicates** share a content hash: blake2b of the file's bytes, or of the decoded pixels of a
built-in or TFDS image (they have no files).

**Near-duplicates** (a mirrored, re-encoded or resized copy): two images whose 32x32 grey thumbnails (the
second mirrored, for a mirrored copy) correlate at NEAR_CORRELATION or more; contrast and brightness do not
matter, detail does. The candidates come from a perceptual signature, pHash's (as the ``imagehash`` package
computes it: the thumbnail's 2-D DCT, its 8x8 lowest frequencies) kept as 64 numbers instead of 64 bits
above-or-below their median: the DCT is orthonormal, so two thumbnails that correlate at 0.995 have signatures
within sqrt(2 (1 - 0.995)) = 0.1 of each other, and a search within that distance misses none; the mirror
image's signature comes from the same DCT (a horizontal flip negates the odd horizontal frequencies). The bits
missed copies: a smooth 64 px image and its copy resized to 48 px and saved as JPEG (quality 70) correlate at
0.998 and are 10 bits apart, while on Fashion-MNIST 178,323 pairs of distinct images are within 4 bits. The
threshold: on Fashion-MNIST, 1,089 pairs correlate at 0.99 (mostly distinct trousers of one cut), 105 at 0.995
(near-identical images of one garment: 76 groups, 21 of them across train and test; BENCHMARKS.md "Know your
data"). A larger image's copy re-encoded or resized keeps its thumbnail (the tests' 64 px image resized to 48
px as JPEG: 0.998; the pixel-mirrored tuxpaint photos: 0.996 to 0.999), while a 28 px image saved as JPEG at
quality 50 falls to about 0.98 and is missed.

**Bad files**: unreadable (not an image, empty, damaged), truncated (the decoder ran out of data, or a
JPEG/PNG without its end marker), tiny (a side under ``min_side``, default 16 px: too little to learn from)
and extreme aspect (longer side over ``max_aspect`` times the shorter, default 5: a resize to a square input
squeezes them beyond recognition).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import runs
from .data.decode import ImageReadError, open_image, viewable

THUMB = 32  # the grey thumbnail's side (pHash's input)
LOW = 8  # the DCT frequencies per axis the signature keeps: 64 numbers
NEAR_CORRELATION = 0.995  # confirmed: thumbnails correlated at least this much
FLAT_STD = 2.0  # a thumbnail this flat (grey levels) is compared by its mean, not its correlation
FLAT_MEAN = 4.0  # two flat thumbnails within this many grey levels are one image
COLOUR = 8  # the small colour thumbnail (the probe's fallback embedding)
PAIR_CELLS = 1 << 25  # distances computed at a time (rows x images; 128 MB of float32): 479 rows of 70,000
_ORIENTATION = 0x0112  # EXIF orientation: 5 to 8 swap width and height


@dataclass
class Facts:
    """Per image (aligned with the items): content hash, size, problem, thumbnails and hashes."""

    digest: list[str | None]
    width: np.ndarray
    height: np.ndarray
    problem: list[tuple[str, str] | None]  # (kind, reason); kind unreadable|truncated (tiny/aspect later)
    thumb: np.ndarray  # (N, THUMB, THUMB) uint8 grey; zeros where not decoded
    colour: np.ndarray  # (N, COLOUR, COLOUR, 3) uint8
    decoded: np.ndarray  # bool: the thumbnails hold the image
    signature: np.ndarray = field(default=None)  # (N, 64) the thumbnail's lowest DCT frequencies
    mirror_signature: np.ndarray = field(default=None)  # the same of the mirror image
    flat: np.ndarray = field(default=None)  # bool: a thumbnail without contrast (a blank image)
    mean: np.ndarray = field(default=None)  # the thumbnail's mean grey level

    def __post_init__(self):
        if self.signature is None:
            self.signature, self.mirror_signature, self.flat, self.mean = signatures(self.thumb)


# ------------------------------------------------------------------------------------------------
# Reading one file
# ------------------------------------------------------------------------------------------------


def file_digest(path) -> str:
    """blake2b (128 bits) of a file's bytes, read a megabyte at a time."""
    return runs.file_digest(path, "blake2b", digest_size=16)


def _end_marker_missing(path, fmt: str | None) -> str | None:
    """Why a JPEG or PNG that decoded is still cut short (its end marker is missing), else None."""
    if fmt not in ("JPEG", "MPO", "PNG"):
        return None
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64))
        tail = f.read().rstrip(b"\0")
    if fmt == "PNG":
        if b"IEND" in tail:
            return None
        return "a PNG file without its end chunk (IEND): cut short, the bottom rows may be missing"
    if tail.endswith(b"\xff\xd9"):
        return None
    return "a JPEG file that does not end with its end marker (FFD9): cut short, or data appended after it"


def _ran_out(message: str) -> bool:
    """The decoder's own message (inside the reason's parentheses) says the data ended early."""
    inner = message[message.find("(") :] if "(" in message else message
    return any(w in inner.lower() for w in ("truncat", "premature end", "unexpected end", "eof"))


def read_file(path) -> dict:
    """One file's facts: digest, width, height, problem (kind, reason), thumb, colour (the last two
    None when it did not decode). JPEGs are decoded at a reduced scale (Pillow's draft mode): the
    thumbnails need 64 px, not the photo's 4,000."""
    from PIL import Image

    out = {"digest": None, "width": 0, "height": 0, "problem": None, "thumb": None, "colour": None}
    try:
        out["digest"] = file_digest(path)
        if os.path.getsize(path) == 0:
            out["problem"] = ("unreadable", "an empty file (0 bytes)")
            return out
        im = open_image(path)
    except ImageReadError as e:  # the header fails: "truncated" when the decoder ran out of data
        out["problem"] = ("truncated" if _ran_out(e.reason) else "unreadable", e.reason)
        return out
    except OSError as e:  # missing (a broken link), a folder, no permission
        out["problem"] = ("unreadable", f"cannot be read ({e.strerror or e})")
        return out
    with im:
        width, height = im.size
        try:
            turned = im.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8)
        except Exception:  # noqa: BLE001 - a damaged EXIF block: the size as stored
            turned = False
        out["width"], out["height"] = (height, width) if turned else (width, height)
        fmt = im.format
        if fmt in ("JPEG", "MPO"):
            im.draft("RGB" if im.mode not in ("L", "1") else "L", (2 * THUMB, 2 * THUMB))
        try:
            im.load()
        except (OSError, ValueError, SyntaxError, EOFError, IndexError) as e:
            kind = "truncated" if _ran_out(str(e)) else "unreadable"
            out["problem"] = (kind, f"a damaged or truncated {fmt or 'image'} file ({type(e).__name__}: {e})")
            return out
        rgb = viewable(im).convert("RGB")
    cut = _end_marker_missing(path, fmt)
    if cut:
        out["problem"] = ("truncated", cut)
    small = rgb.resize((THUMB, THUMB), Image.Resampling.LANCZOS, reducing_gap=2.0)
    out["thumb"] = np.asarray(small.convert("L"), np.uint8)
    out["colour"] = np.asarray(small.resize((COLOUR, COLOUR), Image.Resampling.BOX), np.uint8)
    return out


def read_files(paths: list[Path], workers: int | None = None, progress=None) -> Facts:
    """:func:`read_file` of every path on a few threads (Pillow decodes without the GIL)."""
    workers = workers or min(8, (os.cpu_count() or 2) + 2)
    n = len(paths)
    thumb = np.zeros((n, THUMB, THUMB), np.uint8)
    colour = np.zeros((n, COLOUR, COLOUR, 3), np.uint8)
    decoded = np.zeros(n, bool)
    width, height = np.zeros(n, np.int64), np.zeros(n, np.int64)
    digest, problem = [None] * n, [None] * n
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, got in enumerate(pool.map(read_file, paths)):
            digest[i], problem[i] = got["digest"], got["problem"]
            width[i], height[i] = got["width"], got["height"]
            if got["thumb"] is not None:
                thumb[i], colour[i], decoded[i] = got["thumb"], got["colour"], True
            if progress and (i + 1) % 1000 == 0:
                progress(i + 1, n)
    return Facts(digest, width, height, problem, thumb, colour, decoded)


def read_arrays(images: np.ndarray) -> Facts:
    """The facts of decoded uint8 images (N, H, W, C) (a built-in's or TFDS'): the digest of each
    image's pixels; nothing is unreadable."""
    from PIL import Image

    n = len(images)
    rows = images.reshape(n, -1)
    digest = [hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest() for row in rows]
    thumb = np.zeros((n, THUMB, THUMB), np.uint8)
    colour = np.zeros((n, COLOUR, COLOUR, 3), np.uint8)
    for i, arr in enumerate(images):
        im = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).convert("RGB")
        small = im.resize((THUMB, THUMB), Image.Resampling.LANCZOS)
        thumb[i] = np.asarray(small.convert("L"), np.uint8)
        colour[i] = np.asarray(small.resize((COLOUR, COLOUR), Image.Resampling.BOX), np.uint8)
    h, w = images.shape[1:3]
    return Facts(
        digest, np.full(n, w), np.full(n, h), [None] * n, thumb, colour, np.ones(n, bool)
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Perceptual signatures and near-duplicate pairs
# ------------------------------------------------------------------------------------------------


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: ``C @ x`` is the DCT of the columns of x."""
    k = np.arange(n)
    c = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))
    c[0] /= np.sqrt(2.0)
    return c


def _unit(thumbs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zero-mean unit-norm thumbnails (N, 32, 32) as float32 (correlation = dot product), with their
    means and standard deviations (grey levels)."""
    x = thumbs.astype(np.float32)
    mean = x.mean((1, 2))
    x = x - mean[:, None, None]
    std = np.sqrt((x * x).mean((1, 2)))
    return x / (np.maximum(std, 1e-6) * THUMB)[:, None, None], mean, std


def signatures(
    thumbs: np.ndarray, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(signature, signature of the mirror image, flat, mean): the 8x8 lowest 2-D DCT frequencies of
    each zero-mean unit-norm thumbnail (64 float32; a horizontal flip negates the odd horizontal ones);
    ``flat`` marks thumbnails with a standard deviation under FLAT_STD (their signature is noise)."""
    c = _dct_matrix(THUMB)[:LOW].astype(np.float32)
    sign = ((-1.0) ** np.arange(LOW)).astype(np.float32)
    sig, means, stds = [], [], []
    for start in range(0, len(thumbs), chunk):
        unit, mean, std = _unit(thumbs[start : start + chunk])
        sig.append((c @ unit @ c.T).reshape(len(unit), LOW, LOW))
        means.append(mean)
        stds.append(std)
    if not sig:
        empty = np.zeros((0, LOW * LOW), np.float32)
        return empty, empty, np.zeros(0, bool), np.zeros(0, np.float32)
    low = np.concatenate(sig)
    mirrored = (low * sign).reshape(len(low), -1)
    return low.reshape(len(low), -1), mirrored, np.concatenate(stds) < FLAT_STD, np.concatenate(means)


def similarity(
    thumbs: np.ndarray, i: np.ndarray, j: np.ndarray, mirrored: np.ndarray, chunk=8192
) -> np.ndarray:
    """The correlation of the thumbnails of i and j (j mirrored where ``mirrored``)."""
    out = np.zeros(len(i), np.float64)
    for start in range(0, len(i), chunk):
        a, b, m = i[start : start + chunk], j[start : start + chunk], mirrored[start : start + chunk]
        tb = thumbs[b].copy()
        tb[m] = tb[m][:, :, ::-1]
        ua, ub = _unit(thumbs[a])[0], _unit(tb)[0]
        out[start : start + chunk] = (ua * ub).sum((1, 2))
    return out


def _close_pairs(a: np.ndarray, b: np.ndarray, max_d2: float):
    """(i, j) with i < j of the rows of ``a`` and ``b`` (the same rows, perhaps mirrored) whose squared
    distance is at most ``max_d2``: every pair is computed (quadratic: Fashion-MNIST's 70,000 images
    take seconds, a million would take hours), a block of rows at a time."""
    block = int(np.clip(PAIR_CELLS // max(1, len(b)), 16, 1024))
    na, nb = (a * a).sum(1), (b * b).sum(1)
    out_i, out_j = [], []
    for start in range(0, len(a), block):
        d2 = na[start : start + block, None] + nb[None, start:] - 2 * (a[start : start + block] @ b[start:].T)
        r, c = np.nonzero(d2 <= max_d2)
        keep = c > r
        out_i.append(r[keep] + start)
        out_j.append(c[keep] + start)
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_i), np.concatenate(out_j)


def near_pairs(facts: Facts, min_corr: float = NEAR_CORRELATION):
    """The near-duplicate pairs among the decoded images: (i, j, mirrored, correlation) arrays, i < j,
    one row per pair (the straight comparison wins when both match).

    Two thumbnails correlate at ``min_corr`` when their unit vectors are within sqrt(2 (1 - min_corr));
    the DCT is orthonormal, so their 64 lowest frequencies are at least as close: the signatures find
    every candidate (no pair is missed), and the whole thumbnails decide. Flat thumbnails (blank
    images) are left out: :func:`duplicate_groups` joins them by their grey level."""
    ok = np.flatnonzero(facts.decoded & ~facts.flat)
    sig, mirror = facts.signature[ok], facts.mirror_signature[ok]
    max_d2 = 2.0 * (1.0 - min_corr) + 1e-5
    found = []
    for other, flag in ((sig, False), (mirror, True)):
        r, c = _close_pairs(sig, other, max_d2)
        found.append((ok[r], ok[c], np.full(len(r), flag)))
    i, j, m = (np.concatenate(parts) for parts in zip(*found, strict=True))
    corr = similarity(facts.thumb, i, j, m)
    keep = corr >= min_corr
    i, j, m, corr = i[keep], j[keep], m[keep], corr[keep]
    order = np.lexsort((m, j, i))  # per pair, the straight comparison first
    i, j, m, corr = i[order], j[order], m[order], corr[order]
    first = np.ones(len(i), bool)
    first[1:] = (i[1:] != i[:-1]) | (j[1:] != j[:-1])
    return i[first], j[first], m[first], corr[first]


def cosine_pairs(vectors: np.ndarray, ok: np.ndarray, min_cosine: float):
    """Pairs (i, j, cosine) of L2-normalised ``vectors`` at ``min_cosine`` or more, among the rows
    ``ok`` (indices), i < j."""
    v = vectors[ok].astype(np.float32)
    r, c = _close_pairs(v, v, 2.0 * (1.0 - min_cosine))
    return ok[r], ok[c], (v[r] * v[c]).sum(1).astype(np.float64)


def _units(facts: Facts) -> tuple[np.ndarray, dict[int, tuple]]:
    """Per image, its unit: the first image of its exact copies (one content hash) or of the blank
    images of its grey level (flat thumbnails, means binned by 2 FLAT_MEAN); with how each unit of
    several images is joined."""
    unit = np.arange(len(facts.digest))
    first: dict = {}
    how: dict[int, tuple] = {}
    for i, digest in enumerate(facts.digest):
        if facts.decoded[i] and facts.flat[i]:
            key, evidence = ("flat", int(facts.mean[i] // (2 * FLAT_MEAN))), ("blank images", False, 1.0)
        elif digest is not None:
            key, evidence = digest, ("content hash", False, 1.0)
        else:
            continue
        unit[i] = first.setdefault(key, i)
        if unit[i] != i:
            how[int(unit[i])] = evidence
    return unit, how


def duplicate_groups(facts: Facts, pairs) -> list[tuple[list[int], list[tuple]]]:
    """The duplicate groups: (members, evidence [(method, mirrored, similarity)]) each, members sorted.

    Exact copies (and blank images of one grey level) are one unit; ``pairs`` (i, j, method, mirrored,
    similarity) join units, most similar first, into groups whose every two units are a pair (complete
    linkage): similarity is not transitive, and chaining it (A like B, B like C) put 175 of Fashion-
    MNIST's trousers in one group."""
    unit, unit_how = _units(facts)
    best: dict[tuple[int, int], tuple] = {}
    for i, j, method, mirrored, sim in pairs:
        a, b = sorted((int(unit[i]), int(unit[j])))
        if a != b and ((a, b) not in best or sim > best[(a, b)][2]):
            best[(a, b)] = (method, bool(mirrored), float(sim))
    group: dict[int, list[int]] = {}  # unit -> the units of its group (one shared list)
    evidence: dict[int, list[tuple]] = {}  # the group's first unit -> how its units were joined
    for (a, b), found in sorted(best.items(), key=lambda kv: -kv[1][2]):
        ga, gb = group.setdefault(a, [a]), group.setdefault(b, [b])
        if ga is gb or not all((min(u, v), max(u, v)) in best for u in ga for v in gb):
            continue
        joined = evidence.pop(gb[0], []) + evidence.pop(ga[0], []) + [found]
        ga.extend(gb)
        for u in gb:
            group[u] = ga
        evidence[ga[0]] = joined
    members: dict[int, list[int]] = {}
    for i, u in enumerate(unit):
        members.setdefault(int(u), []).append(i)
    out, seen = [], set()
    for u in sorted(set(int(x) for x in unit)):
        units = group.get(u, [u])
        if units[0] in seen:
            continue
        seen.add(units[0])
        found = sorted(i for v in units for i in members[v])
        if len(found) > 1:
            how = evidence.get(units[0], []) + [unit_how[v] for v in units if v in unit_how]
            out.append((found, how))
    return out
