"""Training loops: the conditional score network (EDM loss) and the time-dependent attribute
classifier (SRDG guidance), with exact resume, EMA, validation and export.

Both loops share one engine:

* the data order and every random draw of step ``k`` (batch indices, crops, flips,
  degradations, noise levels, noise) come from generators seeded by ``(seed, k)``, so a run
  is a pure function of its config and data, and resuming at step k continues exactly;
* AdamW with linear warm-up, gradient clipping, an EMA copy of the weights;
* mixed precision (bf16, else fp16 + GradScaler) on CUDA only; CPU runs in float32;
* a checkpoint every ``ckpt_every`` steps and on cancel / Ctrl-C, written WITHOUT pickle:
  ``train_state_<step>.safetensors`` (model, EMA and optimizer tensors) plus
  ``train_state.json`` (step, config, loss history, scaler, python/numpy/torch RNG states as
  lists/base64) -- the JSON is replaced atomically last and names the tensor file and its
  sha256, so a crash never leaves a half-written state;
* validation on a fixed batch appended to ``metrics.jsonl`` (and, for the score model, a
  sample grid ``val_grid_<step>.png``);
* progress as ``progress(step, total, info)``; ``cancel()`` (or an Event) is polled before
  every step.

Qt-free.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import json
import math
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import degradations, faces
from .device import resolve_device
from .datasets import ATTRIBUTES, FaceDataset, check_jitter
from .metrics import consistency, psnr, ssim
from .models import (
    AttributeClassifier,
    AttributeClassifierConfig,
    CheckpointError,
    ScoreNetConfig,
    ScoreUNet,
    load_checkpoint,
    save_checkpoint,
)
from .provenance import atomic_save_png, atomic_write_bytes, atomic_write_text, sha256_bytes, \
    sha256_file, utc_now_iso, versions, write_json_atomic
from .sampling import NoiseSource, SamplingCancelled, fast_sample, mean_estimate, model_score_fn
from .sde import VESDE
from .video import InputError

__all__ = [
    "TrainingError",
    "ScoreTrainConfig",
    "AttrTrainConfig",
    "TrainOptions",
    "TrainResult",
    "train_score",
    "train_attributes",
    "export_score",
    "export_attributes",
    "edm_loss",
    "sample_sigmas",
    "masked_bce",
    "load_train_state",
    "STATE_JSON",
    "METRICS_FILE",
]

PathLike = Union[str, os.PathLike]
ProgressFn = Callable[[int, int, dict], None]

STATE_JSON = "train_state.json"
METRICS_FILE = "metrics.jsonl"
STATE_FORMAT = "sdesr-train/1"


from .errors import TrainingError, is_cancelled as _is_cancelled  # noqa: E402  (re-exported)


# ------------------------------------------------------------------------------------------
# configs
# ------------------------------------------------------------------------------------------
class _ConfigMixin:
    #: fields that may change when a run is resumed (they do not change the trajectory, except
    #: that steps and cooldown place the end of the schedule: a run can be extended, then cooled)
    RESUME_MUTABLE: tuple[str, ...] = ("steps", "cooldown", "val_every", "val_images", "val_steps",
                                       "val_method", "ckpt_every", "log_every", "device", "amp",
                                       "val_sigmas", "default_h", "threads")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)  # type: ignore[arg-type]
        return json.loads(json.dumps(d))  # tuples -> lists: JSON form

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training config keys: {', '.join(unknown)}")
        kw = dict(d)
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in kw and isinstance(kw[f.name], list) and f.name != "net":
                kw[f.name] = tuple(kw[f.name])
        return cls(**kw)

    def _check_common(self) -> None:
        c = self
        if c.steps < 0:  # type: ignore[attr-defined]
            raise ValueError("steps cannot be negative")
        if c.batch_size < 1:  # type: ignore[attr-defined]
            raise ValueError("batch_size must be at least 1")
        if not 0.0 <= c.ema < 1.0:  # type: ignore[attr-defined]
            raise ValueError("ema must be in [0, 1)")
        if c.lr <= 0:  # type: ignore[attr-defined]
            raise ValueError("lr must be positive")
        if not 0 <= c.cooldown <= max(c.steps, 0):  # type: ignore[attr-defined]
            raise ValueError("cooldown must be between 0 and steps")


@dataclasses.dataclass
class ScoreTrainConfig(_ConfigMixin):
    """Settings of :func:`train_score` (stored in the run state and the exported weights)."""

    steps: int = 100_000
    batch_size: int = 16
    lr: float = 2e-4
    warmup: int = 500
    #: the last ``cooldown`` steps of the schedule take the learning rate linearly to zero
    cooldown: int = 0
    weight_decay: float = 0.01
    ema: float = 0.999
    crop: Optional[int] = 64
    grad_clip: float = 1.0
    p_mean: float = -1.2
    p_std: float = 1.2
    uniform_frac: float = 0.25
    sigma_min: float = 0.01
    sigma_max: float = 348.0
    val_every: int = 1000
    val_images: int = 16
    val_steps: int = 20
    val_method: str = "dpmpp_2m"
    ckpt_every: int = 500
    log_every: int = 50
    degradation: str = "bicubic"
    lr_size: int = faces.LR_SIZE  # 16: the 8x model (16 -> 128); 8: the 16x model
    # the footage-grade draws of degradation "realistic" (degradations.DegradationMix fields)
    degradation_mix: dict = dataclasses.field(default_factory=lambda: degradations.DegradationMix().to_dict())
    flip: bool = True
    shift: int = 0  # random translation of the HR frame, pixels (FaceDataset's shift)
    scale_jitter: float = 0.0  # random zoom of the HR frame, up to 1 + this (FaceDataset's)
    color_jitter: float = 0.0  # random brightness / contrast / saturation, 1 +- this (FaceDataset's)
    max_scale: Optional[float] = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    threads: int = 0
    init: Optional[str] = None  # warm start: a score checkpoint whose matching weights a new run starts from
    net: dict = dataclasses.field(default_factory=lambda: ScoreNetConfig().to_dict())

    def validate(self) -> None:
        self._check_common()
        if self.degradation not in ("bicubic", "realistic"):
            raise ValueError("degradation must be 'bicubic' or 'realistic'")
        if self.lr_size not in (8, 16):
            raise ValueError("lr_size must be 16 (the 8x model) or 8 (the 16x model)")
        degradations.DegradationMix.from_dict(self.degradation_mix)
        if not 0 <= self.shift < faces.FRAME_SIZE // 2:
            raise ValueError(f"shift must be between 0 and {faces.FRAME_SIZE // 2 - 1} pixels")
        check_jitter(self.scale_jitter, self.color_jitter)
        if not 0.0 <= self.uniform_frac <= 1.0:
            raise ValueError("uniform_frac must be in [0, 1]")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError("need 0 < sigma_min < sigma_max")
        cfg = ScoreNetConfig.from_dict(dict(self.net))
        m = 2 ** (len(cfg.channels) - 1)
        if self.crop is not None and (self.crop % m or self.crop > faces.FRAME_SIZE):
            raise ValueError(f"crop must be a multiple of {m} and at most {faces.FRAME_SIZE}")

    @classmethod
    def tiny(cls, **kw) -> "ScoreTrainConfig":
        """A config with a tiny network, for tests.

        :meth:`ScoreNetConfig.tiny` with a third level and no level attention, so the
        middle attention runs on 32x32 positions of a 128 frame instead of 64x64 (fast on CPU).
        """
        net = dict(ScoreNetConfig.tiny().to_dict(), channels=[8, 16, 16], attn_resolutions=[])
        base = dict(steps=10, batch_size=4, warmup=0, lr=1e-3, crop=64, val_every=0,
                    val_images=2, val_steps=2, ckpt_every=0, log_every=0, net=net)
        base.update(kw)
        return cls(**base)


@dataclasses.dataclass
class AttrTrainConfig(_ConfigMixin):
    """Settings of :func:`train_attributes`.

    Noise levels: log-uniform over [sigma_min, sigma_max]; a share ``low_sigma_frac`` of the
    batch is drawn log-uniform over [sigma_min, low_sigma_max] instead (extra mass where the
    classifier can actually see the attributes, which is where guidance matters most).
    """

    steps: int = 20_000
    batch_size: int = 32
    lr: float = 3e-4
    warmup: int = 200
    cooldown: int = 0  # as in ScoreTrainConfig
    weight_decay: float = 0.01
    ema: float = 0.999
    grad_clip: float = 1.0
    sigma_min: float = 0.01
    sigma_max: float = 348.0
    low_sigma_frac: float = 0.3
    low_sigma_max: float = 1.0
    balance: tuple = ("beard", "eyeglasses")
    max_pos_weight: float = 10.0
    flip: bool = True
    crop: Optional[int] = None
    val_every: int = 1000
    val_images: int = 512
    val_sigmas: tuple = (0.01, 0.1, 1.0, 10.0)
    ckpt_every: int = 500
    log_every: int = 50
    max_scale: Optional[float] = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    threads: int = 0
    default_h: float = 500.0
    # adversarial (PGD) training: x_t is pushed, within an L2 ball of radius adv_eps per image
    # ([0, 1] units), towards a higher loss in adv_steps steps before the update. A robust
    # classifier's input gradient looks like image features, not noise patterns, which is what
    # guidance adds to the score (Kawar et al. 2022, "robust classifier guidance"). 0 = off.
    adv_eps: float = 0.0
    adv_steps: int = 2
    init: Optional[str] = None  # warm start: a classifier checkpoint (see ScoreTrainConfig.init)
    net: dict = dataclasses.field(default_factory=lambda: AttributeClassifierConfig().to_dict())

    def validate(self) -> None:
        self._check_common()
        if not 0.0 <= self.low_sigma_frac <= 1.0:
            raise ValueError("low_sigma_frac must be in [0, 1]")
        if self.adv_eps < 0 or (self.adv_eps > 0 and self.adv_steps < 1):
            raise ValueError("adv_eps must be >= 0, with adv_steps >= 1 when it is > 0")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError("need 0 < sigma_min < sigma_max")
        cfg = AttributeClassifierConfig.from_dict(dict(self.net))
        bad = [a for a in self.balance if a not in cfg.attributes]
        if bad:
            raise ValueError(f"cannot balance unknown attributes {bad}")
        if tuple(cfg.attributes) != tuple(ATTRIBUTES[: len(cfg.attributes)]) and \
                any(a not in ATTRIBUTES for a in cfg.attributes):
            raise ValueError(f"the dataset has labels for {ATTRIBUTES} only")

    @classmethod
    def tiny(cls, **kw) -> "AttrTrainConfig":
        """A config with the tiny classifier, for tests."""
        base = dict(steps=10, batch_size=4, warmup=0, lr=1e-3, val_every=0, val_images=4,
                    ckpt_every=0, log_every=0, net=AttributeClassifierConfig.tiny().to_dict())
        base.update(kw)
        return cls(**base)


@dataclasses.dataclass
class TrainOptions:
    """How a training call runs (none of it changes what is learned).

    resume: continue the run saved in the run folder (its settings must match the config,
        except the step count, logging/validation cadence and the device); if False and the
        folder already holds a run, :class:`TrainingError` is raised.
    progress: ``progress(step, total, info)`` after every step (and after validation).
    cancel: callable or Event; polled before every step. On cancel the state is saved and the
        result says ``cancelled``.
    log: sink for one-line messages.
    show_progress: a tqdm bar on stderr.
    steps: stop after this many steps in total (default ``config.steps``), e.g. to run part of
        a schedule now and the rest later.
    """

    resume: bool = True
    progress: Optional[ProgressFn] = None
    cancel: Any = None
    log: Callable[[str], None] = print
    show_progress: bool = True
    steps: Optional[int] = None


@dataclasses.dataclass
class TrainResult:
    """Outcome of a training call."""

    run_dir: str
    step: int
    total: int
    cancelled: bool
    losses: list[float]
    last_val: Optional[dict]
    seconds: float
    sec_per_step: Optional[float]

    @property
    def done(self) -> bool:
        return self.step >= self.total


# ------------------------------------------------------------------------------------------
# losses and noise levels
# ------------------------------------------------------------------------------------------
def sample_sigmas(n: int, gen: torch.Generator, *, p_mean: float, p_std: float,
                  uniform_frac: float, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """EDM log-normal noise levels; the first ``round(n * uniform_frac)`` log-uniform instead."""
    ln = torch.randn(n, generator=gen, dtype=torch.float64) * p_std + p_mean
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    lu = math.log(sigma_min) + u * (math.log(sigma_max) - math.log(sigma_min))
    k = int(round(n * uniform_frac))
    log_sigma = torch.cat([lu[:k], ln[k:]])
    return log_sigma.exp().float()


def _step_noise(shape: Sequence[int], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """The step's Gaussian noise, drawn on ``device`` (seeded from the step's CPU generator on a
    GPU: drawing a batch of 128 frames on one CPU core would take longer than the GPU's step)."""
    if device.type == "cpu":
        return torch.randn(tuple(shape), generator=gen)
    g = torch.Generator(device=device).manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=gen)))
    return torch.randn(tuple(shape), generator=g, device=device)


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def edm_loss(model: ScoreUNet, x0: torch.Tensor, y_up: torch.Tensor, sigma: torch.Tensor,
             noise: torch.Tensor, *, autocast_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Per-sample EDM loss  lambda(sigma) * mean ||D(x0 + sigma n, sigma, y_up) - x0||^2,
    lambda = (sigma^2 + sd^2) / (sigma sd)^2.  Returns ``[B]`` (float32)."""
    sd = model.sigma_data
    s = sigma.reshape(-1, 1, 1, 1).to(x0.dtype)
    x = x0 + s * noise
    with _autocast(x0.device, autocast_dtype):
        d = model.denoise(x, sigma.to(x0.dtype), y_up)
    w = (sigma.float() ** 2 + sd ** 2) / (sigma.float() * sd) ** 2
    err = (d.float() - x0.float()).pow(2).flatten(1).mean(dim=1)
    return w * err


def masked_bce(logits: torch.Tensor, targets: torch.Tensor,
               pos_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Binary cross-entropy over the known labels only (targets 1 / 0; < 0 = unknown).

    Mean over the known entries (0 if none); unknown entries get exactly zero gradient.
    """
    mask = targets >= 0
    t = torch.where(mask, targets, torch.zeros_like(targets)).to(logits.dtype)
    per = F.binary_cross_entropy_with_logits(logits.float(), t.float(), reduction="none",
                                             pos_weight=None if pos_weight is None
                                             else pos_weight.to(logits.device).float())
    per = torch.where(mask, per, torch.zeros_like(per))
    return per.sum() / mask.sum().clamp_min(1).float()


# ------------------------------------------------------------------------------------------
# RNG state encoding (JSON, no pickle)
# ------------------------------------------------------------------------------------------
def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().contiguous().numpy().tobytes()).decode("ascii")


