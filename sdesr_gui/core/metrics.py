"""Image-quality and identity metrics with the project's exact definitions (see DESIGN.md).

* PSNR / SSIM: SR vs HR, RGB in [0, 1], data range 1. SSIM uses an 11x11 Gaussian window
  (sigma 1.5), K1 = 0.01, K2 = 0.03, population covariance, the mean over the map with a
  (win-1)/2 border cropped, then the mean over RGB channels -- identical to scikit-image's
  ``structural_similarity(..., channel_axis=-1, data_range=1, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False)``.
* Consistency: MSE in [0, 255] units between ``downsample(sr, lr_size)`` and the LR input.
* CS: cosine similarity of face-recognition embeddings of SR and HR.
* Rank-N identification and verification AUC (Mann-Whitney, ties count half).

:data:`METRICS` is the one table of what each number means (label, unit, direction, range and a
one-line explanation), keyed by the names the records use; the GUI captions and tooltips, the
JSON records' ``metric_legend`` block, the HTML report and the CLI tables all read it
(:func:`format_metric`, :func:`metric_header`, :func:`metric_tooltip`, :func:`metric_legend`).

Image inputs may be float tensors ``[B, 3, H, W]`` / ``[3, H, W]`` in [0, 1], or numpy
HxWx3 arrays (uint8, or float in [0, 1]) / BxHxWx3 stacks. Batched inputs give a tensor of
per-image values ``[B]``; a single unbatched image gives a Python float. All functions are
pure (no state, inputs untouched). Qt-free.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .faces import downsample

__all__ = [
    "MetricInfo",
    "METRICS",
    "format_value",
    "format_metric",
    "metric_header",
    "metric_tooltip",
    "metric_legend",
    "metric_keys_in",
    "as_image_batch",
    "psnr",
    "ssim",
    "consistency",
    "cosine_similarity",
    "image_metrics",
    "lr_mismatch",
    "LR_MISMATCH_FACTOR",
    "LR_MISMATCH_MARGIN",
    "l2_normalize",
    "rank_of_true",
    "cs",
    "identity_ranks",
    "rank_n",
    "spearman",
    "verification_auc",
]

ImageInput = Union[torch.Tensor, np.ndarray]
Result = Union[torch.Tensor, float]

SSIM_WIN = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


# ------------------------------------------------------------------------------------------
# what each number means: the one table
# ------------------------------------------------------------------------------------------
#: ``MetricInfo.better`` -> its arrow and its words
_DIRECTIONS = {"higher": ("↑", "higher is better"),
               "lower": ("↓", "lower is better"),
               "near 1": ("→1", "closer to 1 is better")}


@dataclasses.dataclass(frozen=True)
class MetricInfo:
    """What one metric is: how it is labelled, in what unit, which way is better, its range and
    a one-line explanation (``line``, the tooltip and the legend). ``gist`` is the few words
    that go in brackets after a value; ``fmt`` the format spec of its value; ``unit_long`` the
    unit spelled out for the legend (default: ``unit``, or "none" for a pure number)."""

    label: str
    unit: str  # written after the value ("" when it has none)
    better: str  # a key of _DIRECTIONS
    range: str
    gist: str
    line: str
    fmt: str = ".3f"
    unit_long: str = ""

    @property
    def unit_name(self) -> str:
        return self.unit_long or self.unit or "none"

    @property
    def arrow(self) -> str:
        return _DIRECTIONS[self.better][0]

    @property
    def direction(self) -> str:
        return _DIRECTIONS[self.better][1]


_STD_UNITS = "[0, 1] units: 0.1 = 25 of 255 grey levels"
_STD_UNIT = "[0, 1] intensity units (the std of pixel values in [0, 1])"

#: Every metric a record, a table, the report or the GUI shows, keyed by its name in the records
#: (the names are the JSON keys users read: never rename them). A new metric gets a row here
#: before it is shown anywhere (tests/test_metric_legend.py fails otherwise).
METRICS: dict[str, MetricInfo] = {
    "psnr": MetricInfo(
        "PSNR", "dB", "higher", "0 to ∞ (∞ = identical)", "vs reference HR",
        "Peak signal-to-noise ratio of this image against the reference HR (128×128 RGB, data range "
        "1): pixel accuracy; +3 dB is about half the squared error.", ".2f", "dB (decibel)"),
    "ssim": MetricInfo(
        "SSIM", "", "higher", "-1 to 1 (1 = identical)", "vs reference HR",
        "Structural similarity to the reference HR (11×11 Gaussian window, σ 1.5, mean over RGB): "
        "agreement of local brightness, contrast and structure.", ".3f"),
    "consistency": MetricInfo(
        "consistency", "(0–255)²", "lower", "0 to 65025 (0 = reproduces the LR exactly)",
        "MSE vs the LR input, 0–255 scale",
        "Mean squared error between this image bicubic-downsampled (antialiased) to the LR size "
        "(16×16) and the LR input, on the 0–255 scale: does it explain the input? 0 = exactly; "
        "its square root is the typical difference in grey levels.", ".2f",
        "squared 8-bit grey levels, (0–255)²"),
    "cs": MetricInfo(
        "CS", "", "higher", "-1 to 1 (1 = the same embedding direction)", "identity cosine vs reference HR",
        "Cosine similarity of face-recognition embeddings (dlib by default; in the GUI the "
        "gallery's embedder) of this image and the reference HR: does it keep the identity?", ".3f"),
    # what is invented (core.uncertainty): the std over K samples of the same input
    "mean_std": MetricInfo(
        "mean std", "", "lower", f"0 to 0.71 ({_STD_UNITS})", "std over the samples, whole frame",
        "Mean over the frame (or a region) of the per-pixel standard deviation over the K samples: "
        "how much they disagree (lower = the input constrains more of the detail).", ".3f", _STD_UNIT),
    "face_mean_std": MetricInfo(
        "face mean std", "", "lower", f"0 to 0.71 ({_STD_UNITS})", "std over the samples, face box",
        "Mean over the face box of the per-pixel standard deviation over the K samples (lower = "
        "the samples agree on the face).", ".3f", _STD_UNIT),
    "rms_std": MetricInfo(
        "RMS std", "", "lower", f"0 to 0.71 ({_STD_UNITS})", "std over the samples, RMS",
        "Root mean square over the frame of the per-pixel std over the K samples (the "
        "denominator of the calibration ratio).", ".3f", _STD_UNIT),
    "max_std": MetricInfo(
        "max std", "", "lower", f"0 to 0.71 ({_STD_UNITS})", "largest std of a pixel",
        "The largest per-pixel standard deviation over the K samples.", ".3f", _STD_UNIT),
    "share_above_threshold": MetricInfo(
        "share above threshold", "", "lower", "0 to 1 (a fraction of the pixels)",
        "pixels whose std exceeds the threshold",
        "Fraction of the face box's pixels (of a region's, per region) whose std over the samples "
        "exceeds the threshold (0.1): the share of detail that is invented.", ".0%",
        "fraction (shown as %)"),
    "sample_rms_to_mean": MetricInfo(
        "sample RMS to mean", "", "lower", "0 to 1 ([0, 1] units), one per sample",
        "each sample's distance to the samples' average",
        "RMS difference between each sample and the per-pixel average of the samples "
        "([0, 1] units): how far each sample strays from the others.", ".3f",
        "[0, 1] intensity units"),
    "rms_error": MetricInfo(
        "RMS error", "", "lower", "0 to 1 ([0, 1] units; 0.1 = 25 grey levels)",
        "mean estimate vs reference HR",
        "Root mean square error of the mean estimate against the reference HR, [0, 1] units: "
        "its actual error.", ".3f", "[0, 1] intensity units"),
    "std_scale": MetricInfo(
        "std scale", "", "near 1", "0.1 to 10 (1 = the samples' own std)", "the model's map calibration factor",
        "The factor the std over the samples was multiplied by: the score model's calibration factor, "
        "measured on validation faces as its mean estimate's error over the samples' std (1 = the plain std; "
        "above 1, the model's samples agree more than its errors warrant).", ".3f"),
    "ratio": MetricInfo(
        "calibration ratio", "", "near 1", "0 to ∞ (1 = calibrated)", "RMS error / RMS std",
        "RMS(mean estimate − HR) / RMS(std over the samples): 1 = the std predicts the error; above 1 "
        "the map is over-confident, below 1 too cautious.", ".2f"),
    "spearman_patch": MetricInfo(
        "patch Spearman", "", "higher", "-1 to 1", "std vs error, rank correlation over 8×8 patches",
        "Spearman rank correlation over 8×8 patches between the mean std and the mean |mean "
        "estimate − HR|: does the map find where the estimate is wrong?", ".2f"),
    # gallery matching (core.gallery, core.calibration)
    "score": MetricInfo(
        "cosine", "", "higher", "-1 to 1", "embedding similarity to a gallery photo",
        "Cosine similarity of the probe's face embedding and a gallery photo's (an identity scores by "
        "its best photo). A raw similarity, not a probability: strangers often score 0.85-0.93 with "
        "dlib; read it with its false-match rate.", ".3f"),
    "mean_score": MetricInfo(
        "mean cosine", "", "higher", "-1 to 1", "mean over the samples of the cosine",
        "The candidate's cosine averaged over all samples of the run (see cosine).", ".3f"),
    "fmr": MetricInfo(
        "false-match rate", "", "lower", "0 to 1", "share of strangers' photos scoring at least this high",
        "How often a stranger's photo scores at least this high for this kind of probe, measured on "
        "identities never used for validation; times the gallery's photos it gives the strangers "
        "expected to score as high.", ".2e"),
    "likelihood_ratio": MetricInfo(
        "likelihood ratio", "", "higher", "0 to ∞ (1 = the score says nothing)",
        "same person vs stranger",
        "How much more probable this score is for the same person than for a stranger (genuine over "
        "impostor density near the score); below 1 it favours a stranger.", ".3g"),
    "rank1": MetricInfo(
        "Rank-1", "", "higher", "0 to 1", "share of probes whose identity ranks first",
        "Closed-set identification: the share of probes whose true identity is the top candidate.", ".3f"),
    "rank5": MetricInfo(
        "Rank-5", "", "higher", "0 to 1", "share of probes whose identity is in the top 5",
        "The share of probes whose true identity is among the top 5 candidates.", ".3f"),
    "rank10": MetricInfo(
        "Rank-10", "", "higher", "0 to 1", "share of probes whose identity is in the top 10",
        "The share of probes whose true identity is among the top 10 candidates.", ".3f"),
    "auc": MetricInfo(
        "AUC", "", "higher", "0 to 1 (0.5 = chance)", "verification area under the ROC curve",
        "1:1 verification: the chance that a same-person pair outscores a different-person pair.", ".3f"),
    "cs_to_hr": MetricInfo(
        "CS to HR", "", "higher", "-1 to 1", "identity cosine of the probe to its own HR photo",
        "Cosine similarity of the probe's embedding to its HR photo's: how much identity the probe "
        "keeps (1 for the HR probe itself).", ".3f"),
}


def _info(key: str) -> MetricInfo:
    try:
        return METRICS[key]
    except KeyError:
        raise KeyError(f"{key!r} is not in metrics.METRICS; give it a row there first") from None


def format_value(key: str, value: Any) -> str:
    """``value`` in the metric's format with its unit ("24.10 dB", "2.31 (0–255)²", "12%");
    a list gives its values joined by commas; None / nan: "–"."""
    m = _info(key)
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(key, v) for v in value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{float(value):{m.fmt}}"
    return f"{text} {m.unit}" if m.unit else text


def format_metric(key: str, value: Any, long: bool = False) -> str:
    """One metric with its unit and direction: short "PSNR 24.10 dB ↑" (captions), long
    "consistency 2.31 (0–255)² (MSE vs the LR input, 0–255 scale; lower is better)"."""
    m = _info(key)
    text = f"{m.label} {format_value(key, value)}"
    return f"{text} ({m.gist}; {m.direction})" if long else f"{text} {m.arrow}"


def metric_header(key: str) -> str:
    """A table header: label, unit in brackets, arrow ("PSNR [dB] ↑", "SSIM ↑",
    "consistency (0–255)² ↓")."""
    m = _info(key)
    if not m.unit:
        return f"{m.label} {m.arrow}"
    unit = m.unit if m.unit.startswith("(") else f"[{m.unit}]"
    return f"{m.label} {unit} {m.arrow}"


def metric_tooltip(key: str) -> str:
    """The one-line explanation with the direction and range: a tooltip or a legend row."""
    m = _info(key)
    return f"{metric_header(key)}: {m.line} {m.direction.capitalize()}; range {m.range}."


def metric_legend(keys: Iterable[str] | None = None) -> dict[str, dict[str, str]]:
    """The ``metric_legend`` block of a JSON record: per metric key (those named, else all) its
    label, unit, direction (``better``: higher / lower / near 1), range and one-line meaning."""
    keys = list(METRICS) if keys is None else list(dict.fromkeys(keys))
    out = {}
    for k in keys:
        m = _info(k)
        out[k] = {"label": m.label, "unit": m.unit_name, "better": m.better, "range": m.range,
                  "what": m.line}
    return out


def metric_keys_in(*objs: Any) -> list[str]:
    """The keys of :data:`METRICS` that appear anywhere in ``objs`` (nested dicts and lists, e.g.
    a run record), in table order: what a record's legend must explain."""
    found: set[str] = set()

    def walk(o: Any) -> None:
        if isinstance(o, Mapping):
            for k, v in o.items():
                if k in METRICS:
                    found.add(k)
                walk(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)

    for o in objs:
        walk(o)
    return [k for k in METRICS if k in found]


