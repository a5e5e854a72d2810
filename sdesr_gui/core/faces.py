"""Faces in the canonical 128x128 frame: degradation (and, later, detection/alignment).

Everything in :mod:`sdesr_gui` works in one frame: a 128x128 RGB face aligned by a
similarity transform of its 5 landmarks onto :data:`TEMPLATE_LANDMARKS`. The low-resolution
(LR) input is the bicubic, antialiased downsample of that frame (16x16 for the 8x model).

This module is Qt-free. Detection and alignment (MTCNN + similarity transform) will be
added here as separate functions; the degradation functions below do not depend on them.

Tensor convention: float ``[B, 3, H, W]`` in ``[0, 1]``.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "FRAME_SIZE",
    "LR_SIZE",
    "TEMPLATE_LANDMARKS",
    "CELEBA_ALIGNED_BOX",
    "downsample",
    "upsample",
    "quantize",
    "degrade",
    "to_tensor",
    "to_uint8",
    "celeba_aligned_to_frame",
    "frames_to_tensor",
]

#: Side of the canonical face frame in pixels.
FRAME_SIZE: int = 128
#: Side of the low-resolution input for the default 8x model.
LR_SIZE: int = 16

#: 5 landmark positions (x, y) in the 128x128 frame: left eye, right eye, nose tip,
#: mouth left corner, mouth right corner (image left/right).
TEMPLATE_LANDMARKS: np.ndarray = np.array(
    [
        [50.54, 66.49],
        [78.65, 66.47],
        [64.26, 84.00],
        [51.98, 96.19],
        [76.97, 96.10],
    ],
    dtype=np.float64,
)
TEMPLATE_LANDMARKS.setflags(write=False)

#: Crop box (left, top, right, bottom) of a 178x218 CelebA "aligned" photo -> frame.
CELEBA_ALIGNED_BOX: tuple[int, int, int, int] = (0, 20, 178, 198)

ImageLike = Union[np.ndarray, torch.Tensor]


def _as_batch(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Return a 4-D float view of ``x`` and whether a batch dim was added."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 3:
        return x.unsqueeze(0), True
    if x.dim() != 4:
        raise ValueError(f"expected a [B, C, H, W] or [C, H, W] tensor, got shape {tuple(x.shape)}")
    return x, False


def downsample(hr: torch.Tensor, size: int = LR_SIZE) -> torch.Tensor:
    """THE degradation: bicubic antialiased downsample to ``size x size``, clamped to [0, 1].

    ``hr`` is float ``[B, 3, H, W]`` (or ``[3, H, W]``) in [0, 1]; the output keeps the rank.
    """
    x, squeezed = _as_batch(hr)
    if not x.is_floating_point():
        raise TypeError("downsample expects a float tensor in [0, 1]")
    out = F.interpolate(x, size=(int(size), int(size)), mode="bicubic", antialias=True,
                        align_corners=False).clamp_(0.0, 1.0)
    return out.squeeze(0) if squeezed else out


def upsample(lr: torch.Tensor, size: int = FRAME_SIZE) -> torch.Tensor:
    """Bicubic upsample to ``size x size`` (align_corners=False), clamped to [0, 1].

    This is the bicubic baseline and the conditioning ``y_up`` of the score network.
    """
    x, squeezed = _as_batch(lr)
    if not x.is_floating_point():
        raise TypeError("upsample expects a float tensor in [0, 1]")
    out = F.interpolate(x, size=(int(size), int(size)), mode="bicubic",
                        align_corners=False).clamp_(0.0, 1.0)
    return out.squeeze(0) if squeezed else out


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Snap values to the uint8 grid: ``round(clamp(x) * 255) / 255`` (an 8-bit image)."""
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0


def degrade(hr: torch.Tensor, size: int = LR_SIZE) -> torch.Tensor:
    """LR input as saved to disk: ``quantize(downsample(hr, size))``."""
    return quantize(downsample(hr, size))


def to_tensor(img: ImageLike) -> torch.Tensor:
    """HxWx3 uint8 RGB array (or PIL image) -> float tensor ``[1, 3, H, W]`` in [0, 1].

    A float array is taken to be in [0, 1] already. A 2-D (grayscale) array is repeated
    to 3 channels.
    """
    if isinstance(img, Image.Image):
        img = np.asarray(img.convert("RGB"))
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy()
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
    arr = arr[:, :, :3]
    if arr.dtype == np.uint8:
        t = torch.tensor(arr, dtype=torch.float32).div_(255.0)
    elif np.issubdtype(arr.dtype, np.floating):
        t = torch.tensor(arr, dtype=torch.float32)
    else:
        raise TypeError(f"unsupported image dtype {arr.dtype}; expected uint8 or float")
    return t.permute(2, 0, 1).unsqueeze(0).contiguous()


def to_uint8(t: torch.Tensor) -> list[np.ndarray]:
    """Float tensor ``[B, 3, H, W]`` (or ``[3, H, W]``) in [0, 1] -> list of HxWx3 uint8 arrays.

    Values are clamped to [0, 1] and rounded to the nearest 8-bit level.
    """
    x, _ = _as_batch(t)
    q = torch.round(x.detach().float().clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    arr = q.permute(0, 2, 3, 1).cpu().numpy()
    return [np.ascontiguousarray(a) for a in arr]


def celeba_aligned_to_frame(img: Image.Image, size: int = FRAME_SIZE) -> Image.Image:
    """CelebA "img_align_celeba" photo (178x218) -> canonical frame (crop box, bicubic resize)."""
    img = img.convert("RGB")
    return img.crop(CELEBA_ALIGNED_BOX).resize((size, size), Image.Resampling.BICUBIC)


def frames_to_tensor(frames: Sequence[np.ndarray]) -> torch.Tensor:
    """Stack HxWx3 uint8 frames of equal size into a float batch ``[B, 3, H, W]``."""
    if len(frames) == 0:
        raise ValueError("no frames given")
    return torch.cat([to_tensor(f) for f in frames], dim=0)
