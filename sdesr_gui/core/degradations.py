"""Footage-grade degradations: how a face in surveillance video becomes its small, dirty LR.

A clean training pair is ``LR = quantize(bicubic_down(HR))``. Real footage adds, in the order it
happens in a camera and an encoder:

1. **optics and motion blur** on the scene, before sampling: a Gaussian (``blur``, HR pixels)
   and a straight motion streak (``motion_len`` HR pixels at ``motion_angle`` degrees);
2. **sampling** to the LR grid (the face is ``lr_size`` pixels wide in the frame);
3. **sensor noise** at the LR grid: signal-independent read noise (``noise``, std in [0, 1]
   units) and signal-dependent shot noise (``shot``: variance ``shot * x``), then 8-bit;
4. **compression**: JPEG (``jpeg`` quality, 100 = off) or an H.264-like intra codec
   (``h264_qp``, 0 = off: YCbCr 4:2:0, 4x4 DCT, H.264's step size ``0.625 * 2**(QP / 6)``, a
   dead-zone quantiser; no intra prediction or deblocking), applied either to the face alone
   (``where="face"``, block grid on the face) or to the frame it sits in (``where="frame"``:
   the face is compressed with surrounding context and a block grid offset by
   ``grid_offset`` LR pixels, as a face lands anywhere in a video frame).

:class:`Degradation` is one recorded, seeded parameter set (:meth:`Degradation.apply` is
deterministic for it); :class:`DegradationMix` draws them for training; :data:`STRENGTHS`
names the fixed sets of the degraded validation set (:func:`degraded_set`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import faces

__all__ = ["Degradation", "DegradationMix", "STRENGTHS", "degrade", "degraded_set",
           "h264_like", "jpeg", "WHERE"]

WHERE = ("face", "frame")
_FRAME_CONTEXT = 8  # LR pixels of context around the face when compressing "in the frame"


def _q8(x: torch.Tensor) -> torch.Tensor:
    return faces.quantize(x)


# --------------------------------------------------------------------------------- blur
def _gauss_kernel(s: float) -> torch.Tensor:
    r = max(1, int(math.ceil(3.0 * s)))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / s) ** 2)
    return k / k.sum()


def _motion_kernel(length: float, angle_deg: float) -> torch.Tensor:
    """A normalised line of ``length`` pixels at ``angle_deg`` (anti-aliased by supersampling)."""
    r = max(1, int(math.ceil(length / 2.0)) + 1)
    size = 2 * r + 1
    k = torch.zeros(size, size)
    a = math.radians(angle_deg)
    n = max(8, int(length * 8))
    for t in np.linspace(-length / 2.0, length / 2.0, n):
        x, y = r + t * math.cos(a), r - t * math.sin(a)
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            if 0 <= y0 + dy < size and 0 <= x0 + dx < size:
                k[y0 + dy, x0 + dx] += w
    return k / k.sum()


def _blur(x: torch.Tensor, p: "Degradation") -> torch.Tensor:
    c = x.shape[1]
    if p.blur > 0:
        k = _gauss_kernel(p.blur)
        r = (len(k) - 1) // 2
        x = F.pad(x, (r, r, r, r), mode="reflect")
        x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        x = F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    if p.motion_len > 0:
        k = _motion_kernel(p.motion_len, p.motion_angle)
        r = (k.shape[0] - 1) // 2
        x = F.pad(x, (r, r, r, r), mode="reflect")
        x = F.conv2d(x, k.view(1, 1, *k.shape).expand(c, 1, *k.shape), groups=c)
    return x


# --------------------------------------------------------------------------------- codecs
def jpeg(lr: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip (OpenCV's libjpeg, 4:2:0) of ``[B, 3, h, w]`` images on the uint8 grid."""
    import cv2

    out = []
    for u8 in faces.to_uint8(lr):
        ok, enc = cv2.imencode(".jpg", np.ascontiguousarray(u8[:, :, ::-1]), [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
        if not ok:  # pragma: no cover - libjpeg does not fail on a valid uint8 image
            raise RuntimeError("JPEG encoding failed")
        out.append(np.ascontiguousarray(cv2.imdecode(enc, cv2.IMREAD_COLOR)[:, :, ::-1]))
    return faces.frames_to_tensor(out)


def _dct4() -> torch.Tensor:
    n = 4
    m = torch.zeros(n, n, dtype=torch.float64)
    for k in range(n):
        for i in range(n):
            m[k, i] = math.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt((1 if k == 0 else 2) / n)
    return m.float()


_D4 = _dct4()
# BT.601 full-range RGB <-> YCbCr (values in 0..255)
_RGB2YCC = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_YCC2RGB = torch.linalg.inv(_RGB2YCC)


def _code_plane(p: torch.Tensor, qstep: float) -> torch.Tensor:
    """4x4 DCT, dead-zone quantisation with step ``qstep`` (rounding offset 1/3, as H.264 intra),
    reconstruction; ``p`` is ``[B, H, W]`` in 0..255 with H, W multiples of 4."""
    b, h, w = p.shape
    blocks = p.reshape(b, h // 4, 4, w // 4, 4).permute(0, 1, 3, 2, 4)
    c = _D4 @ blocks @ _D4.T
    z = torch.sign(c) * torch.floor(c.abs() / qstep + 1.0 / 3.0)
    rec = _D4.T @ (z * qstep) @ _D4
    return rec.permute(0, 1, 3, 2, 4).reshape(b, h, w)


def h264_like(lr: torch.Tensor, qp: int) -> torch.Tensor:
    """An H.264-like intra round trip of ``[B, 3, h, w]`` images (h, w multiples of 8), uint8 grid.

    Luma at full resolution, chroma averaged 2x2 (4:2:0) and coded at twice the step (chroma
    QP runs ahead of luma at high QP); each plane through a 4x4 DCT with H.264's quantiser step
    ``0.625 * 2 ** (qp / 6)`` and a dead-zone of 1/3. What it leaves out (intra prediction,
    CABAC, the deblocking filter) changes bit rates more than the look of the error: 4x4
    blocking, flattened texture and smeared colour.
    """
    qstep = 0.625 * 2.0 ** (float(qp) / 6.0)
    x = lr.float() * 255.0
    ycc = torch.einsum("ij,bjhw->bihw", _RGB2YCC, x)
    y = _code_plane(ycc[:, 0] - 128.0, qstep) + 128.0  # level shift: a flat mid-grey block has no DC to lose
    h, w = x.shape[-2:]
    ch = F.avg_pool2d(ycc[:, 1:], 2)
    ch = torch.stack([_code_plane(ch[:, i], qstep * 2.0) for i in range(2)], 1)
    ch = F.interpolate(ch, size=(h, w), mode="bilinear", align_corners=False)
    rgb = torch.einsum("ij,bjhw->bihw", _YCC2RGB, torch.cat([y[:, None], ch], 1))
    return _q8(rgb / 255.0)


def _pad_context(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Stand-in for the frame around a face: mirrored (textured, not flat) as far as the face
    allows, then edge-replicated."""
    left, right, top, bottom = pad
    h, w = x.shape[-2:]
    m = [min(left, w - 1), min(right, w - 1), min(top, h - 1), min(bottom, h - 1)]
    x = F.pad(x, tuple(m), mode="reflect")
    rest = (left - m[0], right - m[1], top - m[2], bottom - m[3])
    return F.pad(x, rest, mode="replicate") if any(rest) else x


def _compress(lr: torch.Tensor, p: "Degradation") -> torch.Tensor:
    if p.jpeg >= 100 and p.h264_qp <= 0:
        return lr
    h, w = lr.shape[-2:]
    if p.where == "frame":  # the face inside a frame: context around it, block grid offset
        c = _FRAME_CONTEXT
        oy, ox = (int(v) % 8 for v in p.grid_offset)
        x = _pad_context(lr, (c + ox, c + (8 - ox) % 8, c + oy, c + (8 - oy) % 8))
        top, left = c + oy, c + ox
    else:
        ph, pw = (-h) % 8, (-w) % 8
        x = F.pad(lr, (0, pw, 0, ph), mode="replicate") if ph or pw else lr
        top = left = 0
    if p.jpeg < 100:
        x = jpeg(x, p.jpeg)
    if p.h264_qp > 0:
        x = h264_like(x, p.h264_qp)
    return x[..., top:top + h, left:left + w].contiguous()


# --------------------------------------------------------------------------------- parameters
def _from_dict(cls, d: Mapping[str, Any], what: str):
    """``cls(**d)`` with JSON lists back as tuples; unknown keys are refused by name."""
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what}: {', '.join(sorted(unknown))}")
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


@dataclasses.dataclass(frozen=True)
class Degradation:
    """One recorded degradation (all zero / 100 = the clean bicubic LR).

    Blur lengths are in HR pixels of the 128 frame, noise in [0, 1] units at the LR grid.
    """

    blur: float = 0.0
    motion_len: float = 0.0
    motion_angle: float = 0.0
    noise: float = 0.0
    shot: float = 0.0
    jpeg: int = 100
    h264_qp: int = 0
    where: str = "face"
    grid_offset: tuple = (0, 0)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.where not in WHERE:
            raise ValueError(f"where must be one of {WHERE}, not {self.where!r}")
        if not (1 <= int(self.jpeg) <= 100):
            raise ValueError("jpeg quality must be in 1..100 (100 = off)")
        if not (0 <= int(self.h264_qp) <= 51):
            raise ValueError("h264_qp must be in 0..51 (0 = off)")
        if min(self.blur, self.motion_len, self.noise, self.shot) < 0:
            raise ValueError("blur, motion_len, noise and shot must be >= 0")
        object.__setattr__(self, "grid_offset", tuple(int(v) for v in self.grid_offset))

    @property
    def is_clean(self) -> bool:
        return (self.blur == 0 and self.motion_len == 0 and self.noise == 0 and self.shot == 0
                and self.jpeg >= 100 and self.h264_qp <= 0)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["grid_offset"] = list(self.grid_offset)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Degradation":
        return _from_dict(cls, d, "degradation parameters")

    def describe(self) -> str:
        """A short human line: ``blur 1.5 px, noise 5/255, H.264 QP 32 (in frame)``."""
        parts = []
        if self.blur > 0:
            parts.append(f"blur {self.blur:.1f} px")
        if self.motion_len > 0:
            parts.append(f"motion {self.motion_len:.0f} px at {self.motion_angle:.0f} deg")
        if self.noise > 0:
            parts.append(f"noise {self.noise * 255:.1f}/255")
        if self.shot > 0:
            parts.append(f"shot noise {self.shot:.4f}")
        if self.jpeg < 100:
            parts.append(f"JPEG q{self.jpeg}")
        if self.h264_qp > 0:
            parts.append(f"H.264-like QP {self.h264_qp}")
        if not parts:
            return "clean"
        s = ", ".join(parts)
        return s + (" (in frame)" if self.where == "frame" and (self.jpeg < 100 or self.h264_qp > 0) else "")

    def apply(self, hr: torch.Tensor, lr_size: int = faces.LR_SIZE) -> torch.Tensor:
        """Degrade HR ``[3, H, W]`` or ``[B, 3, H, W]`` to the LR grid (same leading shape), on
        the uint8 grid; deterministic for these parameters (the noise is drawn from ``seed``)."""
        x, single = (hr.unsqueeze(0), True) if hr.ndim == 3 else (hr, False)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError("hr must be [3, H, W] or [B, 3, H, W]")
        x = _blur(x.float(), self)
        lr = faces.downsample(x, lr_size)
        if self.noise > 0 or self.shot > 0:
            g = torch.Generator().manual_seed(int(self.seed))
            z = torch.randn(lr.shape, generator=g)
            var = self.noise ** 2 + self.shot * lr.clamp(min=0.0)
            lr = lr + var.sqrt() * z
        lr = _compress(_q8(lr), self)
        return lr[0] if single else lr


def degrade(hr: torch.Tensor, params: Optional[Degradation | Mapping[str, Any]],
            lr_size: int = faces.LR_SIZE) -> torch.Tensor:
    """``params.apply(hr)``; ``None`` or a clean set gives :func:`faces.degrade` exactly."""
    if params is None:
        return faces.degrade(hr, lr_size)
    p = params if isinstance(params, Degradation) else Degradation.from_dict(params)
    if p.is_clean:
        return faces.degrade(hr, lr_size)
    return p.apply(hr, lr_size)


# --------------------------------------------------------------------------------- draws
@dataclasses.dataclass(frozen=True)
class DegradationMix:
    """The random degradations of footage-grade training (SR3+ style): each effect is applied
    with its own probability and a strength drawn from its range; ``p_clean`` of the draws are
    the clean bicubic LR, so the model keeps its clean-input quality."""

    p_clean: float = 0.25
    p_blur: float = 0.6
    blur: tuple = (0.4, 2.5)
    p_motion: float = 0.2
    motion_len: tuple = (2.0, 12.0)
    p_noise: float = 0.7
    noise: tuple = (0.5 / 255.0, 10.0 / 255.0)
    p_shot: float = 0.3
    shot: tuple = (0.0002, 0.003)
    p_compress: float = 0.7
    jpeg: tuple = (25, 90)
    h264_qp: tuple = (22, 36)
    p_h264: float = 0.5
    p_frame: float = 0.5

    def draw(self, rng: np.random.Generator) -> Degradation:
        """One parameter set from ``rng`` (numpy Generator)."""
        seed = int(rng.integers(2 ** 31))
        if rng.random() < self.p_clean:
            return Degradation(seed=seed)
        kw: dict[str, Any] = {"seed": seed}
        if rng.random() < self.p_blur:
            kw["blur"] = round(float(rng.uniform(*self.blur)), 3)
        if rng.random() < self.p_motion:
            kw["motion_len"] = round(float(rng.uniform(*self.motion_len)), 2)
            kw["motion_angle"] = round(float(rng.uniform(0.0, 180.0)), 1)
        if rng.random() < self.p_noise:
            lo, hi = self.noise
            kw["noise"] = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        if rng.random() < self.p_shot:
            kw["shot"] = float(rng.uniform(*self.shot))
        if rng.random() < self.p_compress:
            if rng.random() < self.p_h264:
                kw["h264_qp"] = int(rng.integers(self.h264_qp[0], self.h264_qp[1] + 1))
            else:
                kw["jpeg"] = int(rng.integers(self.jpeg[0], self.jpeg[1] + 1))
            if rng.random() < self.p_frame:
                kw["where"] = "frame"
                kw["grid_offset"] = (int(rng.integers(8)), int(rng.integers(8)))
        return Degradation(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DegradationMix":
        return _from_dict(cls, d, "degradation-mix settings")


#: the fixed strengths of the degraded validation set (noise std in /255 of the LR)
STRENGTHS: dict[str, Degradation] = {
    "clean": Degradation(),
    "mild": Degradation(blur=0.8, noise=2.0 / 255.0, jpeg=75),
    "moderate": Degradation(blur=1.5, noise=5.0 / 255.0, shot=0.0008, h264_qp=32, where="frame",
                            grid_offset=(3, 5)),
    "strong": Degradation(blur=2.0, motion_len=6.0, motion_angle=30.0, noise=9.0 / 255.0, jpeg=40,
                          where="frame", grid_offset=(5, 2)),
}


def degraded_set(hr: torch.Tensor, strengths: Sequence[str] = tuple(STRENGTHS), seed: int = 0,
                 lr_size: int = faces.LR_SIZE) -> dict[str, tuple[torch.Tensor, list[dict[str, Any]]]]:
    """The fixed degraded validation set of HR faces ``[B, 3, H, W]``: for each strength, the
    LR batch and its per-face recorded parameters (the strength's set with a per-face noise
    seed ``seed * 1_000_003 + i``, and grid offset)."""
    out = {}
    for name in strengths:
        if name not in STRENGTHS:
            raise ValueError(f"unknown strength {name!r} (one of {', '.join(STRENGTHS)})")
        base = STRENGTHS[name]
        lrs, recs = [], []
        for i in range(hr.shape[0]):
            p = dataclasses.replace(base, seed=seed * 1_000_003 + i)
            lrs.append(degrade(hr[i], p, lr_size))
            recs.append(dict(p.to_dict(), strength=name))
        out[name] = (torch.stack(lrs), recs)
    return out
