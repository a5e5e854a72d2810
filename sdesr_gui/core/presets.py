"""Sampler presets and defaults: the one table that :class:`~.enhance.SamplerSettings`, the CLI
and the GUI read.

* ``"fast"`` -- DPM-Solver++(2M) on a Karras sigma schedule with the whole evaluation budget,
  40 network evaluations (the default sampler).
* ``"pc"`` -- the SDE-SR paper's Predictor-Corrector (Algorithm 1 family, see
  :func:`~.sampling.pc_sample`): reverse-diffusion predictor + Langevin corrector with the
  paper's evaluation setting N = 2000, M = 2 and r = 0.16 (where identity similarity peaks).
  SRDG used N = 1000, M = 2; pass ``steps`` for that.

Method names are keys of the registries in :mod:`.sampling`; the fast preset's step limit comes
from its method's evaluations per step there, never from a number written here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .sampling import CORRECTORS, FAST_MAX_NFE, FAST_METHODS, PREDICTORS, fast_max_steps, fast_nfe

__all__ = [
    "SamplerPreset",
    "SAMPLER_PRESETS",
    "DEFAULT_SAMPLER",
    "DEFAULT_STEPS",
    "DEFAULT_H",
    "DEFAULT_GUIDANCE_SIGMA_MIN",
    "DEFAULT_GUIDANCE_CAP",
    "MAX_GUIDANCE_CAP",
    "MAX_H",
    "MAX_SAMPLES",
    "MAX_CORRECTOR_STEPS",
    "DEFAULT_MIRROR",
    "DEFAULT_MEAN_MIRROR",
    "DEFAULT_START_SIGMA",
]


@dataclass(frozen=True)
class SamplerPreset:
    """One sampler preset: its name, what the user sees, and its default settings."""

    key: str  # SamplerSettings.sampler, the CLI's --sampler choice, the GUI's preset data
    label: str  # the GUI's preset list
    steps: int  # N when none is given
    max_steps: int  # the largest N the GUI offers; for "fast" also the limit core enforces
    fast_method: str | None = None  # a FAST_METHODS name (fast)
    churn: float | None = None  # Karras churn (fast)
    predictor: str | None = None  # a PREDICTORS name (pc)
    corrector: str | None = None  # a CORRECTORS name (pc)
    corrector_steps: int | None = None  # M (pc)
    snr: float | None = None  # r, the Langevin signal-to-noise ratio (pc)

    @property
    def is_pc(self) -> bool:
        return self.fast_method is None

    @property
    def summary(self) -> str:
        """One line for help texts and tooltips, from the preset's values."""
        if not self.is_pc:
            return (f"{FAST_METHODS[self.fast_method].label}, {self.steps} steps = {self.evaluations()} network "
                    f"evaluations (at most {FAST_MAX_NFE})")
        return (f"the SDE-SR paper's predictor-corrector: {self.predictor} + {self.corrector}, "
                f"N = {self.steps}, M = {self.corrector_steps}, r = {self.snr:g} ({self.evaluations()} evaluations)")

    def evaluations(self, steps: int | None = None) -> int:
        """Score-network evaluations of one run with ``steps`` (default: the preset's N)."""
        n = self.steps if steps is None else int(steps)
        if not self.is_pc:
            return fast_nfe(self.fast_method, n)
        per_step = (self.corrector_steps if CORRECTORS[self.corrector] is not None else 0) \
            + (PREDICTORS[self.predictor] is not None)
        return n * per_step


_FAST_METHOD = "dpmpp_2m"

#: preset key -> preset; ``list(SAMPLER_PRESETS)`` gives the sampler names, in the GUI's order
SAMPLER_PRESETS: dict[str, SamplerPreset] = {
    "fast": SamplerPreset(
        key="fast",
        label="Fast (DPM-Solver++ 2M)",
        steps=fast_max_steps(_FAST_METHOD),  # the whole budget: 40 steps, 40 evaluations
        max_steps=fast_max_steps(_FAST_METHOD),
        fast_method=_FAST_METHOD,
        churn=0.0,
    ),
    "pc": SamplerPreset(
        key="pc",
        label="Paper PC (predictor-corrector)",
        steps=2000,
        max_steps=10000,  # the GUI's spin box; core does not cap N for PC
        predictor="reverse_diffusion",
        corrector="langevin",
        corrector_steps=2,
        snr=0.16,
    ),
}

DEFAULT_SAMPLER = "fast"
#: sampler -> N when none is given (also importable from .enhance)
DEFAULT_STEPS: dict[str, int] = {k: p.steps for k, p in SAMPLER_PRESETS.items()}
#: guidance scale h when the attribute classifier's model card names none (SRDG's released code)
DEFAULT_H = 500.0
#: guidance acts while sigma >= this when the classifier's model card names none (0: the whole
#: run, as SRDG)
DEFAULT_GUIDANCE_SIGMA_MIN = 0.0
#: each step's guidance term is at most this fraction of the norm of the model's own score (per
#: sample; 0 = no cap).  The classifier's gradient can jump at the last guided steps and paint a
#: mosaic over the eyes in one step; capped, the mosaics go (47 faces: broken eyeglasses samples 6 -> 3,
#: streaks left) and the male and beard flips stay (guidance_eval; weights/README.md "Guidance judged
#: by an independent classifier")
DEFAULT_GUIDANCE_CAP = 0.25
#: the largest cap the GUI offers (core only refuses a negative one)
MAX_GUIDANCE_CAP = 5.0
#: the largest guidance scale the GUI offers (core does not cap h)
MAX_H = 5000.0
#: the most samples K in one run (SamplerSettings.validate and the GUI)
MAX_SAMPLES = 64
#: the most corrector steps M the GUI offers (core only refuses a negative M)
MAX_CORRECTOR_STEPS = 10
#: samples: average the denoiser over the left-right flip at every step (+0.12 dB PSNR on 200
#: validation faces, CS unchanged; 1.6-1.9x the time on a 2-core CPU, so off by default)
DEFAULT_MIRROR = False
#: the mean estimate: the average of the estimate of the LR and of its mirror image (two network
#: evaluations in one batch; +0.12 dB PSNR on 200 validation faces)
DEFAULT_MEAN_MIRROR = True
#: the fast sampler starts from pure noise at the SDE's sigma_max (None: posterior samples), or from
#: the mean estimate diffused to this noise level (samples nearer the mean, with less spread; the
#: model card, "Samples started from the mean estimate", measures the trade-off)
DEFAULT_START_SIGMA: float | None = None
