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
    "image_role",
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


def image_role(image_or_shape, frame: int = FRAME_SIZE, lr_size: int = LR_SIZE) -> str:
    """What an image is by its size alone: ``"frame"`` (an aligned frame x frame face, its own
    reference HR), ``"lr"`` (an lr_size x lr_size LR face) or ``"other"`` (to be detected,
    aligned or resized). Takes an HxW[xC] array or its shape."""
    shape = image_or_shape if isinstance(image_or_shape, tuple) else np.shape(image_or_shape)
    hw = tuple(int(v) for v in shape[:2])
    if hw == (frame, frame):
        return "frame"
    if hw == (lr_size, lr_size):
        return "lr"
    return "other"

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


# ==========================================================================================
# Detection (facenet-pytorch MTCNN) and alignment onto the canonical frame
# ==========================================================================================

import dataclasses as _dataclasses
import threading as _threading
from typing import Optional as _Optional

__all__ += [
    "Face",
    "detect_faces",
    "largest_face",
    "similarity_transform",
    "template_landmarks",
    "align_face",
    "detect_and_align",
    "transform_points",
]

#: A smaller image than this (longer side, pixels) is re-scanned upscaled when no face is found.
SMALL_IMAGE_SIDE: int = 640
#: Upscaling factors tried, in order, for small images without a detected face.
UPSCALE_FACTORS: tuple[int, ...] = (2, 4)
#: Longest side an upscaled retry may have (bounds time and memory).
MAX_UPSCALED_SIDE: int = 2048

_MTCNN = None
_MTCNN_LOCK = _threading.Lock()


@_dataclasses.dataclass(frozen=True, eq=False)
class Face:
    """One detected face, in the pixel coordinates of the image it was found in.

    ``box`` is (x0, y0, x1, y1); ``landmarks`` is a 5x2 float array (x, y) of left eye,
    right eye, nose tip, left and right mouth corner (image left/right), the order of
    :data:`TEMPLATE_LANDMARKS`; ``prob`` is MTCNN's face probability.
    """

    box: tuple[float, float, float, float]
    prob: float
    landmarks: np.ndarray

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def eye_distance(self) -> float:
        """Distance between the two eye landmarks (pixels)."""
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))

    def to_dict(self) -> dict:
        """JSON-ready description (for run records)."""
        return {"box": [round(float(v), 2) for v in self.box], "prob": round(float(self.prob), 5),
                "landmarks": [[round(float(v), 2) for v in p] for p in self.landmarks]}


def _get_mtcnn():
    """The process-wide MTCNN (CPU, keep_all), created on first use."""
    global _MTCNN
    if _MTCNN is None:
        from facenet_pytorch import MTCNN  # heavy import, only when detection is needed

        _MTCNN = MTCNN(keep_all=True, device="cpu", select_largest=True, post_process=False)
    return _MTCNN


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 RGB image, got shape {arr.shape}")
    arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating):
            arr = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
        else:
            raise TypeError(f"expected a uint8 image, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def _run_mtcnn(rgb: np.ndarray, min_face: float) -> list[Face]:
    det = _get_mtcnn()
    with _MTCNN_LOCK:
        det.min_face_size = max(int(round(min_face)), 12)
        with torch.no_grad():
            boxes, probs, points = det.detect(rgb, landmarks=True)
    if boxes is None or points is None:
        return []
    # numpy 2: facenet-pytorch hands back object arrays; cast to float
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    points = np.asarray(points, dtype=np.float32).reshape(-1, 5, 2)
    probs = np.asarray([np.nan if p is None else p for p in np.ravel(probs)], dtype=np.float32)
    out = []
    for b, p, lm in zip(boxes, probs, points):
        if not np.all(np.isfinite(b)) or not np.all(np.isfinite(lm)) or not np.isfinite(p):
            continue
        out.append(Face(tuple(float(v) for v in b), float(p), lm.astype(np.float64)))
    return out


def _upscale(rgb: np.ndarray, factor: int) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (w * factor, h * factor), interpolation=cv2.INTER_CUBIC)


