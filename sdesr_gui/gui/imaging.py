"""numpy <-> Qt image helpers (copies, so no buffer outlives its array)."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap


def qimage_from_rgb(arr: np.ndarray) -> QImage:
    """HxWx3 uint8 RGB -> a QImage that owns its pixels."""
    a = np.ascontiguousarray(np.asarray(arr, dtype=np.uint8))
    if a.ndim == 2:
        a = np.ascontiguousarray(np.repeat(a[:, :, None], 3, axis=2))
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got {a.shape}")
    h, w = a.shape[:2]
    return QImage(a.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def rgb_from_qimage(img: QImage) -> np.ndarray:
    """QImage -> HxWx3 uint8 RGB (a copy)."""
    img = img.convertToFormat(QImage.Format.Format_RGB888)
    w, h, bpl = img.width(), img.height(), img.bytesPerLine()
    buf = np.frombuffer(img.constBits(), dtype=np.uint8, count=bpl * h).reshape(h, bpl)
    return buf[:, : 3 * w].reshape(h, w, 3).copy()


def nearest_upscale(arr: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour upscale of a square image to ``size`` (integer factor when possible)."""
    h, w = arr.shape[:2]
    if h == size and w == size:
        return arr
    ys = (np.arange(size) * h // size).clip(0, h - 1)
    xs = (np.arange(size) * w // size).clip(0, w - 1)
    return np.ascontiguousarray(arr[ys][:, xs])


def pixmap_from_rgb(arr: np.ndarray, size: int | None = None, smooth: bool = False) -> QPixmap:
    """A pixmap of ``arr``, scaled to ``size`` x ``size`` (nearest unless ``smooth``)."""
    pm = QPixmap.fromImage(qimage_from_rgb(arr))
    if size is not None and (pm.width() != size or pm.height() != size):
        mode = Qt.TransformationMode.SmoothTransformation if smooth else Qt.TransformationMode.FastTransformation
        pm = pm.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio, mode)
    return pm
