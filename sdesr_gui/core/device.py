"""The one place that turns a device name from the user into a ``torch.device``. Qt-free."""

from __future__ import annotations

import torch

from .errors import UsageError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'cpu', 'cuda', 'cuda:N' or None/'auto' (CUDA when available).

    Raises :class:`~.errors.UsageError` (one sentence) for an unknown name or a CUDA request on a
    machine without a CUDA GPU.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"Unknown device {device!r}; use 'cpu' or 'cuda'.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("CUDA was requested but no CUDA GPU is available; use the CPU.")
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"Unsupported device {device!r}; use 'cpu' or 'cuda'.")
    return dev