def _rescale_face(face: Face, factor: float) -> Face:
    """Map a face found on a ``factor``x upscaled copy back to the original image.

    cv2.resize maps pixel centres: x_up = (x + 0.5) * factor - 0.5.
    """
    def back(v):
        return (np.asarray(v, dtype=np.float64) + 0.5) / factor - 0.5

    return Face(tuple(float(v) for v in back(face.box)), face.prob, back(face.landmarks))


def detect_faces(
    image_uint8: np.ndarray,
    min_face: float = 20,
    upscale_small: bool = True,
    min_prob: float = 0.0,
) -> list[Face]:
    """Detect faces with MTCNN; return them largest first (``[]`` when there is none).

    ``image_uint8`` is an HxWx3 RGB array (gray and RGBA are accepted). ``min_face`` is the
    smallest face side (pixels) MTCNN looks for; ``min_prob`` drops less certain faces.
    With ``upscale_small``, an image whose longer side is below :data:`SMALL_IMAGE_SIDE`
    and where nothing is found is scanned again 2x and then 4x bicubic-upscaled (tiny
    faces in footage); coordinates are mapped back to the original image.
    """
    rgb = _as_rgb_uint8(image_uint8)
    faces = [f for f in _run_mtcnn(rgb, min_face) if f.prob >= min_prob]
    if not faces and upscale_small and max(rgb.shape[:2]) < SMALL_IMAGE_SIDE:
        for factor in UPSCALE_FACTORS:
            if max(rgb.shape[:2]) * factor > MAX_UPSCALED_SIDE:
                break
            found = _run_mtcnn(_upscale(rgb, factor), max(min_face * factor, 20))
            faces = [_rescale_face(f, factor) for f in found if f.prob >= min_prob]
            if faces:
                break
    faces.sort(key=lambda f: f.area, reverse=True)
    return faces


def largest_face(faces: Sequence[Face]) -> _Optional[Face]:
    """The face with the largest box (``None`` for an empty list)."""
    if not faces:
        return None
    return max(faces, key=lambda f: f.area)