# ------------------------------------------------------------------------------------------
# the metrics
# ------------------------------------------------------------------------------------------
def as_image_batch(x: ImageInput) -> tuple[torch.Tensor, bool]:
    """Convert an image or batch to a float tensor ``[B, C, H, W]`` in [0, 1].

    Returns ``(batch, was_single)``. numpy arrays are channel-last (HxWxC or BxHxWxC);
    uint8 arrays are divided by 255, float arrays are taken as [0, 1]. Tensors are
    channel-first and must already be in [0, 1] (uint8 tensors are divided by 255).
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.dtype == torch.uint8:
            t = t.float() / 255.0
        elif not t.is_floating_point():
            t = t.float()
        if t.dim() == 3:
            return t.unsqueeze(0), True
        if t.dim() == 4:
            return t, False
        raise ValueError(f"expected a [B, C, H, W] or [C, H, W] tensor, got {tuple(t.shape)}")
    if isinstance(x, (list, tuple)):
        arrs = [np.asarray(a) for a in x]
        if not arrs:
            raise ValueError("empty image list")
        batch, _ = as_image_batch(np.stack(arrs, axis=0))
        return batch, False
    arr = np.asarray(x)
    single = arr.ndim == 3
    if arr.ndim == 2:
        arr, single = arr[:, :, None], True
    if single:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"expected an HxWxC image or BxHxWxC stack, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        t = torch.from_numpy(np.ascontiguousarray(arr)).float() / 255.0
    elif arr.dtype == np.uint16:
        t = torch.from_numpy(arr.astype(np.float32) / 65535.0)
    elif np.issubdtype(arr.dtype, np.floating):
        t = torch.from_numpy(np.ascontiguousarray(arr)).float()
    else:
        raise TypeError(f"unsupported image dtype {arr.dtype}")
    return t.permute(0, 3, 1, 2).contiguous(), single


def _pair(sr: ImageInput, hr: ImageInput) -> tuple[torch.Tensor, torch.Tensor, bool]:
    a, single_a = as_image_batch(sr)
    b, single_b = as_image_batch(hr)
    b = b.to(a.device)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {tuple(a.shape)} vs {tuple(b.shape)}")
    return a, b, single_a and single_b


def _out(values: torch.Tensor, single: bool) -> Result:
    return float(values[0]) if single else values


def psnr(sr: ImageInput, hr: ImageInput, data_range: float = 1.0) -> Result:
    """Peak signal-to-noise ratio in dB per image (``inf`` for identical images)."""
    a, b, single = _pair(sr, hr)
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(dim=1)
    val = 10.0 * torch.log10((data_range ** 2) / mse)  # mse == 0 -> inf
    return _out(val.to(a.dtype), single)


def _gaussian_kernel_1d(win: int, sigma: float, dtype: torch.dtype,
                        device: torch.device) -> torch.Tensor:
    r = (win - 1) // 2
    x = torch.arange(-r, r + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _filter_valid(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filter, depthwise over channels of ``[B, C, H, W]``."""
    c = x.shape[1]
    kh = k.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    kw = k.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    return F.conv2d(F.conv2d(x, kh, groups=c), kw, groups=c)


