"""The enhancement job shared by the CLI and the GUI: face frame in, samples and a run record out.

``Enhancer`` owns a loaded score model (and optionally the attribute classifier) and runs one
of the two samplers on one LR face with K seeds, under the SDE the settings name (the model's
own VE by default; VP and sub-VP through the same VE-trained denoiser).  Every run also
returns the model's *mean estimate* of that face (:meth:`Enhancer.mean_estimate`): one
network evaluation, deterministic, the most accurate single image and blurrier -- an
estimate, never a sample.  Nothing here touches Qt or the file system except
:func:`find_default_weights` and the loaders.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from . import faces
from .device import resolve_device  # noqa: F401  (re-exported: the CLI and the GUI import it here)
from .models.checkpoint import CheckpointError, file_sha256, load_checkpoint
from .presets import (DEFAULT_GUIDANCE_CAP, DEFAULT_GUIDANCE_SIGMA_MIN, DEFAULT_H, DEFAULT_MEAN_MIRROR,
                      DEFAULT_MIRROR, DEFAULT_SAMPLER, DEFAULT_START_SIGMA, DEFAULT_STEPS, MAX_SAMPLES,
                      SAMPLER_PRESETS)
from .sampling import (
    CORRECTORS,
    FAST_MAX_NFE,
    FAST_METHODS,
    MEAN_ESTIMATE_SEED,
    GuidedScore,
    PREDICTORS,
    NoiseSource,
    SampleResult,
    StepInfo,
    check_choice,
    check_pc_steps,
    fast_max_steps,
    fast_sample,
    guided_score_fn,
    mean_estimate,
    model_score_fn,
    pc_sample,
)
from .sde import DEFAULT_SDE, SDE, SDES, make_sde

__all__ = [
    "SCORE_WEIGHTS_NAME",
    "SCORE_WEIGHTS_16X_NAME",
    "SCALES",
    "score_weights_name",
    "scale_for_input",
    "TINY_FACE_PX",
    "AUTO_MODEL",
    "FOOTAGE_WEIGHTS_NAME",
    "DEFAULT_FOOTAGE_THRESHOLD",
    "ModelPick",
    "pick_score_model",
    "CLASSIFIER_WEIGHTS_NAME",
    "DEFAULT_STEPS",
    "MEAN_ESTIMATE_WHAT",
    "SamplerSettings",
    "EnhanceResult",
    "Enhancer",
    "PreparedInput",
    "prepare_face",
    "parse_attributes",
    "weights_dir",
    "find_default_weights",
    "resolve_device",
]

SCORE_WEIGHTS_NAME = "sdesr_ve_8x.safetensors"
SCORE_WEIGHTS_16X_NAME = "sdesr_ve_16x.safetensors"
#: the 8x model fine-tuned on footage-grade LR (blur, noise, compression); the automatic choice
#: takes it for an LR it judges degraded (:meth:`Enhancer.lr_residual`)
FOOTAGE_WEIGHTS_NAME = "sdesr_ve_8x_footage.safetensors"
#: RMS (0-255) of the LR the footage model does not explain, above which an LR counts as
#: degraded, when the model's card gives no ``footage_threshold``
DEFAULT_FOOTAGE_THRESHOLD = 3.3
#: magnification -> the shipped score model for it (8x: 16x16 -> 128x128, 16x: 8x8 -> 128x128)
SCALES = {8: SCORE_WEIGHTS_NAME, 16: SCORE_WEIGHTS_16X_NAME}
#: a face narrower than this (pixels of the source, eye-to-eye box width) gets the 16x model:
#: sampling it to 16x16 would invent pixels the footage never had
TINY_FACE_PX = 12.0
CLASSIFIER_WEIGHTS_NAME = "attributes_ve.safetensors"
ATTRIBUTE_NAMES = ("male", "beard", "eyeglasses")
_FAST, _PC = SAMPLER_PRESETS["fast"], SAMPLER_PRESETS["pc"]


def mean_estimate_what(mirror: bool) -> str:
    """What the run record says the mean estimate is."""
    how = ("the average of the denoiser at sigma_max given the LR and given its mirror image (flipped back), "
           "two network evaluations" if mirror else "the denoiser at sigma_max given the LR, one network evaluation")
    return f"posterior-mean estimate: {how}; an estimate, not a sample"


#: what the run record says the (default) mean estimate is
MEAN_ESTIMATE_WHAT = mean_estimate_what(DEFAULT_MEAN_MIRROR)


# ------------------------------------------------------------------------------------------
# settings
# ------------------------------------------------------------------------------------------
@dataclass
class SamplerSettings:
    """Everything that decides a run's samples (recorded in every run record)."""

    sampler: str = DEFAULT_SAMPLER  # a SAMPLER_PRESETS key: "fast" | "pc"
    sde: str = DEFAULT_SDE  # an SDES name: "ve" (the model's own) | "vp" | "subvp"
    steps: int | None = None  # N; None = the preset's (DEFAULT_STEPS: fast 40, pc 2000)
    corrector_steps: int = _PC.corrector_steps  # M (pc)
    snr: float = _PC.snr  # r, the Langevin signal-to-noise ratio (pc)
    predictor: str = _PC.predictor  # a PREDICTORS name (pc)
    corrector: str = _PC.corrector  # a CORRECTORS name (pc)
    fast_method: str = _FAST.fast_method  # a FAST_METHODS name (fast)
    churn: float = _FAST.churn  # (fast)
    # fast: start from the mean estimate diffused to this noise level instead of from pure noise at
    # the SDE's sigma_max (None): samples nearer the mean, with less of the posterior's spread
    start_sigma: float | None = DEFAULT_START_SIGMA
    h: float | None = None  # guidance scale; None = the classifier's model-card default
    guidance_sigma_min: float | None = None  # guide while sigma >= this; None = the model card's
    guidance_cap: float = DEFAULT_GUIDANCE_CAP  # guidance <= this x the model's score norm; 0 = no cap
    attributes: dict[str, int | None] = field(default_factory=dict)
    samples: int = 1
    seed: int = 0
    mirror: bool = DEFAULT_MIRROR  # samples: the denoiser averaged over the left-right flip (2x work)
    mean_mirror: bool = DEFAULT_MEAN_MIRROR  # the mean estimate: averaged with its mirror image's

    def n_steps(self) -> int:
        return int(self.steps) if self.steps is not None else DEFAULT_STEPS[self.sampler]

    def seeds(self) -> list[int]:
        """Seed of sample k is seed + k: sample k can be re-run alone from its seed."""
        return [int(self.seed) + k for k in range(int(self.samples))]

    def validate(self) -> None:
        """Raise ValueError with one clear sentence for an impossible setting."""
        check_choice("sampler", self.sampler, SAMPLER_PRESETS)
        check_choice("SDE", self.sde, SDES)
        if self.samples < 1 or self.samples > MAX_SAMPLES:
            raise ValueError(f"The number of samples must be between 1 and {MAX_SAMPLES}.")
        if self.n_steps() < 1:
            raise ValueError("The number of steps must be at least 1.")
        if not SAMPLER_PRESETS[self.sampler].is_pc:
            check_choice("fast method", self.fast_method, FAST_METHODS)
            limit = fast_max_steps(self.fast_method)
            if self.n_steps() > limit:
                raise ValueError(f"The fast sampler ({self.fast_method}) allows at most {limit} steps "
                                 f"(at most {FAST_MAX_NFE} network evaluations).")
        else:
            check_choice("predictor", self.predictor, PREDICTORS)
            check_choice("corrector", self.corrector, CORRECTORS)
            if self.corrector_steps < 0:
                raise ValueError("The number of corrector steps cannot be negative.")
            # VP / sub-VP: with N <= beta_max a step's beta(t) dt reaches 1 (VP: all-NaN samples)
            check_pc_steps(SDES[self.sde](), self.n_steps())
        if not 0.0 <= self.snr <= 10.0:
            raise ValueError("The signal-to-noise ratio r must be between 0 and 10.")
        if self.h is not None and self.h < 0:
            raise ValueError("The guidance scale h cannot be negative.")
        if self.guidance_sigma_min is not None and self.guidance_sigma_min < 0:
            raise ValueError("The lowest noise level of guidance cannot be negative.")
        if self.guidance_cap < 0:
            raise ValueError("The guidance cap cannot be negative.")
        if self.churn < 0:
            raise ValueError("Churn cannot be negative.")
        if self.start_sigma is not None:
            if SAMPLER_PRESETS[self.sampler].is_pc:
                raise ValueError("Starting from the mean estimate is offered for the fast sampler only.")
            if not self.start_sigma > 0:
                raise ValueError("The start noise level must be above 0.")
        for name, value in self.attributes.items():
            if value not in (None, 0, 1):
                raise ValueError(f"Attribute {name!r} must be 1, 0 or unknown.")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["steps"] = self.n_steps()
        d["seeds"] = self.seeds()
        if not SAMPLER_PRESETS[self.sampler].is_pc:
            for k in ("corrector_steps", "snr", "predictor", "corrector"):
                d.pop(k)
        else:
            for k in ("fast_method", "churn", "start_sigma"):
                d.pop(k)
        return d