def _rng_state() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    out: dict[str, Any] = {
        "python": {"version": py[0], "state": list(py[1]), "gauss_next": py[2]},
        "numpy": {"kind": np_state[0],
                  "keys_b64": base64.b64encode(np.asarray(np_state[1], dtype="<u4").tobytes()).decode(),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        out["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return out


def _set_rng_state(st: Mapping[str, Any]) -> None:
    py = st["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"]), py["gauss_next"]))
    n = st["numpy"]
    keys = np.frombuffer(base64.b64decode(n["keys_b64"]), dtype="<u4").astype(np.uint32)
    np.random.set_state((n["kind"], keys, int(n["pos"]), int(n["has_gauss"]),
                         float(n["cached_gaussian"])))
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(st["torch"])),
                                         dtype=torch.uint8).clone())
    if "cuda" in st and torch.cuda.is_available():
        states = [torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()
                  for s in st["cuda"]]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


# ------------------------------------------------------------------------------------------
# the engine
# ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _torch_threads(n: int):
    """Use ``n`` CPU threads for the duration (0: leave torch's setting)."""
    old = torch.get_num_threads()
    if n and n > 0:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if n and n > 0:
            torch.set_num_threads(old)


def _lr_at(step: int, base: float, warmup: int, total: int = 0, cooldown: int = 0) -> float:
    """Learning rate of (0-based) step ``step``: linear warm-up, constant, then (the last
    ``cooldown`` of ``total`` steps) linearly down to ``base / cooldown`` at the last step."""
    lr = base if warmup <= 0 else base * min(1.0, (step + 1) / warmup)
    if cooldown > 0 and total > 0 and step >= total - cooldown:
        lr *= max(total - step, 1) / cooldown
    return lr