def ssim(sr: ImageInput, hr: ImageInput, data_range: float = 1.0) -> Result:
    """Structural similarity per image, mean over the valid map and over channels.

    Matches scikit-image's Gaussian-weighted SSIM (sigma 1.5, 11x11, population
    covariance): scikit-image filters the whole image then crops 5 px from each border
    before averaging, which is exactly the 'valid' region computed here. Images must be at
    least 11x11. Computed in float64.
    """
    a, b, single = _pair(sr, hr)
    if a.shape[-1] < SSIM_WIN or a.shape[-2] < SSIM_WIN:
        raise ValueError(f"SSIM needs images of at least {SSIM_WIN}x{SSIM_WIN}")
    x, y = a.double(), b.double()
    k = _gaussian_kernel_1d(SSIM_WIN, SSIM_SIGMA, x.dtype, x.device)
    ux, uy = _filter_valid(x, k), _filter_valid(y, k)
    uxx, uyy, uxy = _filter_valid(x * x, k), _filter_valid(y * y, k), _filter_valid(x * y, k)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    val = s.mean(dim=(2, 3)).mean(dim=1)
    return _out(val.to(a.dtype), single)


def consistency(sr: ImageInput, lr: ImageInput) -> Result:
    """MSE in [0, 255] units between ``downsample(sr, lr_size)`` and ``lr`` (per image)."""
    a, single_a = as_image_batch(sr)
    b, single_b = as_image_batch(lr)
    b = b.to(a.device)
    if a.shape[:2] != b.shape[:2] or b.shape[-1] != b.shape[-2]:
        raise ValueError(f"incompatible SR {tuple(a.shape)} and LR {tuple(b.shape)}")
    d = downsample(a, b.shape[-1]).double()
    val = ((d - b.double()) * 255.0).pow(2).flatten(1).mean(dim=1)
    return _out(val.to(a.dtype), single_a and single_b)


