"""Reading evidence: still images (Pillow, OpenCV for 16-bit colour) and video frames (OpenCV).

Every failure caused by the input itself becomes :class:`InputError`, whose message is one
clear sentence naming the file, fit for a dialog or CLI stderr. Inputs are never modified.

Still images are returned as HxWx3 uint8 RGB arrays. Conversions (not refusals):

* grayscale (``L``, 1-bit), palette, CMYK, YCbCr ... -> RGB;
* alpha (``RGBA``, ``LA``, ``P`` with transparency, 16-bit RGBA) -> composited on a
  **neutral mid-grey** (:data:`ALPHA_BACKGROUND`), so hidden colour under transparent pixels
  never leaks into the result and a cut-out face does not sit on black (which reads as a dark
  edge to the detector and the model); when any pixel is (partly) transparent,
  ``load_still(..., notes=[])`` appends one sentence saying so (:func:`alpha_note`), for the
  GUI's source panel, CLI stderr and the run record;
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
    "ALPHA_BACKGROUND",
    "alpha_note",
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


from .errors import InputError, check_cancel  # noqa: E402  (InputError re-exported: the input error of every module)


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


#: what transparent pixels are composited on: a neutral mid-grey (not black, not white)
ALPHA_BACKGROUND: tuple[int, int, int] = (128, 128, 128)


def alpha_note(name: str) -> str:
    """The one sentence that tells the user a still's transparency was filled in."""
    r, g, b = ALPHA_BACKGROUND
    return (f"{name} has transparent pixels; they were composited on a neutral mid-grey "
            f"({r}, {g}, {b}) before use.")


def _composite(rgb: np.ndarray, alpha: np.ndarray, seen: Optional[list] = None) -> np.ndarray:
    """uint8 RGB over :data:`ALPHA_BACKGROUND` by uint8 alpha, rounded: transparent pixels become
    mid-grey.  Appends True to ``seen`` when any pixel is not fully opaque."""
    a = alpha[:, :, None].astype(np.uint32)
    bg = np.asarray(ALPHA_BACKGROUND, np.uint32)
    out = (rgb.astype(np.uint32) * a + bg * (255 - a) + 127) // 255
    if seen is not None and bool((alpha < 255).any()):
        seen.append(True)
    return out.astype(np.uint8)


def _float_to_u8(f: np.ndarray) -> np.ndarray:
    f = np.nan_to_num(f.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    mx = float(f.max()) if f.size else 0.0
    if mx > 1.0:
        f = f / mx
    return np.round(np.clip(f, 0.0, 1.0) * 255.0).astype(np.uint8)


def _pil_to_rgb(img: Image.Image, seen: Optional[list] = None) -> np.ndarray:
    """Convert a loaded PIL image of any common mode to HxWx3 uint8 RGB (``seen``: see
    :func:`_composite`)."""
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
        return _pil_to_rgb(img.convert("RGBA" if has_alpha else "RGB"), seen)
    if mode == "RGBX":
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint8)
        return _composite(rgba[:, :, :3], rgba[:, :, 3], seen)
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


def _load_16bit_colour(path: Path, orientation: int, seen: Optional[list] = None) -> np.ndarray:
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
        rgb = _composite(arr8[:, :, 2::-1], arr8[:, :, 3], seen)
    else:
        rgb = arr8[:, :, ::-1]
    op = _ORIENT_OPS.get(orientation)
    if op is not None:
        rgb = op(rgb)
    return np.ascontiguousarray(rgb)


