"""Opening footage (for the GUI and scripts) through :func:`core.video.open_source` (Qt-free).

A source has ``path``, ``kind`` ('still' or 'video'), ``frame_count``, ``fps``, ``info()``,
``timestamp(i)``, ``frame(i)`` (exact) and ``close()``; errors are ``core.video.InputError``
with one sentence.
"""

from __future__ import annotations

from pathlib import Path


def open_media(path, cancel=None):
    """Open a still or a video; raises ``core.video.InputError`` with one sentence on failure
    (and ``core.errors.Cancelled`` when ``cancel`` is set while a long video is being opened).
    Opening a video may decode all of it: call this off the GUI thread."""
    from . import video

    return video.open_source(Path(path).expanduser(), cancel=cancel)


def check_media(path) -> Path:
    """The cheap checks before opening (exists, a readable, non-empty file); ``InputError`` if not."""
    from .video import check_input_file

    return check_input_file(path)


def source_kind(src) -> str:
    """'still' or 'video'."""
    k = getattr(src, "kind", None)
    if k in ("still", "video"):
        return k
    return "still" if int(getattr(src, "frame_count", 1)) <= 1 else "video"
