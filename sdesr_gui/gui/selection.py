"""The face the analyst works on: aligned crop, LR input and (when known) reference HR. Qt-free.

Ways to pick a face in a frame:

* ``detected``: an MTCNN face, aligned by its 5 landmarks onto the template
  (:func:`core.faces.align_face`);
* ``manual``: a box drawn by hand where detection missed; aligned by
  ``core.faces.align_box`` when the core provides it, otherwise by a similarity (scale and
  shift, no rotation) that puts the box where a detector's box sits in the face frame;
* ``frame``: a 128x128 still taken as an already aligned face frame (as ``sdesr enhance``);
* ``lr``: a 16x16 still taken as the LR input itself.

The reference HR (for PSNR / SSIM / CS) is known only when the aligned crop was not upsampled,
i.e. the face had at least as many pixels as the frame; otherwise it is ``None``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from ..core import faces

FRAME = faces.FRAME_SIZE
LR = faces.LR_SIZE

#: Where MTCNN's box of a template-aligned face sits in the 128 frame (measured on the bundled
#: sample face): centre and size. A hand-drawn box is mapped onto it.
_DETECTOR_BOX_CENTRE = (63.9, 79.7)
_DETECTOR_BOX_SIZE = (57.8, 72.4)
#: A crop is treated as real high resolution when it was magnified by at most this factor.
MAX_REFERENCE_SCALE = 1.05


@dataclasses.dataclass
class FaceSelection:
    kind: str  # detected | manual | frame | lr
    frame_index: int
    lr: np.ndarray  # 16x16x3 uint8: the model's input
    crop: Optional[np.ndarray]  # 128x128x3 uint8 aligned crop (None for an LR still)
    reference: Optional[np.ndarray]  # 128x128x3 uint8 when the crop is genuine HR
    box: Optional[tuple[float, float, float, float]] = None
    prob: Optional[float] = None
    landmarks: Optional[np.ndarray] = None
    matrix: Optional[np.ndarray] = None  # 2x3 image -> frame
    scale: Optional[float] = None  # frame pixels per image pixel
    note: str = ""

    @property
    def bicubic(self) -> np.ndarray:
        """The bicubic baseline (the score network's conditioning ``y_up``) as uint8."""
        return faces.to_uint8(faces.upsample(faces.to_tensor(self.lr)))[0]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "frame_index": int(self.frame_index)}
        if self.box is not None:
            d["box"] = [round(float(v), 2) for v in self.box]
        if self.prob is not None:
            d["prob"] = round(float(self.prob), 5)
        if self.landmarks is not None:
            d["landmarks"] = [[round(float(v), 2) for v in p] for p in np.asarray(self.landmarks)]
        if self.matrix is not None:
            d["alignment_matrix"] = [[round(float(v), 6) for v in row] for row in np.asarray(self.matrix)]
        if self.scale is not None:
            d["magnification"] = round(float(self.scale), 4)
        d["reference_hr"] = self.reference is not None
        if self.note:
            d["note"] = self.note
        return d


def _scale_of(matrix: np.ndarray) -> float:
    m = np.asarray(matrix, dtype=np.float64)
    return float(np.sqrt(abs(np.linalg.det(m[:, :2]))))


def _finish(kind, frame_index, crop, matrix, box=None, prob=None, landmarks=None) -> FaceSelection:
    lr = faces.to_uint8(faces.degrade(faces.to_tensor(crop)))[0]
    scale = _scale_of(matrix)
    ref = crop if scale <= MAX_REFERENCE_SCALE else None
    if ref is not None:
        note = "The face had enough pixels: the aligned crop serves as the reference HR."
    else:
        note = (f"The face was magnified {scale:.1f}x to fill the frame, so no reference HR is known "
                "(PSNR / SSIM / CS need one).")
    return FaceSelection(kind, frame_index, lr, crop, ref, box=box, prob=prob, landmarks=landmarks,
                         matrix=matrix, scale=scale, note=note)


def from_detection(image: np.ndarray, face, frame_index: int = 0) -> FaceSelection:
    """Align a detected face (``core.faces.Face``) onto the frame."""
    crop, m = faces.align_face(image, face.landmarks)
    return _finish("detected", frame_index, crop, m, box=tuple(float(v) for v in face.box),
                   prob=float(face.prob), landmarks=np.asarray(face.landmarks, dtype=np.float64))


def box_matrix(box) -> np.ndarray:
    """Similarity (scale + shift) putting ``box`` where a detector box sits in the frame."""
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    k = float(np.sqrt(_DETECTOR_BOX_SIZE[0] * _DETECTOR_BOX_SIZE[1] / (w * h)))
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    return np.array([[k, 0.0, _DETECTOR_BOX_CENTRE[0] - k * cx],
                     [0.0, k, _DETECTOR_BOX_CENTRE[1] - k * cy]], dtype=np.float64)


def from_box(image: np.ndarray, box, frame_index: int = 0) -> FaceSelection:
    """Align a hand-drawn box (x0, y0, x1, y1) in image pixels onto the frame."""
    box = tuple(float(v) for v in box)
    core_align = getattr(faces, "align_box", None)
    if core_align is not None:
        try:
            out = core_align(image, box)
            crop, m = (out[0], out[1]) if isinstance(out, tuple) else (out, box_matrix(box))
            if np.asarray(crop).shape == (FRAME, FRAME, 3):
                return _finish("manual", frame_index, np.ascontiguousarray(crop, dtype=np.uint8),
                               np.asarray(m, dtype=np.float64), box=box)
        except (TypeError, ValueError):
            pass  # a different signature than expected: use the local alignment
    import cv2

    m = box_matrix(box)
    rgb = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[:, :, :3])
    interp = cv2.INTER_AREA if m[0, 0] < 1.0 else cv2.INTER_CUBIC
    crop = cv2.warpAffine(rgb, m, (FRAME, FRAME), flags=interp, borderMode=cv2.BORDER_REPLICATE)
    return _finish("manual", frame_index, np.ascontiguousarray(crop), m, box=box)


def whole_image(image: np.ndarray, frame_index: int = 0) -> Optional[FaceSelection]:
    """A 128x128 still as the face frame, or a 16x16 still as the LR; ``None`` otherwise."""
    h, w = image.shape[:2]
    if (h, w) == (FRAME, FRAME):
        sel = _finish("frame", frame_index, np.ascontiguousarray(image[:, :, :3]), np.eye(2, 3),
                      box=(0.0, 0.0, float(w), float(h)))
        sel.note = "The whole image is taken as an aligned 128x128 face frame (it is its own reference HR)."
        return sel
    if (h, w) == (LR, LR):
        return FaceSelection("lr", frame_index, np.ascontiguousarray(image[:, :, :3]), None, None,
                             box=(0.0, 0.0, float(w), float(h)), scale=None,
                             note="The whole image is taken as the 16x16 LR input; no reference HR.")
    return None