def cosine_similarity(a: Union[torch.Tensor, np.ndarray],
                      b: Union[torch.Tensor, np.ndarray],
                      eps: float = 1e-12) -> Union[torch.Tensor, np.ndarray, float]:
    """Cosine similarity of embedding vectors along the last axis.

    1-D inputs give a float; ``[B, D]`` inputs give ``[B]`` (a torch tensor if either input
    is a tensor, else a numpy array). Zero vectors give 0.
    """
    is_torch = isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor)
    ta = a.detach() if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    tb = b.detach() if isinstance(b, torch.Tensor) else torch.as_tensor(np.asarray(b))
    ta, tb = ta.double(), tb.double().to(ta.device)
    if ta.shape != tb.shape:
        raise ValueError(f"shape mismatch: {tuple(ta.shape)} vs {tuple(tb.shape)}")
    num = (ta * tb).sum(dim=-1)
    den = ta.norm(dim=-1) * tb.norm(dim=-1)
    val = num / den.clamp_min(eps)
    if ta.dim() == 1:
        return float(val)
    if is_torch:
        return val.float()
    return val.cpu().numpy()


def cs(embed_fn: Callable[[torch.Tensor], torch.Tensor], sr: ImageInput,
       hr: ImageInput) -> Result:
    """Identity similarity: cosine between ``embed_fn(sr)`` and ``embed_fn(hr)`` per image.

    ``embed_fn`` maps a float batch ``[B, 3, H, W]`` in [0, 1] to embeddings ``[B, D]``.
    """
    a, b, single = _pair(sr, hr)
    with torch.no_grad():
        ea = torch.as_tensor(embed_fn(a)).reshape(a.shape[0], -1)
        eb = torch.as_tensor(embed_fn(b)).reshape(b.shape[0], -1)
    val = cosine_similarity(ea, eb)
    return _out(torch.as_tensor(val), single)


