"""Opening footage (for the GUI and scripts) through :func:`core.video.open_source` (Qt-free).

A source has ``path``, ``kind`` ('still' or 'video'), ``frame_count``, ``fps``,
``timestamp(i)``, ``frame(i)`` (exact) and ``close()``; errors are ``core.video.InputError``
with one sentence.
"""

from __future__ import annotations

from pathlib import Path


def open_media(path):
    """Open a still or a video; raises ``core.video.InputError`` with one sentence on failure."""
    from .video import open_source

    return open_source(Path(path).expanduser())


def source_kind(src) -> str:
    """'still' or 'video'."""
    k = getattr(src, "kind", None)
    if k in ("still", "video"):
        return k
    return "still" if int(getattr(src, "frame_count", 1)) <= 1 else "video"
