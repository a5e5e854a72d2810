"""The two exception bases of the whole application, and the one cancel check.

* :class:`SdesrError` -- something the user can fix or must know: a bad input, checkpoint,
  export, training setting or command line.  ``str(err)`` is one sentence for a dialog or for
  stderr; the CLI turns it into exit code 2, the GUI into a message box, never a traceback.
* :class:`Cancelled` -- a long job stopped because the user asked; not an error.  Every job
  polls its cancel request with :func:`check_cancel` (a callable returning bool, or an object
  with ``is_set()`` such as ``threading.Event``).

Callers catch these two bases, never a subclass by name.  Qt-free.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

__all__ = [
    "SdesrError",
    "InputError",
    "CheckpointError",
    "ExportError",
    "TrainingError",
    "UsageError",
    "Cancelled",
    "is_cancelled",
    "check_cancel",
    "one_sentence",
]

PathLike = Union[str, os.PathLike]


def one_sentence(message: Any) -> str:
    """``message`` on one line (whitespace collapsed), ending with a full stop."""
    text = " ".join(str(message).split())
    if text and not text.endswith((".", "!", "?")):
        text += "."
    return text


class SdesrError(Exception):
    """Base of every error meant for the user; ``str(err)`` is one sentence."""

    def __init__(self, message: Any = "", path: Optional[PathLike] = None) -> None:
        super().__init__(one_sentence(message))
        self.path = Path(path) if path is not None else None


class InputError(SdesrError):
    """A problem with the user's input (file, folder, frame, face, gallery)."""


class CheckpointError(SdesrError):
    """A checkpoint could not be written, read or verified."""


class ExportError(SdesrError):
    """An export the user asked for cannot be done."""


class TrainingError(SdesrError):
    """A training job cannot run as asked."""


class UsageError(SdesrError):
    """A command line or setting that cannot work as given."""


class Cancelled(Exception):
    """A job stopped at the user's request (what was finished before is kept)."""

    def __init__(self, message: str = "The job was cancelled.") -> None:
        super().__init__(message)


def is_cancelled(cancel) -> bool:
    """Whether the cancel request ``cancel`` (None, a callable or an Event) is set."""
    if cancel is None:
        return False
    return bool(cancel.is_set() if hasattr(cancel, "is_set") else cancel())


def check_cancel(cancel, exc: type[Cancelled] = Cancelled) -> None:
    """Raise ``exc`` (a :class:`Cancelled`) when ``cancel`` is set; the one cancel check."""
    if is_cancelled(cancel):
        raise exc()