def load_still(path: PathLike, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
               notes: Optional[list] = None) -> np.ndarray:
    """Load a still image as an HxWx3 uint8 RGB array (EXIF orientation applied).

    ``max_pixels`` limits width x height for this call (decompression-bomb guard;
    ``None`` leaves only Pillow's own global limit).  ``notes``, a list, receives one sentence
    per conversion the user should know of (transparency filled with mid-grey:
    :func:`alpha_note`).  Raises :class:`InputError` for a
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
    seen: list = []
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
                    rgb = _load_16bit_colour(p, orientation, seen)
                else:
                    img.load()  # force a full decode: truncated files fail here
                    img = ImageOps.exif_transpose(img) or img
                    rgb = _pil_to_rgb(img, seen)
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
    if seen and notes is not None:
        notes.append(alpha_note(name))
    return np.ascontiguousarray(rgb)



# ==========================================================================================
# Sources: a still (one frame) or a video (OpenCV / FFmpeg) with frame-exact random access
# ==========================================================================================

import collections as _collections
import threading as _threading

__all__ += [
    "SUPPORTED_VIDEO_EXTENSIONS",
    "Source",
    "StillSource",
    "VideoSource",
    "open_source",
    "check_input_file",
    "is_video_file",
]

#: File extensions (lower case, with dot) opened as videos.
SUPPORTED_VIDEO_EXTENSIONS: frozenset[str] = frozenset({
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".ts", ".mts",
    ".m2ts", ".3gp", ".flv", ".asf", ".dav", ".h264", ".264",
})


def is_video_file(path: PathLike) -> bool:
    """True if ``path`` has a video extension (case-insensitive)."""
    return Path(path).suffix.lower() in SUPPORTED_VIDEO_EXTENSIONS


class Source:
    """Frames of a still or a video. ``frame(i)`` returns an HxWx3 uint8 RGB array.

    Attributes: ``path``, ``kind`` (``"still"`` or ``"video"``), ``frame_count``, ``fps``
    (0 for a still), ``size`` (width, height), ``notes`` (sentences about conversions the
    user should know of, e.g. transparency filled with grey). Usable as a context manager.
    """

    kind: str = ""
    path: Path
    frame_count: int = 0
    fps: float = 0.0
    size: tuple[int, int] = (0, 0)
    notes: tuple[str, ...] = ()

    def timestamp(self, i: int) -> float:
        """Seconds from the start of the footage to frame ``i`` (nominal: ``i / fps``)."""
        self._check_index(i)
        return float(i) / self.fps if self.fps > 0 else 0.0

    def frame(self, i: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass

    def info(self) -> dict:
        """JSON-ready description (for run records); ``notes`` only when there are any."""
        d = {"path": str(self.path), "kind": self.kind, "frame_count": int(self.frame_count),
             "fps": round(float(self.fps), 6), "size": [int(self.size[0]), int(self.size[1])]}
        if self.notes:
            d["notes"] = list(self.notes)
        return d

    def _check_index(self, i: int) -> int:
        try:
            j = int(i)
        except (TypeError, ValueError):
            raise InputError(f"Frame {i!r} is not a frame number.", self.path) from None
        if j != i or not 0 <= j < self.frame_count:
            if self.frame_count == 1:
                raise InputError(f"{_name(self.path)} is a still image; it has only frame 0 "
                                 f"(frame {i} was asked for).", self.path)
            raise InputError(f"Frame {i} is outside {_name(self.path)}, which has frames 0 to "
                             f"{self.frame_count - 1}.", self.path)
        return j

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return int(self.frame_count)


class StillSource(Source):
    """A still image as a one-frame source."""

    kind = "still"

    def __init__(self, path: PathLike, image: Optional[np.ndarray] = None, notes: Iterable[str] = ()) -> None:
        self.path = Path(path).expanduser()
        found: list = list(notes)
        self._image = load_still(self.path, notes=found) if image is None else np.ascontiguousarray(image)
        self.notes = tuple(found)
        self._image.setflags(write=False)
        self.frame_count = 1
        self.fps = 0.0
        self.size = (int(self._image.shape[1]), int(self._image.shape[0]))

    def frame(self, i: int = 0) -> np.ndarray:
        self._check_index(i)
        return self._image.copy()


_UNKNOWN = -(1 << 40)  # reader position after a failed seek: the next access seeks again


_DECODER_LOGS_QUIET = False


def _quiet_decoder_logs(cv2) -> None:
    """Keep FFmpeg's and OpenCV's own console messages ("moov atom not found", "[ WARN ...]")
    out of the analyst's way: a file they cannot read already becomes one :class:`InputError`.

    FFmpeg reads ``OPENCV_FFMPEG_LOGLEVEL`` once, when OpenCV first opens a video, so this
    runs before the first capture; a value the user set (for debugging) is kept, and so is
    an ``OPENCV_LOG_LEVEL`` of their own.
    """
    global _DECODER_LOGS_QUIET
    if _DECODER_LOGS_QUIET:
        return
    _DECODER_LOGS_QUIET = True
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    if "OPENCV_LOG_LEVEL" not in os.environ:
        try:
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except AttributeError:  # pragma: no cover - an OpenCV build without the logging module
            pass


class VideoSource(Source):
    """A video file read through OpenCV's FFmpeg backend with frame-exact random access.

    Frame ``i`` is the ``i``-th decoded frame (0-based), exactly what decoding the file from
    the start would give -- never the nearest keyframe. Reading forward is sequential; a jump
    seeks (FFmpeg seeks to an earlier keyframe and decodes forward), and the position OpenCV
    reports before and after the read is checked. When the check fails the reader falls back
    to a seek well before the target followed by decoding forward, and finally to decoding
    from the start. A few recent frames are cached, so stepping back and forth is cheap.

    ``frame_count`` is verified on opening (the container's count can be an estimate): the
    last frame must decode and no frame may follow it; otherwise the frames are counted by
    decoding. Timestamps are nominal (``i / fps``). Thread-safe.
    """

    kind = "video"
    #: jumps forward of at most this many frames decode sequentially instead of seeking
    FORWARD_DECODE = 48
    #: decoded frames kept for stepping back and forth
    CACHE_FRAMES = 8

    def __init__(self, path: PathLike, cancel=None) -> None:
        """Open ``path``; ``cancel`` (a callable or an Event) stops a long opening (counting the
        frames of a file whose container does not say) with :class:`~.errors.Cancelled`."""
        import cv2

        self.path = Path(path).expanduser()
        self._cv2 = cv2
        self._lock = _threading.RLock()
        self._cache: "_collections.OrderedDict[int, np.ndarray]" = _collections.OrderedDict()
        self._cap = None
        self.seeks = 0  # how many seeks were needed (for tests and diagnostics)
        self.fallbacks = 0  # how many seeks failed their check and were redone by decoding
        self._cancel = cancel
        try:
            self._open_and_count()
        except BaseException:
            self.close()
            raise
        finally:
            self._cancel = None

    def _open_and_count(self) -> None:
        cv2 = self._cv2
        self._open()
        n = int(round(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if np.isfinite(fps) and 0 < fps < 1000 else 25.0
        self.nominal_fps = fps
        self.frame_count = max(n, 0)
        first = self._read_next()
        if first is None:
            self.close()
            raise InputError(f"{_name(self.path)} holds no video frame this program can decode.",
                             self.path)
        self._store(0, first)
        self.size = (int(first.shape[1]), int(first.shape[0]))
        self.frame_count = self._verified_count(n)

    # ---------------------------------------------------------------- low level
    def _open(self) -> None:
        cv2 = self._cv2
        _quiet_decoder_logs(cv2)
        if self._cap is not None:
            self._cap.release()
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise InputError(f"{_name(self.path)} could not be opened as a video (the file may be "
                             "corrupt or use a codec this program cannot decode).", self.path)
        self._cap = cap
        self._next = 0  # index of the frame the next read() returns

    def _read_next(self) -> Optional[np.ndarray]:
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            return None
        self._next += 1
        if bgr.ndim == 2:
            return np.ascontiguousarray(np.repeat(bgr[:, :, None], 3, axis=2))
        return np.ascontiguousarray(bgr[:, :, 2::-1])

    def _skip(self, n: int) -> bool:
        for _ in range(n):
            check_cancel(self._cancel)
            if not self._cap.grab():
                return False
            self._next += 1
        return True

    def _pos(self) -> int:
        return int(round(self._cap.get(self._cv2.CAP_PROP_POS_FRAMES)))

    def _seek(self, i: int) -> bool:
        """Position the reader so the next read gives frame ``i``; True if OpenCV agrees."""
        self.seeks += 1
        if i == 0:
            self._open()
            return True
        ok = self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, float(i))
        if ok and self._pos() == i:
            self._next = i
            return True
        self._next = _UNKNOWN  # the decoder may have moved: force a seek next time
        return False

    def _decode_from_start(self, i: int) -> Optional[np.ndarray]:
        self.fallbacks += 1
        self._open()
        if not self._skip(i):
            return None
        return self._read_next()

    def _decode(self, i: int, exhaustive: bool = True) -> Optional[np.ndarray]:
        """Frame ``i`` or None; ``exhaustive=False`` never falls back to decoding from the start."""
        if self._next <= i <= self._next + self.FORWARD_DECODE:
            if not self._skip(i - self._next):
                return None
            return self._read_next()
        if self._seek(i):
            img = self._read_next()
            if img is not None and self._pos() == i + 1:
                return img
            self._next = _UNKNOWN
        # the seek was not trusted: seek about two seconds earlier, then decode forward
        start = max(0, i - max(int(round(2 * self.fps)), self.FORWARD_DECODE))
        if start > 0 and self._seek(start):
            if self._skip(i - start):
                img = self._read_next()
                if img is not None and self._pos() == i + 1:
                    self.fallbacks += 1
                    return img
            self._next = _UNKNOWN
        return self._decode_from_start(i) if exhaustive else None

    def _store(self, i: int, img: np.ndarray) -> None:
        self._cache[i] = img
        self._cache.move_to_end(i)
        while len(self._cache) > self.CACHE_FRAMES:
            self._cache.popitem(last=False)

    def _verified_count(self, n: int) -> int:
        """The true number of frames, starting from the container's count ``n``.

        Frame n-1 must decode; frames after it (a short count) are read to the end. A long
        count (an estimate from the duration) is walked back from the end a few seconds at most;
        a missing or hopeless count is replaced by counting every frame (grab() does not
        convert colours, so that is reasonably quick).
        """
        with self._lock:
            if n > 1:
                last = self._decode(n - 1, exhaustive=False)
                if last is not None:
                    count = n
                    while self._read_next() is not None:  # the container under-counted
                        check_cancel(self._cancel)
                        count += 1
                    if count == n:
                        self._store(n - 1, last)
                    return count
                for i in range(n - 2, max(n - 2 - int(4 * self.fps), 0), -1):
                    if self._decode(i, exhaustive=False) is not None:
                        count = i + 1
                        while self._read_next() is not None:
                            check_cancel(self._cancel)
                            count += 1
                        return count
            elif n == 1 and self._read_next() is None:
                return 1
            self._open()
            count = 0
            while self._cap.grab():
                check_cancel(self._cancel)
                count += 1
            self._open()
        if count <= 0:
            raise InputError(f"{_name(self.path)} holds no video frame this program can decode.",
                             self.path)
        return count

    # ---------------------------------------------------------------- public
    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` (0-based) as HxWx3 uint8 RGB (a fresh copy)."""
        i = self._check_index(i)
        with self._lock:
            if self._cap is None:
                raise InputError(f"{_name(self.path)} is closed.", self.path)
            img = self._cache.get(i)
            if img is None:
                img = self._decode(i)
                if img is None:
                    raise InputError(f"Frame {i} of {_name(self.path)} could not be decoded (the "
                                     "file may be truncated or corrupt).", self.path)
                self._store(i, img)
            else:
                self._cache.move_to_end(i)
            return img.copy()

    def close(self) -> None:
        with self._lock:
            if self._cap is not None:
                self._cap.release()
                self._cap = None
            self._cache.clear()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            if self._cap is not None:
                self._cap.release()
        except Exception:
            pass


def check_input_file(path: PathLike) -> Path:
    """The checks a file passes before it is decoded (cheap: no decoding, one byte read).

    Raises :class:`InputError` with one sentence for a missing, empty, unreadable or
    non-regular file; returns the path (``~`` expanded).
    """
    p = Path(path).expanduser()
    name = _name(p)
    if not p.exists():
        raise InputError(f"{name} does not exist.", p)
    if p.is_dir():
        raise InputError(f"{name} is a folder, not an image or video file.", p)
    if not p.is_file():
        raise InputError(f"{name} is not a regular file.", p)
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            fh.read(1)
    except PermissionError:
        raise InputError(f"{name} cannot be read (permission denied).", p) from None
    except OSError as exc:
        raise InputError(f"{name} cannot be read ({exc.strerror or 'OS error'}).", p) from None
    if size == 0:
        raise InputError(f"{name} is empty (0 bytes).", p)
    return p


def open_source(path: PathLike, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS, cancel=None) -> Source:
    """Open a still image or a video as a :class:`Source`.

    Video extensions go to :class:`VideoSource`; everything else is tried as a still first
    and, if it is not an image, as a video. Raises :class:`InputError` with one sentence for
    a missing, empty, unreadable or unsupported file. ``cancel`` (a callable or an Event)
    stops a long video opening with :class:`~.errors.Cancelled`.
    """
    p = check_input_file(path)
    name = _name(p)
    if is_video_file(p):
        return VideoSource(p, cancel=cancel)
    try:
        notes: list = []
        return StillSource(p, load_still(p, max_pixels=max_pixels, notes=notes), notes)
    except InputError as still_error:
        if is_still_file(p):
            raise
        try:
            return VideoSource(p, cancel=cancel)
        except InputError:
            raise InputError(f"{name} is neither an image nor a video this program can read.",
                             p) from still_error