def image_metrics(images: torch.Tensor, lr: torch.Tensor | None = None,
                  hr: torch.Tensor | None = None) -> list[dict[str, float]]:
    """The per-image numbers shown with every result: ``consistency`` against the LR input
    (when given) and ``psnr`` / ``ssim`` against the reference HR (when known).

    ``images`` is ``[K, 3, 128, 128]`` in [0, 1]; ``lr`` ``[1 or K, 3, 16, 16]``; ``hr``
    ``[1 or K, 3, 128, 128]``. Returns one dict of floats per image (the CLI record, the GUI
    tiles and the export all use this).
    """
    k = images.shape[0]
    out: list[dict[str, float]] = [{} for _ in range(k)]
    if lr is not None:
        for d, v in zip(out, consistency(images, lr.expand(k, -1, -1, -1))):
            d["consistency"] = float(v)
    if hr is not None:
        hrk = hr.expand(k, -1, -1, -1)
        for d, p, s in zip(out, psnr(images, hrk), ssim(images, hrk)):
            d["psnr"], d["ssim"] = float(p), float(s)
    return out


#: A sample "does not match its input" when the RMS difference (0-255 grey levels) between the
#: sample downsampled to the LR size and the LR exceeds this factor times the mean estimate's own
#: RMS difference, plus LR_MISMATCH_MARGIN. A posterior sample reproduces its LR about as well
#: as the mean estimate does: 608 measured samples of the clean, footage and 16x models (fast
#: sampler and PC, clean and degraded LR, the JSONs in docs/) all stay under this limit, the
#: nearest 0.9 grey levels below it; a diverged sampler's image does not (a PC N = 2000 sample of
#: a profile face: 34.9 grey levels off, the mean estimate 4.8, limit 17.4; weights/README.md,
#: "A sample that does not match its input").
LR_MISMATCH_FACTOR = 3.0
LR_MISMATCH_MARGIN = 3.0