_TRUE = {"1", "yes", "y", "true", "present", "+"}
_FALSE = {"0", "no", "n", "false", "absent", "-"}
_UNKNOWN = {"?", "unknown", "none", ""}


def parse_attributes(text: str | None, allowed=ATTRIBUTE_NAMES) -> dict[str, int | None]:
    """Parse ``male=1,beard=0,eyeglasses=?`` into {name: 1 | 0 | None}."""
    out: dict[str, int | None] = {}
    if not text:
        return out
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"Attribute {part!r} needs a value, e.g. {part}=1, {part}=0 or {part}=?.")
        name, value = (s.strip().lower() for s in part.split("=", 1))
        if name not in allowed:
            raise ValueError(f"Unknown attribute {name!r}; known attributes are {', '.join(allowed)}.")
        if value in _TRUE:
            out[name] = 1
        elif value in _FALSE:
            out[name] = 0
        elif value in _UNKNOWN:
            out[name] = None
        else:
            raise ValueError(f"Attribute {name} has value {value!r}; use 1 (present), 0 (absent) or ? (unknown).")
    return out


# ------------------------------------------------------------------------------------------
# weights and devices
# ------------------------------------------------------------------------------------------
def weights_dir() -> Path:
    """Where the shipped weights live: $SDESR_WEIGHTS_DIR, the frozen app's bundle, or the repo."""
    env = os.environ.get("SDESR_WEIGHTS_DIR")
    if env:
        return Path(env)
    if getattr(sys, "frozen", False) and hasattr(sys, "_MEIPASS"):
        return Path(sys._MEIPASS) / "weights"  # type: ignore[attr-defined]
    return Path(__file__).resolve().parents[2] / "weights"


