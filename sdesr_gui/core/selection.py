"""The face the analyst works on: aligned crop, LR input and (when known) reference HR. Qt-free.

Ways to pick a face in a frame (alignment is :func:`core.faces.extract_face`):

* ``detected``: an MTCNN face, aligned by its 5 landmarks onto the template;
* ``manual``: a box drawn by hand where detection missed, mapped onto where detector boxes
  sit in the face frame;
* ``eyes``: two eye clicks (with or without a box), which fix rotation and scale exactly;
* ``frame``: a 128x128 still taken as an already aligned face frame (as ``sdesr enhance``);
* ``lr``: a 16x16 (or 8x8, for the 16x model) still taken as the LR input itself.

A selection holds the 16x16 LR of the 8x model; :func:`at_scale` gives the one a 16x model
reads (8x8, from the same aligned crop).

The reference HR (for PSNR / SSIM / CS) is known only when the aligned crop was not enlarged,
i.e. the face had at least as many pixels as the frame; otherwise it is ``None``.  A hand-drawn
box can hold anything, so before its crop counts as a reference HR the GUI looks for a face in it
(:func:`crop_has_face`, in a worker) and, when there is none, uses it without a reference
(:func:`without_reference`) unless the analyst insists.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from . import faces

FRAME = faces.FRAME_SIZE
LR = faces.LR_SIZE
GENUINE_NOTE = "The face had enough pixels: the aligned crop serves as the reference HR."
#: the warning when the face detector finds no face in a hand-drawn box's crop
NO_FACE_IN_BOX = ("No face was found in the drawn box; metrics against it as the reference HR "
                  "would be meaningless.")
NO_FACE_NOTE = NO_FACE_IN_BOX + " It is not used as the reference HR."
NO_FACE_KEPT_NOTE = NO_FACE_IN_BOX + " It is used as the reference HR anyway, as asked."
NO_FACE_QUESTION = ("No face was found in the drawn box; metrics against it will be meaningless. "
                    "Use it as the reference HR anyway?")
#: how sure MTCNN must be that the crop shows a face (a face filling the frame scores ~0.99+)
BOX_FACE_MIN_PROB = 0.9


@dataclasses.dataclass
class FaceSelection:
    kind: str  # detected | manual | eyes | frame | lr
    frame_index: int
    lr: np.ndarray  # 16x16x3 (8x8x3 at 16x) uint8: the model's input
    crop: Optional[np.ndarray]  # 128x128x3 uint8 aligned crop (None for an LR still)
    reference: Optional[np.ndarray]  # 128x128x3 uint8 when the crop is genuine HR
    box: Optional[tuple[float, float, float, float]] = None
    prob: Optional[float] = None
    matrix: Optional[np.ndarray] = None  # 2x3 image -> frame
    note: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)  # core.faces.AlignedFace.to_dict()
    eyes: Optional[np.ndarray] = None

    @property
    def scale(self) -> int:
        """The magnification this selection's LR is for (8: 16x16, 16: 8x8)."""
        return FRAME // int(self.lr.shape[0])

    @property
    def bicubic(self) -> np.ndarray:
        """The bicubic baseline (the score network's conditioning ``y_up``) as uint8."""
        return faces.to_uint8(faces.upsample(faces.to_tensor(self.lr)))[0]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "frame_index": int(self.frame_index)}
        d.update(self.details)
        if self.box is not None and "box" not in d:
            d["box"] = [round(float(v), 2) for v in self.box]
        d["reference_hr"] = self.reference is not None
        if self.note:
            d["note"] = self.note
        return d


_KINDS = {"landmarks": "detected", "box": "manual", "eyes": "eyes"}


def _from_aligned(af, frame_index: int) -> FaceSelection:
    ref = af.crop if af.genuine_hr else None
    note = af.note or (GENUINE_NOTE if ref is not None else "")
    return FaceSelection(_KINDS.get(af.method, af.method), frame_index, af.lr, af.crop, ref,
                         box=tuple(float(v) for v in af.box),
                         prob=float(af.face.prob) if af.face is not None else None,
                         matrix=np.asarray(af.matrix), note=note, details=af.to_dict(),
                         eyes=None if af.eyes is None else np.asarray(af.eyes))