def lr_mismatch(sample: Mapping[str, float], mean: Mapping[str, float]) -> dict[str, Any] | None:
    """Whether a sample fails to reproduce its LR input, from the ``consistency`` of the sample
    and of the same run's mean estimate (:func:`image_metrics` of each): None when it matches
    (or either number is missing), else a dict with the two RMS values (0-255), the limit and a
    sentence for the user. Consistency is measured against the LR as given, so a footage model
    that removes noise is compared with its own mean estimate, which removes it too."""
    if "consistency" not in sample or "consistency" not in mean:
        return None
    rms = math.sqrt(max(float(sample["consistency"]), 0.0))
    ref = math.sqrt(max(float(mean["consistency"]), 0.0))
    limit = LR_MISMATCH_FACTOR * ref + LR_MISMATCH_MARGIN
    if rms <= limit:
        return None
    return {"lr_rms": round(rms, 2), "mean_estimate_lr_rms": round(ref, 2), "limit": round(limit, 2),
            "text": (f"does not match the input: downsampled to the LR size it is {rms:.1f} grey levels (RMS) "
                     f"off the LR, the mean estimate {ref:.1f} (limit {limit:.1f}); the sampler went wrong "
                     "for this sample, so do not rely on it")}


def l2_normalize(x, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` scaled to unit length (float32; zero rows stay zero): the one normalisation
    behind every cosine score (a dot product of normalised embeddings is their cosine)."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, eps)


def rank_of_true(scores, true_index: int) -> int:
    """1-based rank of ``scores[true_index]`` among one probe's identity scores (higher =
    better). Ties are pessimistic: another identity with an equal score ranks ahead."""
    row = np.asarray(scores)
    others = np.delete(row, int(true_index))
    return 1 + int(np.sum(others >= row[int(true_index)]))


def identity_ranks(similarity: Union[np.ndarray, torch.Tensor], probe_ids: Sequence,
                   gallery_ids: Sequence) -> np.ndarray:
    """Rank (1 = best) of each probe's true identity among the gallery identities.

    ``similarity`` is ``[P, G]`` (higher = more similar). Each gallery identity scores by
    its best image. Ties are resolved pessimistically: an other identity with an equal score
    is ranked ahead. Probes whose identity is not in the gallery get rank 0.
    """
    sim = similarity.detach().cpu().numpy() if isinstance(similarity, torch.Tensor) \
        else np.asarray(similarity)
    sim = sim.astype(np.float64)
    probe_ids, gallery_ids = list(probe_ids), list(gallery_ids)
    if sim.ndim != 2 or sim.shape != (len(probe_ids), len(gallery_ids)):
        raise ValueError(
            f"similarity shape {sim.shape} does not match {len(probe_ids)} probes x "
            f"{len(gallery_ids)} gallery items")
    uniq = list(dict.fromkeys(gallery_ids))
    col = {g: i for i, g in enumerate(uniq)}
    gidx = np.array([col[g] for g in gallery_ids], dtype=np.int64)
    best = np.full((sim.shape[0], len(uniq)), -np.inf)
    for j in range(len(uniq)):
        best[:, j] = sim[:, gidx == j].max(axis=1)
    ranks = np.zeros(len(probe_ids), dtype=np.int64)
    for i, pid in enumerate(probe_ids):
        j = col.get(pid)
        if j is None:
            continue
        ranks[i] = rank_of_true(best[i], j)
    return ranks


def rank_n(similarity: Union[np.ndarray, torch.Tensor], probe_ids: Sequence,
           gallery_ids: Sequence, n: int = 1, unmatched: str = "skip") -> float:
    """Rank-N identification rate: share of probes whose identity is in the top ``n``.

    ``unmatched`` says what to do with probes whose identity has no gallery image:
    ``"skip"`` (closed-set protocol, default) or ``"miss"`` (count as failures).
    Returns ``nan`` when no probe counts.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    if unmatched not in ("skip", "miss"):
        raise ValueError("unmatched must be 'skip' or 'miss'")
    ranks = identity_ranks(similarity, probe_ids, gallery_ids)
    if unmatched == "skip":
        ranks = ranks[ranks > 0]
    if ranks.size == 0:
        return float("nan")
    return float(np.mean((ranks > 0) & (ranks <= n)))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (like scipy's rankdata)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    # boundaries of runs of equal values
    starts = np.r_[0, np.flatnonzero(np.diff(xs) != 0) + 1]
    ends = np.r_[starts[1:], len(xs)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = 0.5 * (s + 1 + e)  # mean of ranks s+1 .. e
    return ranks


def spearman(a: Union[Sequence[float], np.ndarray], b: Union[Sequence[float], np.ndarray]) -> float:
    """Spearman rank correlation: the Pearson correlation of the average ranks (ties share
    their mean rank, as in scipy's ``spearmanr``); ``nan`` when either side is constant."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape or x.size < 2:
        raise ValueError("Spearman needs two sequences of the same length, at least 2")
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = float(np.sqrt((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


def verification_auc(scores: Union[Sequence[float], np.ndarray],
                     same: Union[Sequence[bool], np.ndarray]) -> float:
    """ROC AUC of 1:1 verification scores (higher = same person), Mann-Whitney formula.

    ``same[i]`` is True for a genuine pair. Tied scores count half. Raises ValueError
    if there is no genuine or no impostor pair.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(same).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError("scores and labels differ in length")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs at least one genuine and one impostor pair")
    r = _average_ranks(s)
    u = r[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))

