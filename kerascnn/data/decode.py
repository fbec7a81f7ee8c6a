"""Photo formats and decoding: what Pillow (and pillow-heif) open, and one decoder for every command.

Every file extension Pillow opens (PNG, JPEG, WebP, TIFF, BMP, GIF, AVIF, ...; see
:func:`image_extensions`), in any case (``.JPG``), plus HEIC/HEIF through pillow-heif, whose opener is
registered with Pillow once, when images are first listed or decoded. Every command reads images through
:func:`decode_image` (or :func:`viewable_image`), so they all read the same formats the same way: the
EXIF orientation applied, a multi-frame file's primary image, 8-bit ``L`` or ``RGB``. Also the errors of
the whole package (:class:`DataError`, :class:`ImageReadError`).
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from kerascnn.errors import KerascnnError


class DataError(KerascnnError, ValueError):
    """The data cannot be used as given; the message names the file or folder and the fix."""


class ImageReadError(DataError):
    """One image file that cannot be read: ``path``, and ``reason`` (what is wrong and what would fix it)."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


# ------------------------------------------------------------------------------------------------
# Photo formats: what Pillow (and pillow-heif) open
# ------------------------------------------------------------------------------------------------

HEIF_EXTENSIONS = (".heic", ".heif", ".heics", ".heifs", ".hif")
# Shown first (in this order) wherever the extensions are listed; the others follow sorted.
_COMMON_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".heic", ".heif", ".bmp", ".gif")
_IDENTIFY_ONLY = ("MPEG",)  # Pillow reads the size of an MPEG video, not its pixels
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"mif2")


@functools.cache
def _heif_support() -> str | None:
    """Register pillow-heif's HEIC/HEIF opener with Pillow (once): None when it is, else what to do."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return "a HEIC/HEIF image needs the pillow-heif library, not installed here: pip install pillow-heif"
    register_heif_opener()
    return None


@functools.cache
def image_extensions() -> tuple[str, ...]:
    """The file extensions (lower case) read as images: every one Pillow registers for a format it can
    open and decode (not its identify-only stubs such as HDF5 ``.h5`` or GRIB, nor MPEG video; EPS only
    with Ghostscript), ``.mpo`` (opened as JPEG), and the HEIC/HEIF ones (listed even without
    pillow-heif, so that such a file is reported with how to install it). Common photo formats first,
    then the rest sorted: deterministic for one Pillow installation."""
    from PIL import EpsImagePlugin, Image, ImageFile

    _heif_support()
    Image.init()

    def decodes(fmt: str) -> bool:
        if fmt == "MPO":
            return "JPEG" in Image.OPEN
        factory = Image.OPEN.get(fmt, (None,))[0]
        if factory is None or fmt in _IDENTIFY_ONLY:
            return False
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
            return False
        return fmt != "EPS" or bool(EpsImagePlugin.has_ghostscript())

    found = {ext.lower() for ext, fmt in Image.registered_extensions().items() if decodes(fmt)}
    found |= set(HEIF_EXTENSIONS)
    return tuple(e for e in _COMMON_EXTENSIONS if e in found) + tuple(sorted(found - set(_COMMON_EXTENSIONS)))


def describe_extensions() -> str:
    """The image extensions for a message: the common ones and how many more."""
    exts = image_extensions()
    shown = [e for e in exts if e in _COMMON_EXTENSIONS]
    more = len(exts) - len(shown)
    return f"image files Pillow can open ({', '.join(shown)}{f', and {more} more' if more else ''})"


def _heif_header(path) -> bool:
    """The file starts like a HEIF file (an ``ftyp`` box of a HEIF brand), whatever its name."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError:
        return False
    return head[4:8] == b"ftyp" and any(brand in head[8:32] for brand in _HEIF_BRANDS)


def open_image(path):
    """Pillow's image of the file ``path`` (not yet loaded), HEIC/HEIF through pillow-heif. Raises
    ``FileNotFoundError`` for a missing file and :class:`ImageReadError` (naming the file and what is
    wrong) for one that is not an image Pillow can open."""
    from PIL import Image, UnidentifiedImageError

    missing = _heif_support()
    suffix = Path(path).suffix.lower()
    if missing and (suffix in HEIF_EXTENSIONS or _heif_header(path)):
        raise ImageReadError(path, missing)
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise
    except UnidentifiedImageError:  # (an OSError) no format's header matches
        known = suffix in image_extensions()
        raise ImageReadError(
            path,
            "not an image Pillow can open"
            + (
                f" (its content is not the {suffix} format its name says: damaged, or another kind of file)"
                if known
                else f" (the extension '{suffix or 'none'}' is none of the {describe_extensions()})"
            ),
        ) from None
    except OSError as e:
        if e.errno is not None:  # from the system: a folder, no permission, a symlink loop
            raise ImageReadError(path, f"cannot be read ({e.strerror or e})") from None
        fmt = Image.registered_extensions().get(suffix, "image")
        raise ImageReadError(path, f"a damaged or truncated {fmt} file (OSError: {e})") from None
    except (ValueError, SyntaxError, EOFError) as e:  # a header Pillow recognised, then failed on
        fmt = Image.registered_extensions().get(suffix, "image")
        raise ImageReadError(path, f"a damaged or truncated {fmt} file ({type(e).__name__}: {e})") from None


