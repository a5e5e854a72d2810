"""Opening footage for the GUI: :func:`core.video.open_source` when present, else a stand-in.

The stand-in (stills through :func:`core.video.load_still`, videos through OpenCV with
frame-index seeking) keeps the window usable until the core video reader lands; both give an
object with ``frame_count``, ``fps``, ``timestamp(i)``, ``frame(i)`` and ``path``. Qt-free.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".ts", ".mts"}


def _input_error(message: str, path=None) -> Exception:
    from ..core.video import InputError

    return InputError(message, path)


class StillSource:
    """A still image as a one-frame source."""

    kind = "still"

    def __init__(self, path: Path):
        from ..core.video import load_still

        self.path = Path(path)
        self._image = load_still(self.path)
        self.frame_count = 1
        self.fps = 0.0
        self.size = (int(self._image.shape[1]), int(self._image.shape[0]))

    def timestamp(self, i: int) -> float:
        return 0.0

    def frame(self, i: int) -> np.ndarray:
        if i != 0:
            raise _input_error(f"{self.path.name} is a still image; it has only frame 0.", self.path)
        return self._image

    def close(self) -> None:
        pass


class OpenCVVideoSource:
    """Video frames through OpenCV (stand-in until ``core.video.open_source`` exists)."""

    kind = "video"

    def __init__(self, path: Path):
        import cv2

        self.path = Path(path)
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise _input_error(f"'{self.path.name}' could not be opened as a video.", self.path)
        n = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0
        if n <= 0:  # count by decoding when the container does not say
            n = 0
            while self._cap.grab():
                n += 1
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        if n <= 0:
            raise _input_error(f"'{self.path.name}' holds no video frames.", self.path)
        self.frame_count = n
        self._next = 0
        first = self.frame(0)
        self.size = (int(first.shape[1]), int(first.shape[0]))

    def timestamp(self, i: int) -> float:
        return i / self.fps if self.fps else 0.0

    def frame(self, i: int) -> np.ndarray:
        import cv2

        if not 0 <= i < self.frame_count:
            raise _input_error(f"Frame {i} is outside '{self.path.name}' (0 to {self.frame_count - 1}).",
                               self.path)
        if i != self._next:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise _input_error(f"Frame {i} of '{self.path.name}' could not be decoded.", self.path)
        self._next = i + 1
        return np.ascontiguousarray(bgr[:, :, ::-1])

    def close(self) -> None:
        self._cap.release()


def open_media(path) -> object:
    """Open a still or a video; raises ``core.video.InputError`` with one sentence on failure."""
    p = Path(path).expanduser()
    try:
        from ..core.video import open_source  # lands with the video-reader issue
    except ImportError:
        open_source = None
    if open_source is not None:
        src = open_source(p)
        if not hasattr(src, "path"):
            try:
                src.path = p
            except AttributeError:
                pass
        return src
    if not p.exists():
        raise _input_error(f"'{p.name}' does not exist.", p)
    if p.is_dir():
        raise _input_error(f"'{p.name}' is a folder, not an image or video file.", p)
    if p.suffix.lower() in VIDEO_EXTENSIONS:
        return OpenCVVideoSource(p)
    return StillSource(p)


def source_kind(src) -> str:
    """'still' or 'video'."""
    k = getattr(src, "kind", None)
    if k in ("still", "video"):
        return k
    return "still" if int(getattr(src, "frame_count", 1)) <= 1 else "video"