def find_default_weights(name: str = SCORE_WEIGHTS_NAME) -> Path | None:
    p = weights_dir() / name
    return p if p.is_file() else None


def score_weights_name(scale: int) -> str:
    """The shipped score model's file name for a magnification (8 or 16)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(map(str, SCALES))}, not {scale!r}")
    return SCALES[scale]


AUTO_MODEL = "auto"


@dataclass(frozen=True)
class ModelPick:
    """The score model a run uses, its magnification and why (shown to the user, recorded)."""

    weights: Path
    scale: int
    why: str
    automatic: bool
    footage: Path | None = None  # the footage model that judges the LR (automatic 8x choice, when installed)


def pick_score_model(choice: str | Path | None, lr_shape, face_px: float | None = None) -> ModelPick:
    """Resolve the model choice of the GUI (or any caller) for one face.

    ``choice`` is :data:`AUTO_MODEL` (or None): the shipped 8x or 16x model by
    :func:`scale_for_input` -- falling back to 8x, and saying so, when the 16x one is not
    installed -- or a checkpoint file, whose own metadata gives its magnification.
    ``lr_shape`` is the shape of the face's LR as selected (an 8x8 still only fits a 16x model).
    Raises :class:`InputError` when no usable model is installed or the file cannot be read.
    """
    from .errors import InputError
    from .models.checkpoint import read_metadata

    if choice is None or str(choice) == AUTO_MODEL:
        scale, why = scale_for_input(lr_shape, face_px)
        w = find_default_weights(score_weights_name(scale))
        if w is None and scale == 16 and faces.image_role(lr_shape, faces.FRAME_SIZE, 8) != "lr":
            w8 = find_default_weights(SCORE_WEIGHTS_NAME)
            if w8 is not None:
                return ModelPick(w8, 8, why + f"; but {SCORE_WEIGHTS_16X_NAME} is not installed, so the 8x model",
                                 True)
        if w is None:
            raise InputError(f"No {scale}x model is installed ({weights_dir() / score_weights_name(scale)} is "
                             "missing); choose a model file or train one with `sdesr train score`.")
        return ModelPick(w, scale, why, True, find_default_weights(FOOTAGE_WEIGHTS_NAME) if scale == 8 else None)
    path = Path(choice)
    try:
        meta = read_metadata(path)
    except CheckpointError as exc:
        raise InputError(str(exc)) from None
    lr_size = int(meta.get("lr_size") or faces.FRAME_SIZE // int(meta.get("scale_factor") or 8))
    scale = faces.FRAME_SIZE // lr_size
    return ModelPick(path, scale, f"the chosen model {path.name} ({scale}x, {lr_size}x{lr_size} input)", False)


def scale_for_input(image_shape, face_px: float | None = None) -> tuple[int, str]:
    """The magnification for an input when the user did not choose one, and why.

    An 8x8 image is an LR face for the 16x model; a face whose width in the source is under
    :data:`TINY_FACE_PX` pixels (``face_px``, when a detector or box measured it) too; anything
    else the 8x model.
    """
    if faces.image_role(image_shape, faces.FRAME_SIZE, faces.FRAME_SIZE // 16) == "lr":
        return 16, "the input is 8x8, the 16x model's LR size"
    if face_px is not None and face_px < TINY_FACE_PX:
        return 16, (f"the face is about {face_px:.0f} px wide in the source, under {TINY_FACE_PX:.0f} px: "
                    "the 16x model (8x8 input) does not invent the missing pixels")
    return 8, "the 8x model (16x16 input)"


# ------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------
@dataclass
class PreparedInput:
    lr: torch.Tensor  # [1, 3, 16, 16] on the uint8 grid
    hr: torch.Tensor | None  # [1, 3, 128, 128] when the input was an HR face frame
    mode: str  # "hr", "lr" or "resized"
    warning: str | None = None


def prepare_face(image: np.ndarray, frame: int = faces.FRAME_SIZE, lr_size: int = faces.LR_SIZE) -> PreparedInput:
    """Turn an RGB uint8 face image into the model's LR input.

    frame x frame -> treated as the HR face frame and degraded; lr_size x lr_size -> used as
    the LR itself; anything else is resized to the face frame (with a warning) and degraded.
    """
    h, w = image.shape[:2]
    x = faces.to_tensor(image)
    role = faces.image_role(image, frame, lr_size)
    if role == "lr":
        return PreparedInput(faces.quantize(x), None, "lr")
    if role == "frame":
        return PreparedInput(faces.degrade(x, lr_size), x, "hr")
    warn = (f"input is {w}x{h}, not the {frame}x{frame} face frame or a {lr_size}x{lr_size} LR face; "
            f"it was resized to {frame}x{frame}" + (" (aspect ratio changed)" if h != w else "")
            + " - align faces with `sdesr detect` for best results")
    resized = torch.nn.functional.interpolate(
        x, size=(frame, frame), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    return PreparedInput(faces.degrade(resized, lr_size), None, "resized", warn)


# ------------------------------------------------------------------------------------------
# the job
# ------------------------------------------------------------------------------------------
@dataclass
class EnhanceResult:
    samples: torch.Tensor  # [K, 3, 128, 128] in [0, 1], on the CPU
    bicubic: torch.Tensor  # [1, 3, 128, 128]
    lr: torch.Tensor  # [1, 3, 16, 16]
    seeds: list[int]
    nfe: int  # of the sampler (the mean estimate's one or two evaluations are not counted)
    seconds: float  # of the sampler
    settings: dict  # the run record's sampler section; "mean_estimate" says what ``mean`` is
    mean: torch.Tensor | None = None  # [1, 3, 128, 128] in [0, 1], CPU: the mean estimate, not a sample


class Enhancer:
    """A loaded score model (+ optional attribute classifier) ready to sample."""

    def __init__(self, model, sde: SDE, *, classifier=None, device: str | torch.device = "cpu",
                 model_info: dict | None = None, classifier_info: dict | None = None):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.classifier = classifier.to(self.device).eval() if classifier is not None else None
        self.sde = sde
        self.model_info = model_info or {}
        self.classifier_info = classifier_info or {}
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True

    @classmethod
    def from_files(cls, weights: str | Path, classifier: str | Path | None = None,
                   device: str | torch.device = "cpu") -> "Enhancer":
        """Load safetensors checkpoints (CheckpointError with one clear sentence on failure)."""
        model, meta = load_checkpoint(weights, device="cpu")
        if meta.get("kind") != "score":
            raise CheckpointError(f"{Path(weights).name} is not a score model (it is a {meta.get('kind')!r}).")
        info = {"path": str(weights), "sha256": file_sha256(weights), "kind": "score",
                "sde": meta.get("sde"), "training_data": meta.get("training_data"),
                "name": meta.get("name", Path(weights).stem),
                "scale_factor": int(meta.get("scale_factor") or faces.FRAME_SIZE // faces.LR_SIZE),
                "lr_size": int(meta.get("lr_size") or faces.LR_SIZE),
                "degradation": meta.get("degradation", "bicubic"),
                **({"footage_threshold": meta["footage_threshold"]} if "footage_threshold" in meta else {}),
                **({"uncertainty_scale": meta["uncertainty_scale"]} if "uncertainty_scale" in meta else {})}
        clf = None
        cinfo = None
        if classifier is not None:
            clf, cmeta = load_checkpoint(classifier, device="cpu")
            if cmeta.get("kind") != "classifier":
                raise CheckpointError(f"{Path(classifier).name} is not an attribute classifier.")
            cinfo = {"path": str(classifier), "sha256": file_sha256(classifier), "kind": "classifier",
                     "attributes": list(getattr(clf, "attributes", [])),
                     "default_h": cmeta.get("default_h"),
                     "guidance_sigma_min": cmeta.get("guidance_sigma_min")}
        sde = make_sde(meta.get("sde") or "ve")
        return cls(model, sde, classifier=clf, device=device, model_info=info, classifier_info=cinfo)

    @property
    def lr_size(self) -> int:
        """Side of the LR face this model super-resolves (16 for the 8x model, 8 for the 16x)."""
        return int(self.model_info.get("lr_size") or faces.LR_SIZE)

    @property
    def scale_factor(self) -> int:
        return faces.FRAME_SIZE // self.lr_size

    def degrade(self, hr: torch.Tensor) -> torch.Tensor:
        """This model's LR of HR face frames [B, 3, 128, 128] (bicubic, 8-bit): 16x16 for the 8x
        model, 8x8 for the 16x."""
        return faces.degrade(hr, self.lr_size)

    def _lr_input(self, lr: torch.Tensor) -> torch.Tensor:
        """``lr`` on this model's device as float32, refused unless it is [B, 3, n, n] with n this
        model's LR side: a 16x16 face given to the 16x model (or 8x8 to the 8x) would be
        super-resolved from the wrong degradation without any sign of it."""
        from .errors import InputError

        n = self.lr_size
        if lr.ndim != 4 or lr.shape[1] != 3 or lr.shape[-2:] != (n, n):
            got = "x".join(str(int(v)) for v in lr.shape[-2:]) if lr.ndim >= 2 else str(tuple(lr.shape))
            raise InputError(f"This {self.scale_factor}x model super-resolves {n}x{n} LR faces; "
                             f"it was given a {got} one.")
        return lr.to(self.device, torch.float32)

    @property
    def default_h(self) -> float:
        v = (self.classifier_info or {}).get("default_h")
        return float(v) if v is not None else DEFAULT_H

    @property
    def default_guidance_sigma_min(self) -> float:
        """Guidance acts while sigma >= this unless a run says otherwise (the classifier's card)."""
        v = (self.classifier_info or {}).get("guidance_sigma_min")
        return float(v) if v is not None else DEFAULT_GUIDANCE_SIGMA_MIN

    @property
    def mean_sigma(self) -> float:
        """The noise level of the mean estimate: sigma_max of the model's own (trained VE) SDE."""
        return float(self.sde.sigma_max)

    def mean_estimate(self, lr: torch.Tensor, mirror: bool = DEFAULT_MEAN_MIRROR) -> torch.Tensor:
        """The model's posterior-mean estimate of LR faces [B, 3, 16, 16]: [B, 3, 128, 128] in [0, 1], CPU.

        The denoiser at the model's own sigma_max given the LR, with a fixed seeded noise field
        (:func:`~.sampling.mean_estimate`), the same image every time; with ``mirror`` (the
        default) averaged with the estimate of the mirrored LR (two evaluations).  The most
        accurate single image the model gives (highest PSNR / SSIM), blurrier than a sample and
        with no invented detail -- an estimate, not a sample.
        """
        lr = self._lr_input(lr)
        y_up = faces.upsample(lr, faces.FRAME_SIZE)
        return mean_estimate(self.model, y_up, self.mean_sigma, seed=MEAN_ESTIMATE_SEED,
                             mirror=mirror).clamp(0, 1).cpu()

    @property
    def footage_threshold(self) -> float:
        v = self.model_info.get("footage_threshold")
        return float(v) if v is not None else DEFAULT_FOOTAGE_THRESHOLD

    def lr_residual(self, lr: torch.Tensor) -> float:
        """How much of one LR face [1, 3, h, w] this model does not believe: the RMS (0-255 units)
        of ``LR - downsample(mean estimate)``. A footage-trained model explains a clean LR almost
        fully and leaves noise, blocking and ringing of a degraded one out: an estimate of the
        LR's degradation (one network evaluation, unmirrored: the footage threshold was measured
        so)."""
        m = self.mean_estimate(lr, mirror=False)
        lr = lr.detach().float().cpu()
        d = faces.downsample(m, lr.shape[-1]) - lr
        return float((d * 255.0).pow(2).mean().sqrt())

    def footage_verdict(self, lr: torch.Tensor) -> dict:
        """``lr_residual`` against this (footage) model's threshold: ``{"residual", "threshold",
        "degraded", "text"}`` -- what the app says when it picks a model by it."""
        r = self.lr_residual(lr)
        t = self.footage_threshold
        deg = r > t
        text = (f"LR degradation estimate {r:.1f} (0-255 RMS the footage model does not explain; "
                f"{'above' if deg else 'at or below'} {t:.1f}): "
                + ("the footage model" if deg else "the clean-trained model"))
        return {"residual": round(r, 3), "threshold": t, "degraded": bool(deg), "text": text}

    def mean_record(self, mirror: bool = DEFAULT_MEAN_MIRROR) -> dict:
        """What the run record says about the mean estimate."""
        return {"what": mean_estimate_what(mirror), "sigma": self.mean_sigma, "noise_seed": MEAN_ESTIMATE_SEED,
                "mirror": bool(mirror), "evaluations": 2 if mirror else 1}

    def run(self, lr: torch.Tensor, settings: SamplerSettings, *,
            callback: Callable[[StepInfo], None] | None = None, cancel=None) -> EnhanceResult:
        """Sample ``settings.samples`` super-resolutions of one LR face [1, 3, 16, 16], plus its
        mean estimate (once per run, after the samples: a cancel never waits for it)."""
        lr = self._lr_input(lr)
        y_up = faces.upsample(lr, faces.FRAME_SIZE)
        # without a start from the mean estimate it comes after the samples: a cancel never waits for it
        mean = self.mean_estimate(lr, mirror=settings.mean_mirror) if settings.start_sigma is not None else None
        res, seconds, rec = self._sample(y_up.expand(settings.samples, -1, -1, -1), settings.seeds(), settings,
                                         callback, cancel, mean=mean)
        if mean is None:
            mean = self.mean_estimate(lr, mirror=settings.mean_mirror)
        rec["mean_estimate"] = self.mean_record(settings.mean_mirror)
        return EnhanceResult(res.samples.clamp(0, 1).cpu(), y_up.cpu(), lr.cpu(), settings.seeds(),
                             res.nfe, seconds, rec, mean)

    def run_many(self, lr: torch.Tensor, settings: SamplerSettings, *, cancel=None,
                 seeds: Sequence[int] | None = None) -> torch.Tensor:
        """One sample for each of B LR faces [B, 3, 16, 16] in one batch; face i uses seed + i, or
        ``seeds[i]`` when given (a face's sample depends on its seed only, not on its batch)."""
        lr = self._lr_input(lr)
        y_up = faces.upsample(lr, faces.FRAME_SIZE)
        if seeds is None:
            seeds = [int(settings.seed) + i for i in range(lr.shape[0])]
        elif len(seeds) != lr.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for {lr.shape[0]} faces")
        seeds = [int(s) for s in seeds]
        mean = self.mean_estimate(lr, mirror=settings.mean_mirror) if settings.start_sigma is not None else None
        res, _, _ = self._sample(y_up, seeds, settings, None, cancel, mean=mean)
        return res.samples.clamp(0, 1).cpu()

    def sampling_sde(self, name: str) -> SDE:
        """The SDE a run named ``name`` samples under: "ve" is the model's own (its trained
        sigma range), "vp" / "subvp" the papers' (beta 0.1 to 20), through the same denoiser."""
        check_choice("SDE", name, SDES)
        return self.sde if name == "ve" else make_sde(name)

    def _sample(self, y_up, seeds, settings, callback, cancel, mean=None):
        """``mean``: the mean estimate(s) [1 or B, 3, 128, 128], needed when ``settings.start_sigma``
        is set (the fast sampler then starts from them diffused to that noise level)."""
        settings.validate()
        active = {k: v for k, v in settings.attributes.items() if v is not None}
        if active and self.classifier is None:
            raise ValueError("Attribute guidance needs the attribute classifier weights, which are not loaded.")
        h = settings.h if settings.h is not None else (self.default_h if active else 0.0)
        sde = self.sampling_sde(settings.sde)
        score = model_score_fn(self.model, sde, y_up, mirror=settings.mirror)
        g_min = settings.guidance_sigma_min if settings.guidance_sigma_min is not None \
            else self.default_guidance_sigma_min
        if active:
            score = guided_score_fn(score, self.classifier, sde, active, h, sigma_min=g_min,
                                    max_ratio=settings.guidance_cap)
        noise = NoiseSource(seeds)
        shape = (3, faces.FRAME_SIZE, faces.FRAME_SIZE)
        start = time.perf_counter()
        with torch.no_grad():
            if not SAMPLER_PRESETS[settings.sampler].is_pc:
                begin = {}
                if settings.start_sigma is not None:
                    if not sde.sigma_min < settings.start_sigma <= sde.sigma_max:
                        raise ValueError(f"The start noise level must be above {sde.sigma_min:.3g} and at most "
                                         f"{sde.sigma_max:.3g}, the {settings.sde.upper()} SDE's range.")
                    begin = {"sigma_max": float(settings.start_sigma), "x_init": mean.to(self.device)}
                res: SampleResult = fast_sample(
                    score, sde, shape, noise, n_steps=settings.n_steps(), method=settings.fast_method,
                    churn=settings.churn, device=self.device, callback=callback, cancel=cancel, **begin)
            else:
                res = pc_sample(
                    score, sde, shape, noise, n_steps=settings.n_steps(), predictor=settings.predictor,
                    corrector=settings.corrector, corrector_steps=settings.corrector_steps, snr=settings.snr,
                    device=self.device, callback=callback, cancel=cancel)
        seconds = time.perf_counter() - start
        rec = settings.to_dict()
        rec["h"] = h
        rec["guidance_sigma_min"] = g_min
        if isinstance(score, GuidedScore):  # how often the guidance cap acted (per sample and step)
            rec["guidance_capped"] = {"evaluations": score.evaluations, "capped": score.capped}
        rec["sde_params"] = sde.to_dict()
        rec["attributes"] = {n: settings.attributes.get(n) for n in ATTRIBUTE_NAMES}
        return res, seconds, rec