def from_detection(image: np.ndarray, face, frame_index: int = 0) -> FaceSelection:
    """Align a detected face (``core.faces.Face``) onto the frame."""
    return _from_aligned(faces.extract_face(image, face=face), frame_index)


def from_box(image: np.ndarray, box, frame_index: int = 0, eyes=None) -> FaceSelection:
    """Align a hand-drawn box (x0, y0, x1, y1), optionally refined by two eye clicks."""
    return _from_aligned(faces.extract_face(image, box=tuple(float(v) for v in box) if box is not None else None,
                                            eyes=eyes), frame_index)


def from_eyes(image: np.ndarray, eyes, box=None, frame_index: int = 0) -> FaceSelection:
    """Align by two eye clicks ((x, y) of the image-left eye, then the image-right eye)."""
    e = sorted((tuple(map(float, p)) for p in eyes), key=lambda p: p[0])
    return from_box(image, box, frame_index, eyes=e)


def crop_has_face(crop: np.ndarray, min_prob: float = BOX_FACE_MIN_PROB) -> bool:
    """Whether MTCNN finds a face in an aligned 128x128 crop (heavy: call it off the GUI thread).

    A face aligned into the frame is large, so the crop is scanned once, without upscaling."""
    return bool(faces.detect_faces(crop, min_face=20, upscale_small=False, min_prob=min_prob))


def without_reference(sel: FaceSelection, note: str = NO_FACE_NOTE) -> FaceSelection:
    """``sel`` with no reference HR (its crop is still the face to enhance), saying why."""
    details = dict(sel.details)
    details["face_in_box"] = False
    return dataclasses.replace(sel, reference=None, note=note, details=details)


def at_scale(sel: FaceSelection, scale: int, why: str = "") -> FaceSelection:
    """``sel`` with the LR of the ``scale`` model (8: 16x16, 16: 8x8) made from its aligned crop
    (a 16x16 LR still is bicubic-upsampled and degraded to 8x8); ``why`` goes into the details.

    Raises :class:`InputError` for an 8x8 LR still asked to feed the 8x model."""
    from .errors import InputError

    size = FRAME // int(scale)
    if size not in (8, 16):
        raise InputError(f"There is no {scale}x model; the magnification is 8x or 16x.")
    if sel.lr.shape[0] == size:
        out = sel
    elif sel.crop is not None:
        out = dataclasses.replace(sel, lr=faces.lr_from_frame(sel.crop, size))
    elif size < sel.lr.shape[0]:
        up = faces.upsample(faces.to_tensor(sel.lr))
        out = dataclasses.replace(sel, lr=faces.to_uint8(faces.degrade(up, size))[0])
    else:
        n = sel.lr.shape[0]
        raise InputError(f"This {n}x{n} LR input has too few pixels for the {scale}x model ({size}x{size} input); "
                         f"use the {FRAME // n}x model.")
    details = dict(out.details, scale=int(scale), lr_size=size)
    if why:
        details["scale_why"] = why
    return dataclasses.replace(out, details=details)


def whole_image(image: np.ndarray, frame_index: int = 0) -> Optional[FaceSelection]:
    """A 128x128 still as the face frame, or a 16x16 (8x8) still as the LR; ``None`` otherwise."""
    h, w = image.shape[:2]
    rgb = np.ascontiguousarray(image[:, :, :3])
    role = faces.image_role(image)
    if role == "frame":
        return FaceSelection("frame", frame_index, faces.lr_from_frame(rgb), rgb, rgb,
                             box=(0.0, 0.0, float(w), float(h)), matrix=np.eye(2, 3),
                             note="The whole image is taken as an aligned 128×128 face frame "
                                  "(it is its own reference HR).")
    if role == "lr" or faces.image_role(image, FRAME, FRAME // 16) == "lr":
        return FaceSelection("lr", frame_index, rgb, None, None, box=(0.0, 0.0, float(w), float(h)),
                             note=f"The whole image is taken as the {w}×{h} LR input"
                                  + (" of the 16× model" if w == FRAME // 16 else "") + "; no reference HR.")
    return None