class _Batches:
    """Deterministic batch indices: epoch-wise permutations seeded by (seed, epoch)."""

    def __init__(self, n: int, batch: int, seed: int) -> None:
        self.n, self.batch, self.seed = n, batch, seed
        self._cache: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        p = self._cache.get(epoch)
        if p is None:
            if len(self._cache) > 4:
                self._cache.clear()
            p = np.random.default_rng([self.seed, epoch, 0xDA7A]).permutation(self.n)
            self._cache[epoch] = p
        return p

    def indices(self, step: int) -> np.ndarray:
        pos = np.arange(step * self.batch, (step + 1) * self.batch, dtype=np.int64)
        out = np.empty_like(pos)
        for i, p in enumerate(pos):
            out[i] = self._perm(int(p // self.n))[int(p % self.n)]
        return out


def _step_rngs(seed: int, step: int) -> tuple[np.random.Generator, torch.Generator]:
    rng = np.random.default_rng([seed, step, 0x5EED])
    gen = torch.Generator().manual_seed(int(rng.integers(0, 2 ** 63 - 1)))
    return rng, gen


class _EMA:
    def __init__(self, model: nn.Module) -> None:
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        mine = list(self.model.parameters())
        theirs = [p.detach() for p in model.parameters()]
        if mine:  # one fused call: a loop over ~300 tensors costs as much as a GPU step
            torch._foreach_lerp_(mine, theirs, 1.0 - decay)
        for be, b in zip(self.model.buffers(), model.buffers()):
            be.copy_(b)


def _amp_setup(device: torch.device, enabled: bool):
    if device.type != "cuda" or not enabled:
        return None, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def _grid_png(rows: Sequence[Sequence[torch.Tensor]], gap: int = 2) -> np.ndarray:
    """Tile ``rows`` of [3, H, W] tensors into one uint8 image with white gaps."""
    tiles = [[faces.to_uint8(t)[0] for t in r] for r in rows]
    h, w = tiles[0][0].shape[:2]
    nr, nc = len(tiles), len(tiles[0])
    out = np.full((nr * h + (nr - 1) * gap, nc * w + (nc - 1) * gap, 3), 255, dtype=np.uint8)
    for i, r in enumerate(tiles):
        for j, t in enumerate(r):
            out[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = t
    return out


def _append_jsonl(path: Path, obj: Mapping[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(obj, sort_keys=True, default=float) + "\n")
        fh.flush()


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after ``step`` (a crash after the last checkpoint)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line).get("step", 0)) <= step:
                keep.append(line)
        except (ValueError, AttributeError):
            continue
    atomic_write_text(path, "".join(k + "\n" for k in keep))


def load_train_state(run_dir: PathLike) -> Optional[tuple[dict[str, Any], dict[str, torch.Tensor]]]:
    """``(state_json, tensors)`` of the last checkpoint in ``run_dir``, or ``None``."""
    from safetensors.torch import load as st_load

    run = Path(run_dir)
    sj = run / STATE_JSON
    if not sj.is_file():
        return None
    try:
        state = json.loads(sj.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise TrainingError(f"The training state in '{run}' is unreadable.", sj) from None
    if state.get("format") != STATE_FORMAT:
        raise TrainingError(f"'{sj.name}' in '{run}' is not a training state of this version.", sj)
    tf = run / state["tensors_file"]
    try:
        data = tf.read_bytes()
    except OSError:
        raise TrainingError(f"The training state in '{run}' names a missing tensor file "
                            f"'{tf.name}'.", tf) from None
    if sha256_bytes(data) != state.get("tensors_sha256"):
        raise TrainingError(f"The tensor file '{tf.name}' in '{run}' does not match its "
                            "recorded hash; the run state is corrupt.", tf)
    return state, st_load(data)


class _Engine:
    """What is shared by the two trainers: state, optimizer, EMA, checkpoints, the loop."""

    def __init__(self, kind: str, run_dir: Path, cfg, model: nn.Module, device: torch.device,
                 log: Callable[[str], None]) -> None:
        self.kind = kind
        self.run_dir = run_dir
        self.cfg = cfg
        self.device = device
        self.log = log
        self.model = model.to(device)
        self.ema = _EMA(self.model)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr,
                                     weight_decay=cfg.weight_decay, betas=(0.9, 0.999), eps=1e-8,
                                     fused=device.type == "cuda" or None)
        self.amp_dtype, self.scaler = _amp_setup(device, cfg.amp)
        if device.type == "cuda":  # fixed shapes: let cuDNN pick its fastest kernels once
            torch.backends.cudnn.benchmark = True
        self.step = 0
        self.losses: list[float] = []
        self.last_val: Optional[dict] = None
        self.extra: dict[str, Any] = {}
        self.seconds = 0.0

    # -------------------------------------------------------------- state I/O
    def _tensors(self) -> dict[str, torch.Tensor]:
        t: dict[str, torch.Tensor] = {}
        for k, v in self.model.state_dict().items():
            t[f"model.{k}"] = v.detach().cpu().contiguous().clone()
        for k, v in self.ema.model.state_dict().items():
            t[f"ema.{k}"] = v.detach().cpu().contiguous().clone()
        for pid, st in self.opt.state_dict()["state"].items():
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    t[f"opt.{pid}.{k}"] = v.detach().cpu().contiguous().clone()
        return t

    def save(self, data_info: Mapping[str, Any]) -> Path:
        from safetensors.torch import save as st_save

        self.run_dir.mkdir(parents=True, exist_ok=True)
        data = st_save(self._tensors())
        name = f"train_state_{self.step:08d}.safetensors"
        atomic_write_bytes(self.run_dir / name, data)
        state = {
            "format": STATE_FORMAT,
            "kind": self.kind,
            "step": self.step,
            "config": self.cfg.to_dict(),
            "losses": self.losses,
            "last_val": self.last_val,
            "rng": _rng_state(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "data": dict(data_info),
            "data_order": "step k uses positions [k*B, (k+1)*B) of epoch-wise permutations "
                          "seeded by (seed, epoch); augmentation and noise seeded by (seed, k)",
            "extra": self.extra,
            "seconds": round(self.seconds, 3),
            "tensors_file": name,
            "tensors_sha256": sha256_bytes(data),
            "saved_utc": utc_now_iso(),
            "versions": versions(),
        }
        write_json_atomic(self.run_dir / STATE_JSON, state)
        for old in self.run_dir.glob("train_state_*.safetensors"):
            if old.name != name:
                try:
                    old.unlink()
                except OSError:
                    pass
        return self.run_dir / STATE_JSON

    def load(self, state: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
        def sub(prefix: str) -> dict[str, torch.Tensor]:
            n = len(prefix)
            return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}

        self.model.load_state_dict(sub("model."), strict=True)
        self.ema.model.load_state_dict(sub("ema."), strict=True)
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in sub("opt.").items():
            pid, name = k.split(".", 1)
            opt_state.setdefault(int(pid), {})[name] = v
        groups = self.opt.state_dict()["param_groups"]
        self.opt.load_state_dict({"state": opt_state, "param_groups": groups})
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.losses = [float(v) for v in state.get("losses", [])]
        self.last_val = state.get("last_val")
        self.extra = dict(state.get("extra") or {})
        self.seconds = float(state.get("seconds", 0.0))
        _set_rng_state(state["rng"])
        _truncate_metrics(self.run_dir / METRICS_FILE, self.step)

    # -------------------------------------------------------------- one step
    def train_step(self, loss_fn: Callable[[nn.Module, int], torch.Tensor]) -> float:
        cfg = self.cfg
        self.model.train()
        lr = _lr_at(self.step, cfg.lr, cfg.warmup, cfg.steps, cfg.cooldown)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss = loss_fn(self.model, self.step)
        if not torch.isfinite(loss):
            raise TrainingError(f"The training loss became {float(loss)} at step "
                                f"{self.step + 1}; lower the learning rate.")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
        else:
            loss.backward()
        if cfg.grad_clip and cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        decay = min(cfg.ema, (1.0 + self.step) / (10.0 + self.step))
        self.ema.update(self.model, decay)
        self.step += 1
        value = float(loss.detach())
        self.losses.append(value)
        return value


class _SigintFlag:
    """While active (main thread only), Ctrl-C sets a flag so the loop stops at a step boundary;
    a second Ctrl-C raises KeyboardInterrupt as usual."""

    def __init__(self) -> None:
        self.hit = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self._old = signal.signal(signal.SIGINT, self._handler)
            except (ValueError, OSError):
                self._old = None
        return self

    def _handler(self, signum, frame):
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def _prepare_run(kind: str, run_dir: PathLike, cfg, resume: bool, log) -> tuple[Path, Optional[tuple]]:
    run = Path(run_dir).expanduser()
    if run.exists() and not run.is_dir():
        raise TrainingError(f"The run folder '{run}' exists and is not a folder.", run)
    loaded = load_train_state(run) if run.is_dir() else None
    if loaded is not None:
        state = loaded[0]
        if not resume:
            raise TrainingError(f"The run folder '{run}' already holds a training run; resume it "
                                "or choose a new folder.", run)
        if state.get("kind") != kind:
            raise TrainingError(f"The run folder '{run}' holds a {state.get('kind')} run, "
                                f"not a {kind} run.", run)
        saved = state["config"]
        new = cfg.to_dict()
        default = type(cfg)().to_dict()  # a setting newer than the run: it ran at the default
        diff = [k for k in new if k not in cfg.RESUME_MUTABLE and saved.get(k, default.get(k)) != new[k]]
        if diff:
            raise TrainingError(f"The run in '{run}' was started with different settings "
                                f"({', '.join(diff)}); resume with the same settings or use a "
                                "new run folder.", run)
    return run, loaded


def _run_loop(engine: _Engine, *, total: int, loss_fn, validate, data_info: dict,
              progress: Optional[ProgressFn], cancel, show_progress: bool) -> TrainResult:
    cfg = engine.cfg
    log = engine.log
    metrics_path = engine.run_dir / METRICS_FILE
    start_step = engine.step
    t_start = time.perf_counter()
    cancelled = False
    window: list[float] = []
    sec_per_step = None
    bar = None
    if show_progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=start_step, file=sys.stderr, dynamic_ncols=True,
                       desc=f"train {engine.kind}", unit="step")
        except Exception:  # pragma: no cover - tqdm missing
            bar = None
    in_update = False
    try:
        with _SigintFlag() as sig:
            while engine.step < total:
                if _is_cancelled(cancel) or sig.hit:
                    cancelled = True
                    break
                t0 = time.perf_counter()
                in_update = True
                loss = engine.train_step(loss_fn)
                in_update = False
                dt = time.perf_counter() - t0
                engine.seconds += dt
                window.append(dt)
                window = window[-50:]
                sec_per_step = sum(window) / len(window)
                step = engine.step
                info = {"phase": "train", "loss": loss, "lr": _lr_at(step - 1, cfg.lr, cfg.warmup, cfg.steps, cfg.cooldown),
                        "sec_per_step": sec_per_step, "eta_s": (total - step) * sec_per_step}
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                if cfg.log_every and step % cfg.log_every == 0:
                    recent = engine.losses[-cfg.log_every:]
                    _append_jsonl(metrics_path, {"step": step, "kind": "train",
                                                 "loss": sum(recent) / len(recent),
                                                 "lr": info["lr"], "sec_per_step": sec_per_step})
                if progress is not None:
                    progress(step, total, info)
                if cfg.val_every and (step % cfg.val_every == 0 or step == total):
                    val = validate(engine, step, lambda: sig.hit or _is_cancelled(cancel))
                    if val is not None:
                        engine.last_val = val
                        _append_jsonl(metrics_path, {"step": step, "kind": "val", **val})
                        log(f"step {step}: validation " + ", ".join(
                            f"{k} {v:.4g}" for k, v in val.items()
                            if isinstance(v, (int, float)) and not k.startswith("acc_")))
                        if progress is not None:
                            progress(step, total, {"phase": "val", **val})
                if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or step == total:
                    engine.save(data_info)
    except KeyboardInterrupt:
        if not in_update and engine.step > start_step:
            engine.save(data_info)
            log(f"Interrupted; the run was saved at step {engine.step}.")
        raise
    finally:
        if bar is not None:
            bar.close()
    if cancelled:
        engine.save(data_info)
        log(f"Training cancelled; the run was saved at step {engine.step} of {total}.")
    elif engine.step == start_step and not (engine.run_dir / STATE_JSON).exists():
        engine.save(data_info)
    return TrainResult(run_dir=str(engine.run_dir), step=engine.step, total=total,
                       cancelled=cancelled, losses=list(engine.losses), last_val=engine.last_val,
                       seconds=time.perf_counter() - t_start, sec_per_step=sec_per_step)


def _data_info(dataset_dir: Path, train: FaceDataset, val: Optional[FaceDataset]) -> dict:
    manifest = dataset_dir / "manifest.csv"
    return {"dataset_dir": str(dataset_dir), "manifest_sha256": sha256_file(manifest),
            "train_fingerprint": train.fingerprint(), "n_train": len(train),
            "n_train_identities": len(set(train.identities)),
            "n_val": len(val) if val is not None else 0}


def _validated(cfg):
    try:
        cfg.validate()
    except ValueError as exc:
        raise TrainingError(f"The training settings are invalid: {exc}.") from None
    return cfg


def _open_data(dataset_dir: Path, cfg, log, **train_kw) -> tuple[FaceDataset, Optional[FaceDataset]]:
    """The training split (with ``train_kw``) and the fixed validation faces (or None)."""
    lr_size = getattr(cfg, "lr_size", faces.LR_SIZE)
    train = FaceDataset(dataset_dir, "train", crop=cfg.crop, flip=cfg.flip, shift=getattr(cfg, "shift", 0),
                        scale_jitter=getattr(cfg, "scale_jitter", 0.0),
                        color_jitter=getattr(cfg, "color_jitter", 0.0), seed=cfg.seed,
                        max_scale=cfg.max_scale, lr_size=lr_size, **train_kw)
    if len(train) == 0:
        raise TrainingError(f"The dataset '{dataset_dir}' has no training images.", dataset_dir)
    val = None
    if cfg.val_every and cfg.val_images > 0:
        val = FaceDataset(dataset_dir, "val", crop=None, flip=False, limit=cfg.val_images, lr_size=lr_size)
        if len(val) == 0:
            log("No validation images in the dataset; validation is skipped.")
    return train, val


#: run kind -> the checkpoint kind a run of it can warm-start from
_INIT_KIND = {"score": "score", "attributes": "classifier"}


def _warm_start(kind: str, model: nn.Module, path: str, log) -> dict[str, Any]:
    """Load the weights of checkpoint ``path`` into a new run's ``model``.

    Every tensor of the checkpoint must fit a parameter of the same name and shape; parameters
    the checkpoint lacks (a part the new design adds) keep their initialisation and are listed.
    Returns what the run state records: path, sha256, the checkpoint's kind and the new names.
    """
    p = Path(path).expanduser()
    try:
        old, meta = load_checkpoint(p, device="cpu")
    except CheckpointError as exc:
        raise TrainingError(f"The warm-start weights cannot be used: {exc}", p) from None
    want = _INIT_KIND[kind]
    if meta.get("kind") != want:
        raise TrainingError(f"The warm-start file '{p.name}' holds a {meta.get('kind')} model, "
                            f"not a {want} model.", p)
    mine = model.state_dict()
    state = old.state_dict()
    bad = sorted(k for k, v in state.items() if k not in mine or mine[k].shape != v.shape)
    if bad:
        raise TrainingError(f"The warm-start file '{p.name}' does not fit this network design "
                            f"({len(bad)} tensors differ, e.g. {bad[0]}).", p)
    model.load_state_dict(state, strict=False)
    new = sorted({k.split(".")[0] for k in mine if k not in state})
    log(f"Warm start from '{p.name}': {len(state)} tensors loaded"
        + (f"; new parts start fresh: {', '.join(new)}." if new else "."))
    return {"path": str(p), "sha256": sha256_file(p), "kind": meta.get("kind"), "new_parts": new,
            "training": _stage_record(meta)}


def _stage_record(meta: Mapping[str, Any]) -> dict[str, Any]:
    """What a warm-started run keeps of its source checkpoint's training: steps, seconds, and
    that file's own warm start (so the lineage chains back through every stage)."""
    tr = meta.get("training") if isinstance(meta.get("training"), Mapping) else {}
    return {k: tr[k] for k in ("steps", "train_seconds", "init") if k in tr}


def _start_engine(kind: str, run: Path, cfg, loaded, build: Callable[[], nn.Module],
                  device: torch.device, log, describe: Callable[[nn.Module], str]) -> "_Engine":
    """Seed a new run (or restore a saved one) and return its engine; ``build`` makes the model
    after seeding (a new run with ``cfg.init`` then loads that checkpoint's weights),
    ``describe(model)`` is the first log line of a new run."""
    init = None
    if loaded is None:
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2 ** 32)
    model = build()
    if loaded is None and getattr(cfg, "init", None):
        init = _warm_start(kind, model, cfg.init, log)
    engine = _Engine(kind, run, cfg, model, device, log)
    if init is not None:
        engine.extra["init"] = init
    if loaded is not None:
        engine.load(*loaded)
        log(f"Resuming the {kind} run in '{run}' at step {engine.step}.")
    else:
        run.mkdir(parents=True, exist_ok=True)
        log(describe(model))
    return engine


def _train(engine: "_Engine", steps: Optional[int], loss_fn, validate, info: dict,
           progress: Optional[ProgressFn], cancel, show_progress: bool) -> "TrainResult":
    """Run ``engine`` to ``steps`` (at most the config's schedule) with its thread setting."""
    cfg = engine.cfg
    total = int(cfg.steps if steps is None else min(int(steps), cfg.steps))
    with _torch_threads(cfg.threads):
        return _run_loop(engine, total=total, loss_fn=loss_fn, validate=validate, data_info=info,
                         progress=progress, cancel=cancel, show_progress=show_progress)


def _check_data(loaded, info: dict, log) -> None:
    if loaded is None:
        return
    old = loaded[0].get("data", {})
    if old.get("train_fingerprint") and old.get("train_fingerprint") != info["train_fingerprint"]:
        log("Warning: the training images differ from those the run started with; the resumed "
            "run will not match an uninterrupted one exactly.")


# ------------------------------------------------------------------------------------------
# score network
# ------------------------------------------------------------------------------------------
def _validation_cs(sr: torch.Tensor, y_up: torch.Tensor, hr: torch.Tensor):
    """Mean CS (dlib embeddings) of the samples and of bicubic vs HR; None without dlib."""
    try:
        from .gallery import get_embedder

        emb = get_embedder("dlib")
        e_hr, e_sr, e_bi = (emb.embed_aligned(faces.to_uint8(t)) for t in (hr, sr, y_up))
    except Exception:  # no embedder installed: validation goes on without CS
        return None
    return float((e_sr * e_hr).sum(1).mean()), float((e_bi * e_hr).sum(1).mean())


def _score_validate_fn(cfg: ScoreTrainConfig, val: Optional[FaceDataset], run_dir: Path,
                       device: torch.device):
    if val is None or len(val) == 0:
        return lambda engine, step, stop: None
    batch = val.batch(list(range(len(val))), None, crop=None, flip=False, degradation="bicubic")
    sde = VESDE(cfg.sigma_min, cfg.sigma_max)
    # a footage-grade run is also validated on the "moderate" degraded set (mean estimate only)
    deg_lr = None
    if cfg.degradation == "realistic":
        deg_lr = degradations.degraded_set(batch["hr"], ("moderate",), seed=cfg.seed, lr_size=val.lr_size)["moderate"][0]

    def validate(engine: _Engine, step: int, stop) -> Optional[dict]:
        t0 = time.perf_counter()
        hr, lr, y_up = batch["hr"], batch["lr"], batch["y_up"]
        model = engine.ema.model.eval()
        deg: dict[str, float] = {}
        if deg_lr is not None:
            d_up = faces.upsample(deg_lr, hr.shape[-1])
            with torch.no_grad():
                d_mean = torch.cat([mean_estimate(model, d_up[i:i + 16].to(device), cfg.sigma_max)
                                    for i in range(0, len(hr), 16)]).float().cpu().clamp(0.0, 1.0)
            deg = {"psnr_mean_moderate": float(psnr(d_mean, hr).mean()),
                   "psnr_bicubic_moderate": float(psnr(d_up, hr).mean())}
        with torch.no_grad():
            score = model_score_fn(model, sde, y_up.to(device))
            noise = NoiseSource([cfg.seed * 100_003 + i for i in range(len(hr))])
            try:
                res = fast_sample(score, sde, tuple(hr.shape[1:]), noise, n_steps=cfg.val_steps,
                                  method=cfg.val_method, device=device, cancel=stop)
            except SamplingCancelled:
                return None
            mean = torch.cat([mean_estimate(model, y_up[i:i + 16].to(device), cfg.sigma_max)
                              for i in range(0, len(hr), 16)]).float().cpu().clamp(0.0, 1.0)
        sr = res.samples.float().cpu().clamp(0.0, 1.0)
        out = {
            "psnr_mean": float(psnr(mean, hr).mean()), "ssim_mean": float(ssim(mean, hr).mean()),
            "consistency_mean": float(consistency(mean, lr).mean()),
            "psnr": float(psnr(sr, hr).mean()), "ssim": float(ssim(sr, hr).mean()),
            "consistency": float(consistency(sr, lr).mean()),
            "psnr_bicubic": float(psnr(y_up, hr).mean()), "ssim_bicubic": float(ssim(y_up, hr).mean()),
            "consistency_bicubic": float(consistency(y_up, lr).mean()),
            "loss": float(np.mean(engine.losses[-max(1, cfg.log_every or 50):])),
            "n_images": len(hr), "sampler_steps": cfg.val_steps,
        }
        cs_vals = _validation_cs(sr, y_up, hr)
        if cs_vals is not None:
            out["cs"], out["cs_bicubic"] = cs_vals
        out.update(deg)
        nearest = F.interpolate(lr, size=hr.shape[-2:], mode="nearest")
        k = min(8, len(hr))
        grid = _grid_png([[nearest[i], y_up[i], mean[i], sr[i], hr[i]] for i in range(k)])
        atomic_save_png(run_dir / f"val_grid_{step:07d}.png", grid)
        out["seconds"] = round(time.perf_counter() - t0, 2)
        return out

    return validate


def train_score(
    dataset_dir: PathLike,
    run_dir: PathLike,
    config: Optional[ScoreTrainConfig] = None,
    **options: Any,
) -> TrainResult:
    """Train (or resume) the conditional score network on a prepared dataset.

    Args:
        dataset_dir: folder written by :func:`datasets.prepare_dataset`.
        run_dir: where checkpoints, ``metrics.jsonl`` and validation grids go (created).
        config: :class:`ScoreTrainConfig` (defaults if omitted).
        options: how the call runs (:class:`TrainOptions`: resume, progress, cancel, log,
            show_progress, steps).
    """
    o = TrainOptions(**options)
    cfg = _validated(config or ScoreTrainConfig())
    run, loaded = _prepare_run("score", run_dir, cfg, o.resume, o.log)
    dataset_dir = Path(dataset_dir).expanduser()
    device = resolve_device(cfg.device)
    train, val = _open_data(dataset_dir, cfg, o.log, degradation=cfg.degradation,
                            realistic=degradations.DegradationMix.from_dict(cfg.degradation_mix))
    info = _data_info(dataset_dir, train, val)
    _check_data(loaded, info, o.log)
    engine = _start_engine(
        "score", run, cfg, loaded, lambda: ScoreUNet(ScoreNetConfig.from_dict(dict(cfg.net))), device, o.log,
        lambda m: f"Training a score network with {m.num_parameters():,} parameters on {len(train)} "
                  f"images ({info['n_train_identities']} identities), device {device}.")
    model = engine.model
    engine.extra.setdefault("num_parameters", model.num_parameters())
    batches = _Batches(len(train), cfg.batch_size, cfg.seed)

    def loss_fn(m: nn.Module, step: int) -> torch.Tensor:
        rng, gen = _step_rngs(cfg.seed, step)
        b = train.batch(batches.indices(step), rng, device=device)
        n = b["hr"].shape[0]
        sigma = sample_sigmas(n, gen, p_mean=cfg.p_mean, p_std=cfg.p_std,
                              uniform_frac=cfg.uniform_frac, sigma_min=cfg.sigma_min,
                              sigma_max=cfg.sigma_max)
        noise = _step_noise(b["hr"].shape, gen, device)
        return edm_loss(m, b["hr"].to(device), b["y_up"].to(device), sigma.to(device),
                        noise, autocast_dtype=engine.amp_dtype).mean()

    return _train(engine, o.steps, loss_fn, _score_validate_fn(cfg, val, run, device), info,
                  o.progress, o.cancel, o.show_progress)


# ------------------------------------------------------------------------------------------
# attribute classifier
# ------------------------------------------------------------------------------------------
def _attr_sigmas(n: int, gen: torch.Generator, cfg: AttrTrainConfig) -> torch.Tensor:
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    lo = math.log(cfg.sigma_min)
    hi = torch.full((n,), math.log(cfg.sigma_max), dtype=torch.float64)
    k = int(round(n * cfg.low_sigma_frac))
    hi[:k] = math.log(max(cfg.low_sigma_max, cfg.sigma_min * 1.0001))
    return (lo + u * (hi - lo)).exp().float()


def _pos_weight(train: FaceDataset, cfg: AttrTrainConfig, attributes: Sequence[str]) -> list[float]:
    counts = train.label_counts()
    out = []
    for a in attributes:
        c = counts.get(a, {"pos": 0, "neg": 0})
        if a in cfg.balance and c["pos"] > 0:
            out.append(float(min(max(c["neg"] / c["pos"], 1.0), cfg.max_pos_weight)))
        else:
            out.append(1.0)
    return out


def _attr_columns(attributes: Sequence[str]) -> list[int]:
    missing = [a for a in attributes if a not in ATTRIBUTES]
    if missing:
        raise TrainingError(f"The dataset has no labels for {', '.join(missing)}.")
    return [ATTRIBUTES.index(a) for a in attributes]


def _attr_validate_fn(cfg: AttrTrainConfig, val: Optional[FaceDataset], attributes: Sequence[str],
                      device: torch.device):
    if val is None or len(val) == 0:
        return lambda engine, step, stop: None
    cols = _attr_columns(attributes)
    batch = val.batch(list(range(len(val))), None, crop=None, flip=False, degradation="bicubic")
    hr, labels = batch["hr"], batch["attrs"][:, cols]

    def validate(engine: _Engine, step: int, stop) -> Optional[dict]:
        t0 = time.perf_counter()
        model = engine.ema.model.eval()
        acc: dict[str, dict[str, Any]] = {}
        summary: dict[str, float] = {}
        for sigma in cfg.val_sigmas:
            g = torch.Generator().manual_seed(cfg.seed * 7919 + 17)
            z = torch.randn(hr.shape, generator=g)
            logits = []
            with torch.no_grad():
                for i in range(0, len(hr), 64):
                    x = (hr[i:i + 64] + float(sigma) * z[i:i + 64]).to(device)
                    logits.append(model(x, torch.full((len(x),), float(sigma), device=device)).float().cpu())
            pred = (torch.cat(logits) > 0).float()
            per: dict[str, Any] = {}
            for j, a in enumerate(attributes):
                known = labels[:, j] >= 0
                y, p = labels[known, j], pred[known, j]
                n = int(known.sum())
                if n == 0:
                    per[a] = {"n": 0, "acc": None, "bacc": None}
                    continue
                pos, neg = y == 1, y == 0
                tpr = float((p[pos] == 1).float().mean()) if pos.any() else None
                tnr = float((p[neg] == 0).float().mean()) if neg.any() else None
                bacc = 0.5 * (tpr + tnr) if tpr is not None and tnr is not None else None
                per[a] = {"n": n, "acc": float((p == y).float().mean()), "bacc": bacc}
                summary[f"acc_{a}_s{sigma:g}"] = per[a]["acc"]
                if bacc is not None:
                    summary[f"bacc_{a}_s{sigma:g}"] = bacc
            acc[f"{sigma:g}"] = per
        return {**summary, "per_sigma": acc, "n_images": len(hr),
                "loss": float(np.mean(engine.losses[-max(1, cfg.log_every or 50):])),
                "seconds": round(time.perf_counter() - t0, 2)}

    return validate


def _pgd_l2(m: nn.Module, x: torch.Tensor, sigma: torch.Tensor, targets: torch.Tensor,
            pos_weight: torch.Tensor, eps: float, steps: int, device, amp_dtype) -> torch.Tensor:
    """The perturbation delta (||delta||_2 <= eps per image) that PGD finds in ``steps`` normalised
    gradient-ascent steps of size 2.5 eps / steps on the masked BCE, from delta = 0."""
    delta = torch.zeros_like(x)
    alpha = 2.5 * eps / steps

    def norms(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)

    for _ in range(steps):
        delta.requires_grad_(True)
        with _autocast(device, amp_dtype):
            logits = m(x + delta, sigma)
        loss = masked_bce(logits.float(), targets, pos_weight)
        grad, = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = delta + alpha * grad / norms(grad)
            delta = delta * (eps / norms(delta)).clamp(max=1.0)
    return delta.detach()


def train_attributes(
    dataset_dir: PathLike,
    run_dir: PathLike,
    config: Optional[AttrTrainConfig] = None,
    **options: Any,
) -> TrainResult:
    """Train (or resume) the time-dependent attribute classifier on x_t = x0 + sigma z.

    Masked BCE (unknown labels ignored), ``pos_weight`` = neg/pos (clipped to
    ``max_pos_weight``) for the attributes in ``config.balance``; with ``adv_eps`` > 0 on
    PGD-perturbed x_t (:func:`_pgd_l2`). Checkpoint, resume, progress
    and cancel work as in :func:`train_score`; validation writes accuracy and balanced
    accuracy per attribute at each ``val_sigmas`` to ``metrics.jsonl``.
    """
    o = TrainOptions(**options)
    cfg = _validated(config or AttrTrainConfig())
    run, loaded = _prepare_run("attributes", run_dir, cfg, o.resume, o.log)
    dataset_dir = Path(dataset_dir).expanduser()
    device = resolve_device(cfg.device)
    net_cfg = AttributeClassifierConfig.from_dict(dict(cfg.net))
    attributes = list(net_cfg.attributes)
    cols = _attr_columns(attributes)
    train, val = _open_data(dataset_dir, cfg, o.log)
    counts = train.label_counts()
    if all(counts[a]["pos"] + counts[a]["neg"] == 0 for a in attributes):
        raise TrainingError(f"The dataset '{dataset_dir}' has no attribute labels; prepare it "
                            "with attribute tables.", dataset_dir)
    info = _data_info(dataset_dir, train, val)
    info["label_counts"] = counts
    _check_data(loaded, info, o.log)

    engine = _start_engine(
        "attributes", run, cfg, loaded, lambda: AttributeClassifier(net_cfg), device, o.log,
        lambda m: f"Training an attribute classifier ({', '.join(attributes)}) with "
                  f"{m.num_parameters():,} parameters on {len(train)} images, device {device}.")
    pw = _pos_weight(train, cfg, attributes)
    engine.extra["pos_weight"] = dict(zip(attributes, pw))
    pos_weight = torch.tensor(pw, dtype=torch.float32, device=device)
    batches = _Batches(len(train), cfg.batch_size, cfg.seed)

    def loss_fn(m: nn.Module, step: int) -> torch.Tensor:
        rng, gen = _step_rngs(cfg.seed, step)
        b = train.batch(batches.indices(step), rng, degradation="bicubic")
        x0 = b["hr"]
        sigma = _attr_sigmas(x0.shape[0], gen, cfg)
        x = x0 + sigma.view(-1, 1, 1, 1) * torch.randn(x0.shape, generator=gen)
        x, sigma, targets = x.to(device), sigma.to(device), b["attrs"][:, cols].to(device)
        if cfg.adv_eps > 0:
            x = x + _pgd_l2(m, x, sigma, targets, pos_weight, cfg.adv_eps, cfg.adv_steps, device, engine.amp_dtype)
        with _autocast(device, engine.amp_dtype):
            logits = m(x, sigma)
        return masked_bce(logits.float(), targets, pos_weight)

    return _train(engine, o.steps, loss_fn, _attr_validate_fn(cfg, val, attributes, device), info,
                  o.progress, o.cancel, o.show_progress)


# ------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------
def _load_for_export(run_dir: PathLike, kind: str) -> tuple[dict, dict[str, torch.Tensor]]:
    loaded = load_train_state(run_dir)
    if loaded is None:
        raise TrainingError(f"The folder '{run_dir}' holds no training run to export.")
    state, tensors = loaded
    if state.get("kind") != kind:
        raise TrainingError(f"The run in '{run_dir}' is a {state.get('kind')} run, not a {kind} run.")
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    return state, ema


def _training_meta(state: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    cfg = state["config"]
    out = {k: cfg.get(k) for k in keys if k in cfg}
    out.update(steps=state["step"], planned_steps=cfg.get("steps"),
               final_loss=float(np.mean(state["losses"][-100:])) if state.get("losses") else None,
               train_seconds=state.get("seconds"), ema=cfg.get("ema"), exported_utc=utc_now_iso())
    init = (state.get("extra") or {}).get("init")
    if init:  # the run was warm-started: the weights' lineage goes back through that file
        out["init"] = _init_lineage(init)
    return out


def _init_lineage(init: Mapping[str, Any]) -> dict[str, Any]:
    """What an export records of its warm-start file: name, sha256, the parts that started fresh
    and that file's own training (steps, seconds, its own warm start), read from the file when
    the run state predates recording it and the file is still there."""
    out = {"file": Path(str(init.get("path", ""))).name, "sha256": init.get("sha256"),
           "new_parts": list(init.get("new_parts") or [])}
    training = init.get("training")
    if training is None:
        p = Path(str(init.get("path", "")))
        try:
            if p.is_file() and sha256_file(p) == init.get("sha256"):
                training = _stage_record(load_checkpoint(p, device="cpu")[1])
        except CheckpointError:
            training = None
    if training:
        out["training"] = training
    return out


def _training_data(state: Mapping[str, Any], metadata: Mapping[str, Any]) -> Any:
    if "training_data" in metadata:
        return metadata["training_data"]
    d = state.get("data", {})
    return {"dataset": Path(d.get("dataset_dir", "")).name, "manifest_sha256": d.get("manifest_sha256"),
            "train_images": d.get("n_train"), "train_identities": d.get("n_train_identities"),
            "val_images": d.get("n_val")}


def export_score(run_dir: PathLike, out_path: PathLike, *, dtype: Optional[torch.dtype] = torch.float16,
                 metadata: Optional[Mapping[str, Any]] = None, quantize: Optional[str] = None) -> dict[str, Any]:
    """Write the EMA weights of a score run as a shipped checkpoint (kind ``"score"``).

    Metadata: ``sde``, ``data_range`` [0, 1], ``scale_factor`` 8, ``training_data``,
    ``training`` (steps, batch, crop, ...), ``metrics`` (last validation), then ``metadata``.
    ``quantize="int8"`` stores the convolution / linear weights as int8 (see checkpoint).
    Returns the metadata written.
    """
    state, ema = _load_for_export(run_dir, "score")
    cfg = state["config"]
    model = ScoreUNet(ScoreNetConfig.from_dict(dict(cfg["net"])))
    model.load_state_dict(ema, strict=True)
    user = dict(metadata or {})
    last = state.get("last_val") or {}
    meta: dict[str, Any] = {
        "name": Path(out_path).stem,
        "sde": VESDE(cfg.get("sigma_min", 0.01), cfg.get("sigma_max", 348.0)).to_dict(),
        "data_range": [0, 1],
        "scale_factor": faces.FRAME_SIZE // int(cfg.get("lr_size", faces.LR_SIZE)),
        "frame_size": faces.FRAME_SIZE,
        "lr_size": int(cfg.get("lr_size", faces.LR_SIZE)),
        "degradation": cfg.get("degradation", "bicubic"),
        **({"degradation_mix": cfg.get("degradation_mix") or degradations.DegradationMix().to_dict()}
           if cfg.get("degradation") == "realistic" else {}),
        "training_data": _training_data(state, user),
        "training": _training_meta(state, ("batch_size", "crop", "lr", "warmup", "cooldown", "weight_decay",
                                           "p_mean", "p_std", "uniform_frac", "grad_clip", "flip", "shift",
                                           "scale_jitter", "color_jitter", "degradation", "lr_size", "seed")),
        "metrics": {k: v for k, v in last.items() if isinstance(v, (int, float))},
        "generated_notice": "Outputs are generated images: investigative leads, not identifications.",
    }
    meta.update(user)
    return save_checkpoint(out_path, model, kind="score", config=model.config.to_dict(),
                           metadata=meta, dtype=dtype, quantize=quantize)


def export_attributes(run_dir: PathLike, out_path: PathLike, *, dtype: Optional[torch.dtype] = torch.float16,
                      metadata: Optional[Mapping[str, Any]] = None,
                      default_h: Optional[float] = None, quantize: Optional[str] = None) -> dict[str, Any]:
    """Write the EMA weights of an attribute run as a checkpoint (kind ``"classifier"``).

    Metadata: ``default_h``, ``attributes``, ``sde``, ``val_accuracy`` (per sigma, per
    attribute: acc / bacc / n from the last validation), ``training_data``, ``training``.
    """
    state, ema = _load_for_export(run_dir, "attributes")
    cfg = state["config"]
    model = AttributeClassifier(AttributeClassifierConfig.from_dict(dict(cfg["net"])))
    model.load_state_dict(ema, strict=True)
    user = dict(metadata or {})
    last = state.get("last_val") or {}
    meta: dict[str, Any] = {
        "name": Path(out_path).stem,
        "sde": VESDE(cfg.get("sigma_min", 0.01), cfg.get("sigma_max", 348.0)).to_dict(),
        "data_range": [0, 1],
        "attributes": list(model.attributes),
        "default_h": float(default_h if default_h is not None else cfg.get("default_h", 500.0)),
        "val_accuracy": last.get("per_sigma", {}),
        "pos_weight": (state.get("extra") or {}).get("pos_weight"),
        "training_data": _training_data(state, user),
        "training": _training_meta(state, ("batch_size", "lr", "warmup", "weight_decay",
                                           "low_sigma_frac", "low_sigma_max", "balance", "seed")),
    }
    meta.update(user)
    return save_checkpoint(out_path, model, kind="classifier", config=model.config.to_dict(),
                           metadata=meta, dtype=dtype, quantize=quantize)
