"""Reading evidence: still images now, video frames later (OpenCV).

Every failure caused by the input itself becomes :class:`InputError`, whose message is one
clear sentence naming the file, fit for a dialog or CLI stderr. Inputs are never modified.

Still images are returned as HxWx3 uint8 RGB arrays. Conversions (not refusals):

* grayscale (``L``, 1-bit), palette, CMYK, YCbCr ... -> RGB;
* alpha (``RGBA``, ``LA``, ``P`` with transparency, 16-bit RGBA) -> composited on
  **black** (colour multiplied by alpha), so hidden colour under transparent pixels never
  leaks into the result;
* 16-bit gray / RGB -> 8-bit by rounding ``v * 255 / 65535`` (65535 -> 255, 32768 -> 128);
  16-bit RGB(A) PNG/TIFF are decoded with OpenCV to keep full precision before rounding;
* 32-bit integer (``I``) -> treated as a 16-bit container (clipped to 0..65535);
* float (``F``) -> taken as [0, 1] when its maximum is <= 1, else scaled by its maximum;
* EXIF orientation is applied.

Qt-free.
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = [
    "InputError",
    "SUPPORTED_STILL_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "MIN_SIDE",
    "load_still",
    "iter_image_files",
    "is_still_file",
]

PathLike = Union[str, os.PathLike]

#: File extensions (lower case, with dot) treated as still images when expanding folders.
SUPPORTED_STILL_EXTENSIONS: frozenset[str] = frozenset({
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".tif", ".tiff",
    ".webp", ".gif", ".ppm", ".pgm", ".pbm", ".pnm",
})

#: Default per-call limit on width x height (about 80 megapixels).
DEFAULT_MAX_PIXELS: int = 80_000_000
#: Smallest accepted width and height.
MIN_SIDE: int = 2


class InputError(Exception):
    """A problem with the user's input; ``str(err)`` is one sentence for the user."""

    def __init__(self, message: str, path: Optional[PathLike] = None) -> None:
        super().__init__(" ".join(str(message).split()))
        self.path = Path(path) if path is not None else None


def _name(path: Path) -> str:
    """File name safe to put in a one-line message."""
    name = path.name or str(path)
    return "'" + " ".join(name.split()) + "'" if name.strip() else repr(str(path))


def is_still_file(path: PathLike) -> bool:
    """True if ``path`` has a supported still-image extension (case-insensitive)."""
    return Path(path).suffix.lower() in SUPPORTED_STILL_EXTENSIONS


def iter_image_files(paths: Union[PathLike, Iterable[PathLike]]) -> list[Path]:
    """Expand files and folders into a list of image files.

    Folders are listed non-recursively, sorted by name, keeping supported extensions only
    (hidden files skipped). Files named explicitly are kept whatever their extension
    (:func:`load_still` decides). Duplicates are dropped, order kept. Raises
    :class:`InputError` for a missing path or when no image is found.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    seen: set[Path] = set()
    given = 0
    for raw in paths:
        given += 1
        p = Path(raw).expanduser()
        if not p.exists():
            raise InputError(f"{_name(p)} does not exist.", p)
        if p.is_dir():
            try:
                entries = sorted(p.iterdir(), key=lambda q: q.name)
            except PermissionError:
                raise InputError(f"The folder {_name(p)} cannot be read (permission denied).",
                                 p) from None
            found = [q for q in entries
                     if not q.name.startswith(".") and is_still_file(q) and q.is_file()]
        else:
            found = [p]
        for q in found:
            key = q.resolve()
            if key not in seen:
                seen.add(key)
                out.append(q)
    if not out:
        if given == 0:
            raise InputError("No input images were given.")
        raise InputError("No image files were found in the given input "
                         f"({', '.join(_name(Path(p)) for p in paths)}).")
    return out


# --------------------------------------------------------------------------- conversion

def _u16_to_u8(a: np.ndarray) -> np.ndarray:
    """Round ``v * 255 / 65535`` for 16-bit data (65535 -> 255, 32768 -> 128)."""
    v = np.clip(a.astype(np.int64), 0, 65535)
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


def _gray_to_rgb(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[:, :, None], 3, axis=2)


def _composite_on_black(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 RGB x uint8 alpha / 255, rounded: transparent pixels become black."""
    out = (rgb.astype(np.uint32) * alpha[:, :, None].astype(np.uint32) + 127) // 255
    return out.astype(np.uint8)


