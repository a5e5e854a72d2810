"""What the samples can and cannot tell: where K samples of one face disagree (Qt-free).

K samples of the same LR face are K plausible faces.  Where they agree, the LR constrains the
detail; where they disagree, the detail is invented.  The per-pixel standard deviation over the
samples makes that visible, and (DESIGN.md, "What the samples can and cannot tell") it predicts
the error of the mean estimate: RMS(mean estimate - HR) / RMS(std) close to 1, and the std ranks
the patches where the mean estimate is wrong.

* :func:`uncertainty_map` -- K >= 2 samples -> :class:`UncertaintyMap`: per-pixel sample mean
  and std (unbiased, ddof = 1 over the samples, then the mean over RGB; [0, 1] units, float32
  HxW), the share of the face whose std exceeds :data:`DEFAULT_THRESHOLD`, each sample's RMS
  distance to the sample mean, and summaries over the named regions of the 128x128 face frame
  (:data:`REGIONS`).  One sample is no map: :class:`NotEnoughSamples`.
* :func:`running_std_map` -- the same std over the sampler's current denoised estimates, cheap
  enough for every preview frame of a live view.
* :func:`render_std_map` (map + labelled scale bar), :func:`colorize`, :func:`overlay` --
  images for files, reports and the GUI, in the cividis colour map (:data:`CIVIDIS_ANCHORS`).
* :func:`rms_error`, :func:`calibration_ratio`, :func:`patch_spearman`,
  :func:`compare_with_reference` -- how well the std predicts the actual error of an estimate
  against a known HR face (the CLI record and ``scripts/uncertainty_eval.py`` use these).
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from . import metrics
from .errors import InputError
from .faces import FRAME_SIZE, TEMPLATE_LANDMARKS

__all__ = [
    "DEFAULT_THRESHOLD",
    "SCALE_KEY",
    "SCALE_WHAT",
    "model_scale",
    "run_scale",
    "started_near_mean",
    "NEAR_MEAN_NOTE",
    "THRESHOLD_REASON",
    "DEFAULT_VMAX",
    "PATCH",
    "CAPTION",
    "WHAT",
    "NotEnoughSamples",
    "Region",
    "REGIONS",
    "FACE_BOX",
    "region_masks",
    "UncertaintyMap",
    "uncertainty_map",
    "no_map_record",
    "AGREE_BELOW",
    "DISAGREE_FROM",
    "region_agreement",
    "running_std_map",
    "CIVIDIS_ANCHORS",
    "colormap_lut",
    "colorize",
    "render_std_map",
    "overlay",
    "save_std_npy",
    "rms_error",
    "calibration_ratio",
    "patch_means",
    "patch_spearman",
    "compare_with_reference",
]

#: std (in [0, 1] units) above which a pixel counts as invented detail.
DEFAULT_THRESHOLD = 0.1
#: why :data:`DEFAULT_THRESHOLD` is 0.1 (recorded with every map)
THRESHOLD_REASON = (
    "0.1 of the intensity range (25 of 255 grey levels): two samples then differ by about 0.14, a "
    "difference anyone sees; and since the std predicts the mean estimate's RMS error (ratio near 1), "
    "std > 0.1 marks pixels whose expected error exceeds 0.1, i.e. a local PSNR below 20 dB")
#: top of the colour scale of rendered maps (std in [0, 1] units; larger values are clipped)
DEFAULT_VMAX = 0.2
#: side of the square patches whose means :func:`patch_spearman` ranks
PATCH = 8
#: the words printed with every rendered map
CAPTION = "bright = samples disagree = invented detail"
#: what the std of an :class:`UncertaintyMap` is (recorded with every map)
WHAT = ("per-pixel standard deviation over K samples of the same input (unbiased, ddof=1), then the mean "
        "over RGB, in [0, 1] units; " + CAPTION)

#: the score model's metadata key of its map scale (see :func:`model_scale`)
SCALE_KEY = "uncertainty_scale"
#: what a scale other than 1 means (recorded with every scaled map)
SCALE_WHAT = ("the samples' std times the model's calibration factor, measured on validation faces that "
              "the evaluation does not use (scripts/uncertainty_eval.py --fit): a network's own mean estimate "
              "errs more than its samples spread, and the factor makes the map predict that error again")

ImageStack = Union[torch.Tensor, np.ndarray, Sequence[np.ndarray]]


def model_scale(info: Any) -> float:
    """The map scale a score model carries (its metadata / ``Enhancer.model_info`` key
    :data:`SCALE_KEY`); 1.0 when it has none or the value is unusable."""
    try:
        v = float((info or {}).get(SCALE_KEY, 1.0))
    except (TypeError, ValueError, AttributeError):
        return 1.0
    return v if np.isfinite(v) and 0.1 <= v <= 10.0 else 1.0


#: what the map of samples started from the mean estimate (``start_sigma``) is, and is not
NEAR_MEAN_NOTE = ("the samples started from the mean estimate at a lower noise level (start_sigma), so they "
                  "differ only in the detail drawn below it: the map understates what the LR leaves open and "
                  "carries no calibration factor")


def started_near_mean(settings: Any) -> bool:
    """Whether a run's samples started from the mean estimate: a ``start_sigma`` in ``settings``
    (a run record's dict or a SamplerSettings; None or missing = posterior samples)."""
    if isinstance(settings, dict):
        return settings.get("start_sigma") is not None
    return getattr(settings, "start_sigma", None) is not None


def run_scale(model_info: Any, settings: Any) -> float:
    """The map scale of one run's samples: the model's calibration factor (:func:`model_scale`)
    for posterior samples, 1.0 for samples started from the mean estimate
    (:func:`started_near_mean`), whose smaller spread it was not fitted to."""
    return 1.0 if started_near_mean(settings) else model_scale(model_info)


class NotEnoughSamples(InputError):
    """Fewer than two samples: they cannot disagree, so no map is claimed."""


# ------------------------------------------------------------------------------------------
# regions of the canonical face frame
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Region:
    """A named part of the 128x128 face frame: one or more boxes (x0, y0, x1, y1), half-open
    pixel ranges; ``outside`` marks the region that is everything outside :data:`FACE_BOX`."""

    name: str
    label: str
    boxes: tuple[tuple[int, int, int, int], ...] = ()
    outside: bool = False


def _derive_regions(lm: np.ndarray) -> tuple[tuple[int, int, int, int], dict[str, Region]]:
    """The region table from the 5 template landmarks (eyes, nose, mouth corners), in units of
    the inter-ocular distance d (28.1 px): eyes d x 0.72 by d x 0.44 around each eye; the nose
    from below the eyes to halfway to the mouth line; the mouth from there to 0.3 d below the
    mouth line, 0.2 d beyond each corner; the jaw (chin) from there down to 0.8 x the eye-mouth
    distance below the mouth line; the face box 0.8 d beside each eye, 0.9 d above the eye line,
    down to the chin.  Boxes share edges, so the face regions do not overlap."""
    le, re_, nose, ml, mr = (np.asarray(p, dtype=np.float64) for p in lm)
    d = re_[0] - le[0]
    eye_y = (le[1] + re_[1]) / 2
    mouth_y = (ml[1] + mr[1]) / 2
    eye_top, eye_bottom = eye_y - 0.22 * d, eye_y + 0.22 * d
    nose_bottom = (nose[1] + mouth_y) / 2
    mouth_bottom = mouth_y + 0.3 * d
    chin = mouth_y + 0.8 * (mouth_y - eye_y)

    def box(x0, y0, x1, y1):
        return tuple(int(round(float(v))) for v in (x0, y0, x1, y1))

    face = box(le[0] - 0.8 * d, eye_y - 0.9 * d, re_[0] + 0.8 * d, chin)
    regions = [
        Region("eyes", "eyes", (box(le[0] - 0.36 * d, eye_top, le[0] + 0.36 * d, eye_bottom),
                                box(re_[0] - 0.36 * d, eye_top, re_[0] + 0.36 * d, eye_bottom))),
        Region("nose", "nose", (box(nose[0] - 0.3 * d, eye_bottom, nose[0] + 0.3 * d, nose_bottom),)),
        Region("mouth", "mouth", (box(ml[0] - 0.2 * d, nose_bottom, mr[0] + 0.2 * d, mouth_bottom),)),
        Region("jaw", "jaw and chin", (box(le[0] - 0.2 * d, mouth_bottom, re_[0] + 0.2 * d, chin),)),
        Region("hair_background", "hair and background (outside the face box)", (), outside=True),
    ]
    return face, {r.name: r for r in regions}


#: the face box (x0, y0, x1, y1) of the 128x128 frame, and the named regions (the one table)
FACE_BOX, REGIONS = _derive_regions(TEMPLATE_LANDMARKS)


def _scaled(b: tuple[int, int, int, int], h: int, w: int) -> tuple[int, int, int, int]:
    if (h, w) == (FRAME_SIZE, FRAME_SIZE):
        return b
    sx, sy = w / FRAME_SIZE, h / FRAME_SIZE
    return (int(round(b[0] * sx)), int(round(b[1] * sy)), int(round(b[2] * sx)), int(round(b[3] * sy)))


def _box_mask(boxes, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    for b in boxes:
        x0, y0, x1, y1 = _scaled(b, h, w)
        m[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return m


def region_masks(h: int = FRAME_SIZE, w: int = FRAME_SIZE) -> dict[str, np.ndarray]:
    """Boolean HxW masks: ``"face"`` (the face box) and every region of :data:`REGIONS`
    (boxes scaled from the 128x128 frame when the map has another size)."""
    face = _box_mask([FACE_BOX], h, w)
    out = {"face": face}
    for name, r in REGIONS.items():
        out[name] = ~face if r.outside else _box_mask(r.boxes, h, w)
    return out


# ------------------------------------------------------------------------------------------
# the map
# ------------------------------------------------------------------------------------------
def _as_stack(samples: ImageStack) -> np.ndarray:
    """[K, 3, H, W] float tensor in [0, 1], [K, H, W, 3] uint8 / float array, or a list of HxWx3
    images -> float64 [K, H, W, 3] in [0, 1]."""
    if isinstance(samples, (list, tuple)) and len(samples) == 0:
        raise NotEnoughSamples(_no_map_sentence(0))
    batch, single = metrics.as_image_batch(samples)
    if single:
        raise NotEnoughSamples(_no_map_sentence(1))
    if batch.shape[1] != 3:
        raise ValueError(f"expected RGB samples, got {batch.shape[1]} channels")
    x = batch.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()
    if not np.all(np.isfinite(x)):
        raise ValueError("the samples contain NaN or infinite values")
    return x


def _no_map_sentence(k: int) -> str:
    n = "one sample" if k == 1 else f"{k} samples"
    return (f"An uncertainty map needs at least two samples of the same face and there is {n}, "
            f"so no map of invented detail can be made; sample two or more")


@dataclasses.dataclass
class UncertaintyMap:
    """Where K samples of one face disagree (see the module docstring).

    ``sample_mean`` is the per-pixel average of the samples -- *not* the model's mean
    estimate (``EnhanceResult.mean``), the network's estimate at the top noise level.
    """

    samples: int  # K
    sample_mean: np.ndarray  # float32 HxWx3 in [0, 1]
    std: np.ndarray  # float32 HxW, [0, 1] units (ddof = 1 over samples, mean over RGB)
    threshold: float
    share_above: float  # of the face box: share of its pixels with std > threshold
    sample_rms: list[float]  # each sample's RMS distance to the sample mean, [0, 1] units
    regions: dict[str, dict[str, Any]]  # name -> {label, boxes, pixels, mean_std, share_above}
    scale: float = 1.0  # the model's calibration factor the std was multiplied by (SCALE_WHAT)

    @property
    def mean_std(self) -> float:
        """Mean of the std over the whole frame."""
        return float(self.std.mean(dtype=np.float64))

    @property
    def rms_std(self) -> float:
        """RMS of the std over the whole frame (the denominator of :func:`calibration_ratio`)."""
        return float(np.sqrt(np.mean(self.std.astype(np.float64) ** 2)))

    @property
    def face_mean_std(self) -> float:
        return float(self.std[region_masks(*self.std.shape)["face"]].mean(dtype=np.float64))

    def to_dict(self) -> dict[str, Any]:
        """The run record's ``uncertainty`` block (JSON-ready, no arrays)."""
        return {
            "map": True,
            "samples": int(self.samples),
            "what": WHAT,
            "mean_std": round(self.mean_std, 6),
            "rms_std": round(self.rms_std, 6),
            "max_std": round(float(self.std.max()), 6),
            "face_mean_std": round(self.face_mean_std, 6),
            "threshold": float(self.threshold),
            "threshold_reason": THRESHOLD_REASON,
            "share_above_threshold": round(float(self.share_above), 6),
            "share_of": f"the face box {list(FACE_BOX)} (x0, y0, x1, y1) of the 128x128 frame",
            "regions": {k: dict(v) for k, v in self.regions.items()},
            "sample_rms_to_mean": [round(float(v), 6) for v in self.sample_rms],
            "std_scale": float(self.scale),
            **({"std_scale_what": SCALE_WHAT} if self.scale != 1.0 else {}),
        }


def uncertainty_map(samples: ImageStack, *, threshold: float = DEFAULT_THRESHOLD,
                    scale: float = 1.0) -> UncertaintyMap:
    """The map of K >= 2 samples of one input.

    ``samples``: a ``[K, 3, H, W]`` float tensor in [0, 1], a ``[K, H, W, 3]`` uint8 (or float
    in [0, 1]) array, or a list of HxWx3 images.  Raises :class:`NotEnoughSamples` (one
    sentence) for K < 2: one sample cannot show what is invented, and no map is claimed.
    ``scale``: the model's calibration factor (:func:`model_scale`); the std, the threshold
    share and the region numbers are of the scaled std.  The samples' RMS distances are not.
    """
    if not threshold > 0:
        raise ValueError("The uncertainty threshold must be positive.")
    if not scale > 0:
        raise ValueError("The uncertainty scale must be positive.")
    x = _as_stack(samples)
    k, h, w, _ = x.shape
    if k < 2:
        raise NotEnoughSamples(_no_map_sentence(k))
    mean = x.mean(axis=0)
    std = x.std(axis=0, ddof=1).mean(axis=-1) * float(scale)
    rms = np.sqrt(((x - mean) ** 2).reshape(k, -1).mean(axis=1))
    masks = region_masks(h, w)
    above = std > threshold
    regions = {}
    for name, r in REGIONS.items():
        m = masks[name]
        n = int(m.sum())
        regions[name] = {
            "label": r.label,
            "boxes": [list(b) for b in r.boxes] if not r.outside else [],
            "outside_face_box": bool(r.outside),
            "pixels": n,
            "mean_std": round(float(std[m].mean()), 6) if n else None,
            "share_above_threshold": round(float(above[m].mean()), 6) if n else None,
        }
    face = masks["face"]
    return UncertaintyMap(int(k), mean.astype(np.float32), std.astype(np.float32), float(threshold),
                          float(above[face].mean()), [float(v) for v in rms], regions, float(scale))


def no_map_record(samples: int) -> dict[str, Any]:
    """The ``uncertainty`` block of a run with fewer than two samples: no map is claimed."""
    return {"map": False, "samples": int(samples), "note": f"no map (K = {int(samples)}): "
            + _no_map_sentence(int(samples))[0].lower() + _no_map_sentence(int(samples))[1:] + "."}


#: a region whose share of pixels above the threshold is below this: "samples agree"
AGREE_BELOW = 0.05
#: ... at or above this: "samples disagree -- detail invented" (in between: "partly disagree")
DISAGREE_FROM = 0.25
_VERDICT_TEXT = {"agree": "samples agree",
                 "partly": "samples partly disagree — some detail invented",
                 "disagree": "samples disagree — detail invented"}


def region_agreement(umap: "UncertaintyMap") -> list[dict[str, Any]]:
    """The regions of a map in an analyst's words, in :data:`REGIONS` order: per region its
    ``name``, short ``label`` ("hair and background"), ``mean_std``, ``share_above`` (of its
    pixels, std above the map's threshold), a ``verdict`` (``agree`` below :data:`AGREE_BELOW`,
    ``disagree`` from :data:`DISAGREE_FROM`, else ``partly``) and ``text``, e.g.
    "mouth: samples disagree — detail invented".  Regions without pixels are left out."""
    out = []
    for name, r in umap.regions.items():
        share, mean_std = r.get("share_above_threshold"), r.get("mean_std")
        if share is None or mean_std is None:
            continue
        verdict = "agree" if share < AGREE_BELOW else "disagree" if share >= DISAGREE_FROM else "partly"
        label = str(r.get("label", name)).split(" (")[0]
        out.append({"name": name, "label": label, "mean_std": float(mean_std), "share_above": float(share),
                    "verdict": verdict, "text": f"{label}: {_VERDICT_TEXT[verdict]}"})
    return out


@torch.no_grad()
def running_std_map(denoised: torch.Tensor, scale: float = 1.0) -> Optional[np.ndarray]:
    """The live map: std over the K samples' current denoised estimates ``[K, 3, H, W]`` (the
    ``StepInfo.denoised`` of one sampler step), clamped to [0, 1], ddof = 1, mean over RGB,
    times the model's ``scale`` -> float32 HxW; ``None`` when K < 2 (no map is claimed).  About
    a millisecond for K = 8 at 128x128 on a CPU: call it on every preview frame."""
    if denoised.dim() != 4 or denoised.shape[0] < 2:
        return None
    x = denoised.detach().float().clamp(0.0, 1.0)
    return (x.std(dim=0, correction=1).mean(dim=0) * float(scale)).cpu().numpy()


def save_std_npy(path: Union[str, Path], std: np.ndarray) -> str:
    """Write a std map as a float32 ``.npy`` atomically; returns the SHA-256 of the bytes."""
    from .provenance import atomic_write_bytes, sha256_bytes

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(std, dtype=np.float32), allow_pickle=False)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


# ------------------------------------------------------------------------------------------
# colours and images
# ------------------------------------------------------------------------------------------
#: The cividis colour map (Nunez, Anderton & Renslow 2018, "Optimizing colormaps with
#: consideration for color vision deficiency to enable accurate interpretation of scientific
#: data", PLoS ONE 13(7): e0199239): 10 evenly spaced colours of the published map (as listed
#: by R's viridisLite, cividis(10)).  Perceptually uniform, readable with red-green colour
#: blindness, and its lightness rises monotonically, so it survives greyscale printing.
CIVIDIS_ANCHORS = np.array(
    [[0x00, 0x20, 0x4D], [0x00, 0x33, 0x6F], [0x39, 0x48, 0x6B], [0x57, 0x5C, 0x6D], [0x70, 0x71, 0x73],
     [0x8A, 0x87, 0x79], [0xA6, 0x9D, 0x75], [0xC4, 0xB5, 0x6C], [0xE4, 0xCF, 0x5B], [0xFF, 0xEA, 0x46]],
    dtype=np.uint8)
CIVIDIS_ANCHORS.setflags(write=False)


def _luminances(rgb: np.ndarray) -> np.ndarray:
    """[..., 2]: relative luminance (CIE Y of sRGB) and luma (ITU-R 601, what greyscale print uses)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return np.stack([lin @ np.array([0.2126, 0.7152, 0.0722]), c @ np.array([0.299, 0.587, 0.114])], axis=-1)


def colormap_lut(n: int = 256) -> np.ndarray:
    """``n`` colours (uint8 n x 3) interpolated linearly between :data:`CIVIDIS_ANCHORS`.

    Rounding to 8 bits can leave two neighbours equally bright; such an entry takes the nearest
    of its floor / ceil roundings that is brighter than the one before (luminance and luma), so
    brightness rises strictly from the first entry to the last."""
    pos = np.linspace(0.0, 1.0, len(CIVIDIS_ANCHORS))
    t = np.linspace(0.0, 1.0, n)
    a = CIVIDIS_ANCHORS.astype(np.float64)
    exact = np.stack([np.interp(t, pos, a[:, c]) for c in range(3)], axis=1)
    lut = exact.round()
    combos = np.array([[(i >> b) & 1 for b in range(3)] for i in range(8)], dtype=np.float64)
    for i in range(1, n):
        prev = _luminances(lut[i - 1])
        if np.all(_luminances(lut[i]) > prev):
            continue
        cands = np.clip(np.floor(exact[i]) + combos, 0, 255)
        ok = np.all(_luminances(cands) > prev, axis=1)
        if ok.any():
            best = np.argmin(np.where(ok, ((cands - exact[i]) ** 2).sum(axis=1), np.inf))
            lut[i] = cands[best]
    return lut.astype(np.uint8)


_LUT = colormap_lut(256)


def colorize(std: np.ndarray, vmax: float = DEFAULT_VMAX) -> np.ndarray:
    """HxW std map -> HxWx3 uint8 in cividis; 0 is dark blue, ``vmax`` and above bright yellow."""
    if not vmax > 0:
        raise ValueError("The top of the colour scale must be positive.")
    s = np.nan_to_num(np.asarray(std, dtype=np.float64), nan=0.0)
    idx = np.clip(np.round(s / vmax * 255.0), 0, 255).astype(np.intp)
    return _LUT[idx]


def _font():
    """Pillow's built-in font: the scalable one at 12 px where FreeType is available, else the
    small bitmap one."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=12)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def render_std_map(std: np.ndarray, *, vmax: float = DEFAULT_VMAX, threshold: Optional[float] = DEFAULT_THRESHOLD,
                   samples: Optional[int] = None, zoom: int = 2) -> np.ndarray:
    """The std map as an RGB uint8 image with a labelled scale bar, for files and reports.

    The map is enlarged ``zoom`` times (nearest neighbour), a colour bar from 0 to ``vmax``
    ([0, 1] std units, ticks every ``vmax / 4``, the threshold marked) sits below it, and the
    words say how to read it: :data:`CAPTION`.  Black text on white, so it prints in greyscale.
    """
    from PIL import Image, ImageDraw

    s = np.asarray(std, dtype=np.float32)
    if s.ndim != 2:
        raise ValueError(f"expected an HxW std map, got shape {s.shape}")
    zoom = max(int(zoom), 1)
    h, w = s.shape[0] * zoom, s.shape[1] * zoom
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_w(t: str) -> int:
        b = probe.textbbox((0, 0), t, font=font)
        return int(b[2] - b[0])

    line_h = int(probe.textbbox((0, 0), "Ag0.", font=font)[3]) + 3
    mark = threshold is not None and 0 < threshold < vmax
    title = ("std over " + (f"{samples} samples" if samples else "the samples") + ", [0, 1] units"
             + (f"; threshold {threshold:g} marked" if mark else ""))
    lines = [title, CAPTION, "dark = samples agree = constrained by the input"]
    margin, bar_h, tick = 10, 12, 4
    width = max(w, max(text_w(t) for t in lines), 120) + 2 * margin
    height = margin + h + 8 + bar_h + tick + line_h + 4 + line_h * len(lines) + margin
    img = Image.new("RGB", (width, height), (255, 255, 255))
    img.paste(Image.fromarray(colorize(s, vmax)).resize((w, h), Image.NEAREST), (margin, margin))
    d = ImageDraw.Draw(img)
    d.rectangle([margin - 1, margin - 1, margin + w, margin + h], outline=(0, 0, 0))
    # the colour bar spans the map's width
    bar_y = margin + h + 8
    bar_w = w
    bar = np.repeat(_LUT[np.linspace(0, 255, bar_w).round().astype(np.intp)][None], bar_h, axis=0)
    img.paste(Image.fromarray(bar), (margin, bar_y))
    d.rectangle([margin - 1, bar_y - 1, margin + bar_w, bar_y + bar_h], outline=(0, 0, 0))
    label_y = bar_y + bar_h + tick + 1
    for i in range(5):
        v = vmax * i / 4
        x = margin + int(round((bar_w - 1) * i / 4))
        d.line([x, bar_y + bar_h, x, bar_y + bar_h + tick], fill=(0, 0, 0))
        t = f"{v:.2f}" + ("+" if i == 4 else "")
        tx = min(max(x - text_w(t) // 2, margin), margin + bar_w - text_w(t))
        d.text((tx, label_y), t, fill=(0, 0, 0), font=font)
    if mark:
        x = margin + int(round((bar_w - 1) * threshold / vmax))
        d.line([x, bar_y - 4, x, bar_y + bar_h + tick], fill=(0, 0, 0), width=2)
    y = label_y + line_h + 4
    for t in lines:
        d.text((margin, y), t, fill=(0, 0, 0), font=font)
        y += line_h
    return np.asarray(img, dtype=np.uint8).copy()


def overlay(image: np.ndarray, std: np.ndarray, opacity: float = 0.5, vmax: float = DEFAULT_VMAX) -> np.ndarray:
    """The colour-mapped std blended over an HxWx3 uint8 image (a sample or the mean estimate)
    with ``opacity`` in [0, 1] (0: the image alone, 1: the map alone).  The map may be smaller
    than the image by a whole factor (it is enlarged, nearest neighbour)."""
    if not 0.0 <= float(opacity) <= 1.0:
        raise ValueError("The overlay opacity must be between 0 and 1.")
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got {img.dtype} {img.shape}")
    col = colorize(std, vmax)
    fy, fx = img.shape[0] // col.shape[0], img.shape[1] // col.shape[1]
    if fy < 1 or fy != fx or col.shape[0] * fy != img.shape[0] or col.shape[1] * fx != img.shape[1]:
        raise ValueError(f"a {col.shape[1]}x{col.shape[0]} map does not fit a {img.shape[1]}x{img.shape[0]} image")
    if fy > 1:
        col = np.repeat(np.repeat(col, fy, axis=0), fx, axis=1)
    out = (1.0 - opacity) * img.astype(np.float32) + float(opacity) * col.astype(np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------
# does the std predict the error?
# ------------------------------------------------------------------------------------------
def _as_image(x) -> np.ndarray:
    """One image ([1, 3, H, W] / [3, H, W] tensor in [0, 1], HxWx3 uint8 / float) -> float64 HxWx3."""
    batch, _ = metrics.as_image_batch(x)
    if batch.shape[0] != 1:
        raise ValueError(f"expected one image, got {batch.shape[0]}")
    return batch[0].detach().to("cpu", torch.float64).permute(1, 2, 0).numpy()


def _pair(estimate, hr) -> tuple[np.ndarray, np.ndarray]:
    e, r = _as_image(estimate), _as_image(hr)
    if e.shape != r.shape:
        raise ValueError(f"shape mismatch: {e.shape} vs {r.shape}")
    return e, r


def rms_error(estimate, hr) -> float:
    """RMS of (estimate - HR) over all pixels and channels, [0, 1] units."""
    e, r = _pair(estimate, hr)
    return float(np.sqrt(np.mean((e - r) ** 2)))


def calibration_ratio(estimate, hr, std: np.ndarray) -> float:
    """RMS(estimate - HR) / RMS(std): 1 when the samples' spread predicts the estimate's error
    (above 1: the std is too small, over-confident; below 1: too large)."""
    s = np.asarray(std, dtype=np.float64)
    den = float(np.sqrt(np.mean(s ** 2)))
    return rms_error(estimate, hr) / den if den > 0 else float("inf")


def patch_means(a: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """Means of the ``patch`` x ``patch`` tiles of an HxW map (H and W multiples of ``patch``)."""
    a = np.asarray(a, dtype=np.float64)
    h, w = a.shape
    if h % patch or w % patch:
        raise ValueError(f"a {w}x{h} map does not split into {patch}x{patch} patches")
    return a.reshape(h // patch, patch, w // patch, patch).mean(axis=(1, 3))


def patch_spearman(estimate, hr, std: np.ndarray, patch: int = PATCH) -> float:
    """Spearman rank correlation, over the ``patch`` x ``patch`` tiles of the frame, between the
    tile means of the std and of |estimate - HR| (the mean over RGB): does the std find where the
    estimate is wrong?"""
    e, r = _pair(estimate, hr)
    err = np.abs(e - r).mean(axis=-1)
    s = np.asarray(std, dtype=np.float64)
    if s.shape != err.shape:
        raise ValueError(f"shape mismatch: std {s.shape} vs images {err.shape}")
    return metrics.spearman(patch_means(s, patch).ravel(), patch_means(err, patch).ravel())


def compare_with_reference(estimate, hr, umap: Union[UncertaintyMap, np.ndarray], *,
                           patch: int = PATCH) -> dict[str, Any]:
    """The record's ``against_hr`` numbers: the actual error of ``estimate`` (the mean
    estimate) against the HR face, and how well the std predicts it (ratio, patch Spearman),
    over the frame and per region."""
    std = umap.std if isinstance(umap, UncertaintyMap) else np.asarray(umap, dtype=np.float64)
    e, r = _pair(estimate, hr)
    sq = ((e - r) ** 2).mean(axis=-1)
    masks = region_masks(*std.shape)
    regions = {}
    for name in REGIONS:
        m = masks[name]
        if m.any():
            rms_e = float(np.sqrt(sq[m].mean()))
            rms_s = float(np.sqrt(np.mean(np.asarray(std, dtype=np.float64)[m] ** 2)))
            regions[name] = {"rms_error": round(rms_e, 6),
                             "ratio": round(rms_e / rms_s, 6) if rms_s > 0 else None}
    return {
        "rms_error": round(rms_error(e, r), 6),
        "ratio": round(calibration_ratio(e, r, std), 6),
        "ratio_is": "RMS(estimate - HR) / RMS(std); 1 = the std predicts the error",
        "spearman_patch": round(patch_spearman(e, r, std, patch), 6),
        "patch": int(patch),
        "spearman_is": f"Spearman correlation of {patch}x{patch}-patch means of std and |estimate - HR|",
        "regions": regions,
    }