def similarity_transform(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection).

    Umeyama (1991): returns the 2x3 matrix ``M`` minimising
    ``sum ||M @ [x, y, 1] - dst||^2`` over the point pairs.
    """
    src = np.asarray(src_pts, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst_pts, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError("similarity_transform needs two equal-length lists of >= 2 points")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = (s_c ** 2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("the source points coincide; no similarity transform exists")
    cov = d_c.T @ s_c / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0  # no reflection
    r = u @ sign @ vt
    scale = float(np.trace(np.diag(d) @ sign) / var_s)
    m = np.zeros((2, 3), dtype=np.float64)
    m[:, :2] = scale * r
    m[:, 2] = mu_d - scale * r @ mu_s
    return m


def transform_points(matrix: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to Nx2 points."""
    p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    m = np.asarray(matrix, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def template_landmarks(size: int = FRAME_SIZE) -> np.ndarray:
    """:data:`TEMPLATE_LANDMARKS` for a ``size x size`` frame (pixel-centre scaling)."""
    if size == FRAME_SIZE:
        return TEMPLATE_LANDMARKS.copy()
    k = size / FRAME_SIZE
    return (TEMPLATE_LANDMARKS + 0.5) * k - 0.5


def align_face(image: np.ndarray, landmarks: np.ndarray,
               size: int = FRAME_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``image`` so the 5 ``landmarks`` land on the template: ``(aligned, matrix)``.

    ``aligned`` is a ``size x size x 3`` uint8 frame (bicubic, border replicated);
    ``matrix`` is the 2x3 similarity from image to frame coordinates.
    """
    import cv2

    rgb = _as_rgb_uint8(image)
    m = similarity_transform(landmarks, template_landmarks(size))
    out = cv2.warpAffine(rgb, m, (int(size), int(size)), flags=cv2.INTER_CUBIC,
                         borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(out), m


def detect_and_align(image: np.ndarray, min_face: float = 20, min_prob: float = 0.0,
                     size: int = FRAME_SIZE, upscale_small: bool = True
                     ) -> _Optional[tuple[np.ndarray, np.ndarray, Face]]:
    """Largest face of ``image`` aligned to the frame: ``(aligned, matrix, face)`` or ``None``."""
    face = largest_face(detect_faces(image, min_face=min_face, upscale_small=upscale_small,
                                     min_prob=min_prob))
    if face is None:
        return None
    aligned, m = align_face(image, face.landmarks, size)
    return aligned, m, face


# ==========================================================================================
# Footage: small faces in large frames, manual boxes and eye clicks, the LR of a face
# ==========================================================================================

__all__ += [
    "MTCNN_BOX_IN_FRAME",
    "AlignedFace",
    "detect_faces_in_frame",
    "box_matrix",
    "eyes_matrix",
    "align_box",
    "lr_from_frame",
    "extract_face",
    "invert_affine",
]

#: Where MTCNN's box of a template-aligned face sits in the 128 frame: centre x, centre y,
#: width, height. Measured as the mean over 299 CelebA aligned photos (std 5.3, 1.9, 2.6, 3.9 px).
#: A hand-drawn box is mapped onto it, so a drawn box should frame the face as a detector would.
MTCNN_BOX_IN_FRAME: tuple[float, float, float, float] = (63.71, 75.53, 59.67, 80.74)

#: Tiles (pixels of the original frame) scanned by the upscaled pass of detect_faces_in_frame.
DETECT_TILE: int = 512
#: Upscaling of each tile in that pass.
DETECT_UPSCALE: int = 2


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _merge(faces_: Sequence[Face], iou: float = 0.3) -> list[Face]:
    """Non-maximum suppression over faces found in overlapping passes (most probable kept)."""
    kept: list[Face] = []
    for f in sorted(faces_, key=lambda f: (-f.prob, -f.area)):
        if all(_iou(f.box, k.box) < iou for k in kept):
            kept.append(f)
    return kept


def _tiles(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = max(tile - overlap, 1)
    starts = list(range(0, length - tile, step)) + [length - tile]
    return sorted(set(starts))


def detect_faces_in_frame(
    image: np.ndarray,
    min_face: float = 12,
    min_prob: float = 0.9,
    upscale: Union[bool, str] = "auto",
    tile: int = DETECT_TILE,
    factor: int = DETECT_UPSCALE,
    cancel=None,
) -> list[Face]:
    """Every face in a frame of footage, largest first, in the frame's pixel coordinates.

    Surveillance faces are small (20-40 px in a 1080p frame is normal), so the frame is first
    scanned whole down to ``min_face`` pixels (MTCNN's smallest is 12). With ``upscale=True``
    -- or ``"auto"`` when that scan found nothing -- the frame is scanned again in overlapping
    ``tile``-pixel tiles, each upscaled ``factor``x (bicubic), which finds faces down to about
    8 px; the results of both passes are merged. ``cancel`` (an Event or a callable) stops the
    tiled pass between tiles.
    """
    rgb = _as_rgb_uint8(image)
    h, w = rgb.shape[:2]
    found = detect_faces(rgb, min_face=max(float(min_face), 12.0), upscale_small=True,
                         min_prob=min_prob)
    if upscale is True or (upscale == "auto" and not found):
        # images below SMALL_IMAGE_SIDE were already rescanned upscaled by detect_faces
        if upscale is True or max(h, w) >= SMALL_IMAGE_SIDE:
            tile = int(max(tile, 64))
            overlap = max(tile // 4, 48)
            extra: list[Face] = []
            for y0 in _tiles(h, tile, overlap):
                for x0 in _tiles(w, tile, overlap):
                    if cancel is not None and (cancel.is_set() if hasattr(cancel, "is_set") else cancel()):
                        break
                    crop = rgb[y0:y0 + tile, x0:x0 + tile]
                    up = _upscale(crop, factor)
                    for f in _run_mtcnn(up, max(8.0 * factor, 12.0)):
                        if f.prob < min_prob:
                            continue
                        g = _rescale_face(f, factor)
                        shift = np.array([x0, y0], dtype=np.float64)
                        extra.append(Face((g.box[0] + x0, g.box[1] + y0, g.box[2] + x0, g.box[3] + y0),
                                          g.prob, g.landmarks + shift))
            found = _merge(list(found) + extra)
    found = [f for f in found if f.prob >= min_prob]
    found.sort(key=lambda f: f.area, reverse=True)
    return found


def box_matrix(box: Sequence[float], size: int = FRAME_SIZE) -> np.ndarray:
    """Similarity (scale and shift, no rotation) putting an image box where MTCNN's box of an
    aligned face sits in the ``size`` frame (:data:`MTCNN_BOX_IN_FRAME`)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(np.isfinite([x0, y0, x1, y1])) or x1 - x0 < 1.0 or y1 - y0 < 1.0:
        raise ValueError("a face box needs x1 > x0 and y1 > y0 (at least one pixel each way)")
    k_frame = size / FRAME_SIZE
    cx, cy, bw, bh = MTCNN_BOX_IN_FRAME
    # geometric mean of the two axis scales keeps the face's aspect (similarity transform)
    k = float(np.sqrt((bw * k_frame) * (bh * k_frame) / ((x1 - x0) * (y1 - y0))))
    tx = (cx + 0.5) * k_frame - 0.5 - k * (x0 + x1) / 2.0
    ty = (cy + 0.5) * k_frame - 0.5 - k * (y0 + y1) / 2.0
    return np.array([[k, 0.0, tx], [0.0, k, ty]], dtype=np.float64)


def eyes_matrix(left_eye: Sequence[float], right_eye: Sequence[float],
                size: int = FRAME_SIZE) -> np.ndarray:
    """Similarity mapping two eye clicks (image left, image right) onto the template's eyes."""
    src = np.array([left_eye, right_eye], dtype=np.float64).reshape(2, 2)
    if not np.all(np.isfinite(src)) or np.linalg.norm(src[1] - src[0]) < 1.0:
        raise ValueError("the two eye positions must be at least one pixel apart")
    if src[1, 0] < src[0, 0]:
        src = src[::-1]  # accept the clicks in either order
    return similarity_transform(src, template_landmarks(size)[:2])


def _warp(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    import cv2

    rgb = _as_rgb_uint8(image)
    out = cv2.warpAffine(rgb, m, (int(size), int(size)), flags=cv2.INTER_CUBIC,
                         borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(out)


def align_box(image: np.ndarray, box: Sequence[float], eyes: _Optional[Sequence] = None,
              size: int = FRAME_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Align a hand-drawn face box (x0, y0, x1, y1), optionally refined by two eye clicks.

    Without ``eyes`` the box is scaled and shifted onto :data:`MTCNN_BOX_IN_FRAME` (no
    rotation); with ``eyes`` = ((lx, ly), (rx, ry)) the eyes land exactly on the template's
    eyes (rotation included) and the box only records where the face was. Returns
    ``(crop, matrix)`` like :func:`align_face`.
    """
    if eyes is not None:
        e = np.asarray(eyes, dtype=np.float64).reshape(2, 2)
        m = eyes_matrix(e[0], e[1], size)
    else:
        m = box_matrix(box, size)
    return _warp(image, m, size), m


def lr_from_frame(frame: np.ndarray, lr_size: int = LR_SIZE) -> np.ndarray:
    """The LR input (``lr_size`` square uint8) of an aligned face frame: :func:`degrade`."""
    return to_uint8(degrade(to_tensor(_as_rgb_uint8(frame)), lr_size))[0]


@_dataclasses.dataclass(eq=False)
class AlignedFace:
    """A face of a frame in the canonical frame, with its LR input and how it got there.

    ``method``: ``"landmarks"`` (detected, 5 points), ``"box"`` (hand-drawn box) or ``"eyes"``
    (two eye clicks). ``magnification`` is frame pixels per image pixel: above ~1 the crop was
    enlarged, so it is not a genuine high-resolution reference. ``small`` flags a face narrower
    than the LR input (``face_width`` < ``lr_size`` image pixels) and ``lr_interpolated`` one
    so small that even the LR input holds more pixels than the image had there
    (``magnification`` > frame / lr). Such faces are processed, not refused.
    """

    crop: np.ndarray
    lr: np.ndarray
    matrix: np.ndarray
    method: str
    box: tuple[float, float, float, float]
    face_width: float
    magnification: float
    small: bool
    lr_interpolated: bool
    face: _Optional[Face] = None
    eyes: _Optional[np.ndarray] = None

    @property
    def genuine_hr(self) -> bool:
        """True when the crop was not enlarged (it can serve as a reference HR)."""
        return self.magnification <= 1.05

    @property
    def note(self) -> str:
        if self.lr_interpolated:
            return (f"The face is only about {self.face_width:.0f} px wide: even the "
                    f"{self.lr.shape[1]}x{self.lr.shape[0]} input is interpolated, so detail "
                    "in any result is invented.")
        if self.small:
            return (f"The face is only about {self.face_width:.0f} px wide, smaller than the "
                    f"{self.lr.shape[1]}x{self.lr.shape[0]} model input.")
        if not self.genuine_hr:
            return (f"The face was enlarged {self.magnification:.1f}x to fill the frame, so the "
                    "crop is no reference HR.")
        return ""

    def to_dict(self) -> dict:
        d = {"method": self.method, "box": [round(float(v), 2) for v in self.box],
             "face_width": round(float(self.face_width), 2),
             "magnification": round(float(self.magnification), 4),
             "alignment_matrix": [[round(float(v), 6) for v in row] for row in self.matrix],
             "small": bool(self.small), "lr_interpolated": bool(self.lr_interpolated),
             "genuine_hr": bool(self.genuine_hr)}
        if self.face is not None:
            d["prob"] = round(float(self.face.prob), 5)
            d["landmarks"] = [[round(float(v), 2) for v in p] for p in self.face.landmarks]
        if self.eyes is not None:
            d["eyes"] = [[round(float(v), 2) for v in p] for p in self.eyes]
        if self.note:
            d["note"] = self.note
        return d


def _matrix_scale(m: np.ndarray) -> float:
    return float(np.sqrt(abs(np.linalg.det(np.asarray(m, dtype=np.float64)[:, :2]))))


def extract_face(image: np.ndarray, face: _Optional[Face] = None, box: _Optional[Sequence[float]] = None,
                 eyes: _Optional[Sequence] = None, size: int = FRAME_SIZE,
                 lr_size: int = LR_SIZE) -> AlignedFace:
    """Align one face of ``image`` and make its LR input.

    Give a detected ``face`` (aligned by its 5 landmarks), or a hand-drawn ``box`` (x0, y0,
    x1, y1), or two ``eyes`` clicks ((lx, ly), (rx, ry)) with or without a box.
    """
    rgb = _as_rgb_uint8(image)
    eyes_arr = None
    if face is not None:
        crop, m = align_face(rgb, face.landmarks, size)
        method, fbox, width = "landmarks", tuple(float(v) for v in face.box), face.width
    elif eyes is not None:
        eyes_arr = np.asarray(eyes, dtype=np.float64).reshape(2, 2)
        crop, m = align_box(rgb, box, eyes_arr, size)
        d = float(np.linalg.norm(eyes_arr[1] - eyes_arr[0]))
        t = template_landmarks(size)
        width = d * (MTCNN_BOX_IN_FRAME[2] * size / FRAME_SIZE) / float(np.linalg.norm(t[1] - t[0]))
        if box is not None:
            fbox = tuple(float(v) for v in box)
        else:  # where the template's box lands in the image
            inv = invert_affine(m)
            cx, cy, bw, bh = MTCNN_BOX_IN_FRAME
            k = size / FRAME_SIZE
            corners = transform_points(inv, [[(cx - bw / 2) * k, (cy - bh / 2) * k],
                                             [(cx + bw / 2) * k, (cy + bh / 2) * k]])
            fbox = (float(corners[:, 0].min()), float(corners[:, 1].min()),
                    float(corners[:, 0].max()), float(corners[:, 1].max()))
        method = "eyes"
    elif box is not None:
        crop, m = align_box(rgb, box, None, size)
        fbox = tuple(float(v) for v in box)
        method, width = "box", fbox[2] - fbox[0]
    else:
        raise ValueError("extract_face needs a detected face, a box or two eye positions")
    mag = _matrix_scale(m) * FRAME_SIZE / size
    lr = lr_from_frame(crop, lr_size)
    return AlignedFace(crop=crop, lr=lr, matrix=m, method=method, box=fbox, face_width=float(width),
                       magnification=mag, small=bool(width < lr_size),
                       lr_interpolated=bool(mag > FRAME_SIZE / lr_size), face=face, eyes=eyes_arr)


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix (frame -> image coordinates)."""
    m = np.asarray(m, dtype=np.float64)
    a = m[:, :2]
    inv = np.linalg.inv(a)
    return np.hstack([inv, -inv @ m[:, 2:3]])