def _float_to_u8(f: np.ndarray) -> np.ndarray:
    f = np.nan_to_num(f.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    mx = float(f.max()) if f.size else 0.0
    if mx > 1.0:
        f = f / mx
    return np.round(np.clip(f, 0.0, 1.0) * 255.0).astype(np.uint8)


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    """Convert a loaded PIL image of any common mode to HxWx3 uint8 RGB."""
    mode = img.mode
    if mode in ("1", "L", "RGB") and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"  # tRNS colour key -> alpha
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if mode in ("1", "L"):
        return _gray_to_rgb(np.asarray(img.convert("L"), dtype=np.uint8))
    if mode.startswith("I;16") or mode == "I":
        return _gray_to_rgb(_u16_to_u8(np.asarray(img)))
    if mode == "F":
        return _gray_to_rgb(_float_to_u8(np.asarray(img)))
    if mode == "P":
        has_alpha = "transparency" in img.info or (img.palette is not None
                                                    and img.palette.mode == "RGBA")
        return _pil_to_rgb(img.convert("RGBA" if has_alpha else "RGB"))
    if mode == "RGBX":
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint8)
        return _composite_on_black(rgba[:, :, :3], rgba[:, :, 3])
    return np.asarray(img.convert("RGB"), dtype=np.uint8)  # CMYK, YCbCr, LAB, HSV ...


def _is_16bit_colour(path: Path, img: Image.Image) -> bool:
    """True for 16-bit-per-channel colour PNG/TIFF that PIL would truncate to 8 bits."""
    fmt = (img.format or "").upper()
    try:
        if fmt == "PNG":
            with open(path, "rb") as fh:
                head = fh.read(26)
            # IHDR: bit depth at byte 24, colour type at byte 25 (2 = RGB, 6 = RGBA)
            return len(head) == 26 and head[24] == 16 and head[25] in (2, 6)
        if fmt == "TIFF":
            bits = img.tag_v2.get(258)  # BitsPerSample
            spp = img.tag_v2.get(277, 1)  # SamplesPerPixel
            if isinstance(bits, (tuple, list)):
                bits = bits[0] if bits else None
            return bits == 16 and int(spp) >= 3
    except Exception:
        return False
    return False


_ORIENT_OPS = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, k=-1),
    7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, k=1),
}


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:
        return 1


def _load_16bit_colour(path: Path, orientation: int) -> np.ndarray:
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InputError(f"{_name(path)} could not be decoded (the file may be truncated "
                         "or corrupt).", path)
    if arr.dtype == np.uint16:
        arr8 = _u16_to_u8(arr)
    elif arr.dtype == np.uint8:
        arr8 = arr
    else:
        arr8 = _float_to_u8(arr)
    if arr8.shape[2] == 4:
        rgb = _composite_on_black(arr8[:, :, 2::-1], arr8[:, :, 3])
    else:
        rgb = arr8[:, :, ::-1]
    op = _ORIENT_OPS.get(orientation)
    if op is not None:
        rgb = op(rgb)
    return np.ascontiguousarray(rgb)


def load_still(path: PathLike, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Load a still image as an HxWx3 uint8 RGB array (EXIF orientation applied).

    ``max_pixels`` limits width x height for this call (decompression-bomb guard;
    ``None`` leaves only Pillow's own global limit). Raises :class:`InputError` for a
    missing path, a folder, an empty, unreadable, non-image, truncated or corrupt file,
    an image smaller than 2x2, or one over the pixel limit.
    """
    p = Path(path).expanduser()
    name = _name(p)
    if not p.exists():
        raise InputError(f"{name} does not exist.", p)
    if p.is_dir():
        raise InputError(f"{name} is a folder, not an image file.", p)
    if not p.is_file():
        raise InputError(f"{name} is not a regular file.", p)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise InputError(f"{name} cannot be read ({exc.strerror or 'OS error'}).", p) from None
    if size == 0:
        raise InputError(f"{name} is empty (0 bytes).", p)

    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must fail, not half-load
    corrupt = f"{name} could not be decoded (the file may be truncated or corrupt)."
    bomb = f"{name} is too large to open safely (it may be a decompression bomb)."
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                w, h = img.size
                if max_pixels is not None and w * h > max_pixels:
                    raise InputError(
                        f"{name} is too large to open safely ({w}x{h} pixels, the limit is "
                        f"{max_pixels / 1e6:g} megapixels).", p)
                if any(issubclass(wn.category, Image.DecompressionBombWarning) for wn in caught):
                    raise InputError(f"{name} is too large to open safely ({w}x{h} pixels; "
                                     "it may be a decompression bomb).", p)
                if w < MIN_SIDE or h < MIN_SIDE:
                    raise InputError(f"{name} is too small ({w}x{h} pixels; at least "
                                     f"{MIN_SIDE}x{MIN_SIDE} is needed).", p)
                orientation = _orientation(img)
                if _is_16bit_colour(p, img):
                    return _load_16bit_colour(p, orientation)
                img.load()  # force a full decode: truncated files fail here
                img = ImageOps.exif_transpose(img) or img
                rgb = _pil_to_rgb(img)
            if any(issubclass(wn.category, Image.DecompressionBombWarning) for wn in caught):
                raise InputError(bomb, p)
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(bomb, p) from None
    except PermissionError:
        raise InputError(f"{name} cannot be read (permission denied).", p) from None
    except UnidentifiedImageError:
        raise InputError(f"{name} is not an image file this program can read.", p) from None
    except MemoryError:
        raise InputError(f"{name} is too large to load into memory.", p) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError,
            struct.error):
        raise InputError(corrupt, p) from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(corrupt, p)
    return np.ascontiguousarray(rgb)