def _loaded(path, im):
    """``im`` (from :func:`open_image`) with its pixels decoded; a damaged or truncated file raises
    :class:`ImageReadError` naming it and its format."""
    try:
        im.load()
    except (OSError, ValueError, SyntaxError, EOFError, IndexError) as e:
        raise ImageReadError(
            path, f"a damaged or truncated {im.format or 'image'} file ({type(e).__name__}: {e})"
        ) from None
    return im


# ------------------------------------------------------------------------------------------------
# Decoding: a file as the pixels an image viewer shows
# ------------------------------------------------------------------------------------------------


def float_to_8bit(values: np.ndarray) -> np.ndarray:
    """Floating-point samples (a float TIFF) as 8 bits, scaled and never clipped: [0, 1] (the usual
    convention) to [0, 255]; other non-negative values from [0, their maximum]; values below zero from
    [their minimum, their maximum]. NaN and infinities count as 0 and the largest finite value."""
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    if not finite.size:
        return np.zeros(values.shape, np.uint8)
    low, high = float(finite.min()), float(finite.max())
    values = np.nan_to_num(values, nan=0.0, posinf=high, neginf=low)
    if low >= 0 and high <= 1:
        low, high = 0.0, 1.0
    elif low >= 0:
        low = 0.0
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def viewable(im):
    """A Pillow image as an image viewer shows it, in 8-bit ``L`` or ``RGB``: the EXIF orientation
    applied; 16-bit and 32-bit samples scaled to 8 bits (their most significant byte, as Pillow does for
    16-bit RGB; not clipped at 255, which turns a 16-bit photo white); floating-point samples scaled to
    their range (:func:`float_to_8bit`: [0, 1], else [0, max]); anything with transparency
    (RGBA, LA, a palette with a transparent index) composited over white; CMYK, YCbCr and the other
    modes converted by Pillow. An animation gives its first frame; a multi-image HEIC/HEIF its primary
    image (pillow-heif opens it on that one). HEIF has no EXIF rotation of its own: libheif applies the
    file's rotation/mirror boxes on decode and pillow-heif sets the EXIF orientation to 1 (keeping the
    original in ``info["original_orientation"]``), so ``exif_transpose`` below does not rotate it again.
    The web demo's PNG decoder and the Android core apply the same rules (mobile_demo/web/app/lib/png.js,
    Preprocess.kt)."""
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(im)
    if im.mode.startswith("I;16") or im.mode == "I":
        wide = np.asarray(im).astype(np.int64)
        if im.mode == "I" and wide.size and wide.max() > 65535:  # a 32-bit image: its own range
            wide = wide * 65535 // max(1, int(wide.max()))
        return Image.fromarray((np.clip(wide, 0, 65535) >> 8).astype(np.uint8), "L")
    if im.mode == "F":
        return Image.fromarray(float_to_8bit(np.asarray(im, np.float64)), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("L", "1") and "transparency" in im.info:  # a colour key (PNG tRNS)
        im = im.convert("LA")
    elif im.mode == "RGB" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        composed = Image.alpha_composite(white, rgba).convert("RGB")
        return composed.convert("L") if im.mode in ("LA", "La") else composed
    if im.mode in ("L", "RGB"):
        return im
    return im.convert("RGB")


def decode_image(path, size: tuple[int, int], channels: int) -> np.ndarray:
    """Decode one image file to uint8 (H, W, C) at ``size`` = (height, width): :func:`viewable`, then
    Pillow's ``convert("L")``/``convert("RGB")`` and a bilinear resize. Any format of
    :func:`image_extensions` (the file's content decides, not its name).

    Raises ``FileNotFoundError`` for a missing file and :class:`ImageReadError` (a ``ValueError``: the
    file and what is wrong with it) for one that cannot be read.
    """
    return _sized(viewable_image(path), size, channels)


def viewable_image(path):
    """The file ``path`` as a viewer shows it, at its own size (:func:`viewable` of the decoded Pillow
    image: HEIC's primary image, the EXIF orientation applied, ``L`` or ``RGB``). Raises as
    :func:`decode_image`."""
    with open_image(path) as im:
        return viewable(_loaded(path, im))


def _sized(im, size, channels: int) -> np.ndarray:
    from PIL import Image

    im = im.convert("L" if channels == 1 else "RGB")
    if im.size != (size[1], size[0]):
        im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def image_from_array(arr: np.ndarray, size, channels: int) -> np.ndarray:
    """A decoded uint8 image (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (a TFDS example) at ``size``
    with ``channels``, by the same rules as a file (:func:`viewable`, then the bilinear resize)."""
    from PIL import Image

    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return _sized(viewable(Image.fromarray(arr)), size, channels)


def decode_many(paths: list[Path], size, channels, workers: int = 8):
    def one(path):
        try:
            return decode_image(path, size, channels), None
        except ImageReadError as e:
            return None, e.reason
        except Exception as e:  # noqa: BLE001 - any decoder failure means "unreadable"
            return None, f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, paths))
