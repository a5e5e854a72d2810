"""Forward SDEs of score-based generative modelling (Song et al. 2021), as used by SDE-SR.

Three SDEs share one small interface:

* ``VESDE``   dx = sqrt(d[sigma^2]/dt) dw,  sigma(t) = smin (smax/smin)^t
* ``VPSDE``   dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw,  beta(t) linear in t
* ``SubVPSDE`` dx = -1/2 beta(t) x dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dw

Every marginal is ``x_t = s(t) x_0 + std(t) z``.  Dividing by ``s(t)`` turns any of them into the
VE form ``x_t / s = x_0 + sigma_eff(t) z`` with ``sigma_eff = std / s``.  That is what lets one
denoiser network D(x, sigma) (trained in VE form) provide the score of all three SDEs
(``score = (s D(x/s, sigma_eff) - x) / std^2``), and what lets the fast sampler walk a sigma
schedule for any of them.

Times are tensors of shape [B]; images are [B, C, H, W].  Data live in [0, 1].

:data:`SDES` is the name -> class table that the sampler settings, the CLI's choices and the
GUI read (``list(SDES)`` gives the names; each class has a ``label`` and a one-line ``summary``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

__all__ = ["SDE", "VESDE", "VPSDE", "SubVPSDE", "SDES", "DEFAULT_SDE", "make_sde", "bcast"]


def bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector [B] so that it broadcasts against ``x`` [B, ...]."""
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    if v.ndim == 0:
        v = v.expand(x.shape[0])
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def _t(t: torch.Tensor | float, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t
    if like is not None:
        return torch.tensor(t, dtype=like.dtype, device=like.device)
    return torch.tensor(t, dtype=torch.float64)


class SDE(ABC):
    """Interface of a forward SDE on [0, T]."""

    name: str = ""
    #: what the user sees (GUI list) and one line for tooltips and help texts
    label: str = ""
    summary: str = ""
    T: float = 1.0
    #: smallest time the samplers integrate to (the papers' sampling epsilon)
    eps: float = 1e-5

    # -- forward process ------------------------------------------------------------------
    @abstractmethod
    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift f(x, t) (shape of x) and diffusion g(t) (shape [B])."""

    @abstractmethod
    def mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        """s(t) in x_t = s(t) x_0 + std(t) z."""

    @abstractmethod
    def marginal_std(self, t: torch.Tensor) -> torch.Tensor:
        """std(t) in x_t = s(t) x_0 + std(t) z."""

    def marginal_prob(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (shape of x) and std (shape [B]) of p_t(x_t | x_0 = x)."""
        return bcast(self.mean_coeff(t), x) * x, self.marginal_std(t)

    def sigma_eff(self, t: torch.Tensor) -> torch.Tensor:
        """Noise level of the VE-form variable x_t / s(t)."""
        return self.marginal_std(t) / self.mean_coeff(t)

    @abstractmethod
    def t_from_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`sigma_eff`."""

    @property
    def sigma_max(self) -> float:
        return float(self.sigma_eff(torch.tensor(self.T, dtype=torch.float64)))

    @property
    def sigma_min(self) -> float:
        return float(self.sigma_eff(torch.tensor(self.eps, dtype=torch.float64)))

    @abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the prior p_T (mean 0)."""

    def prior_sampling(self, noise: torch.Tensor) -> torch.Tensor:
        """Turn standard normal ``noise`` into a draw from the prior p_T."""
        return noise * self.prior_std()

    # -- discretisation used by the samplers ---------------------------------------------
    def discretize(
        self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward step x_t = x_{t_next} + f + G z over [t_next, t] (Euler-Maruyama by default).

        Returns f (shape of x) and G (shape [B]).  The reverse-diffusion predictor uses it as
        x_{t_next} = x_t - f + G^2 score + G z.
        """
        dt = t - t_next
        drift, diffusion = self.sde(x, t)
        return drift * bcast(dt, x), diffusion * torch.sqrt(dt)

    def langevin_alpha(self, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        """The alpha_i of the Langevin corrector step size (1 for VE)."""
        return torch.ones_like(t)

    def pc_min_steps(self, eps: float | None = None) -> int:
        """The fewest predictor-corrector steps N this SDE can take on :meth:`time_grid` (1 here)."""
        return 1

    def time_grid(self, n_steps: int, eps: float | None = None, device=None) -> torch.Tensor:
        """N sampling times from T down to eps (inclusive), float64 on ``device``."""
        eps = self.eps if eps is None else eps
        return torch.linspace(self.T, eps, n_steps, dtype=torch.float64, device=device)

    @abstractmethod
    def to_dict(self) -> dict:
        """JSON description (goes into checkpoints and run records)."""


class VESDE(SDE):
    """Variance exploding SDE (SMLD / NCSN++): sigma(t) = smin (smax/smin)^t."""

    name = "ve"
    label = "VE (variance exploding)"
    summary = ("Variance exploding, the SDE the model was trained with: noise grows from sigma_min = 0.01 "
               "to sigma_max = 348 (the model's own range).")

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 348.0):
        self.smin = float(sigma_min)
        self.smax = float(sigma_max)
        self.eps = 1e-5
        self._log_ratio = math.log(self.smax / self.smin)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.smin * (self.smax / self.smin) ** t

    def sde(self, x, t):
        drift = torch.zeros_like(x)
        diffusion = self.sigma(t) * math.sqrt(2 * self._log_ratio)
        return drift, diffusion.to(x.dtype)

    def mean_coeff(self, t):
        return torch.ones_like(t)

    def marginal_std(self, t):
        return self.sigma(t)

    def t_from_sigma(self, sigma):
        return torch.log(sigma / self.smin) / self._log_ratio

    def prior_std(self) -> float:
        return self.smax

    def discretize(self, x, t, t_next):
        """SMLD reverse-diffusion step: f = 0, G = sqrt(sigma(t)^2 - sigma(t_next)^2).

        ``t_next <= 0`` is the end of sampling: the next noise level is 0, as in SMLD.
        """
        sig = self.sigma(t)
        sig_next = torch.where(t_next <= 0, torch.zeros_like(t_next), self.sigma(t_next))
        g = torch.sqrt(torch.clamp(sig**2 - sig_next**2, min=0.0))
        return torch.zeros_like(x), g

    def to_dict(self) -> dict:
        return {"type": "ve", "sigma_min": self.smin, "sigma_max": self.smax}


class VPSDE(SDE):
    """Variance preserving SDE (DDPM): beta(t) = beta_min + t (beta_max - beta_min)."""

    name = "vp"
    label = "VP (variance preserving)"
    summary = ("Variance preserving (DDPM), beta from 0.1 to 20: the VE-trained model is used through "
               "x_t / s(t); Paper PC needs more than 20 steps.")

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_0 = float(beta_min)
        self.beta_1 = float(beta_max)
        self.eps = 1e-3

    def beta(self, t):
        return self.beta_0 + t * (self.beta_1 - self.beta_0)

    def _log_mean_coeff(self, t):
        return -0.25 * t**2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

    def sde(self, x, t):
        beta_t = self.beta(t)
        drift = -0.5 * bcast(beta_t, x) * x
        return drift, torch.sqrt(beta_t).to(x.dtype)

    def mean_coeff(self, t):
        return torch.exp(self._log_mean_coeff(t))

    def marginal_std(self, t):
        return torch.sqrt(-torch.expm1(2.0 * self._log_mean_coeff(t)))

    def _t_from_log_s(self, log_s):
        # solve 0.25 d t^2 + 0.5 b0 t + log_s = 0 for t >= 0
        d = self.beta_1 - self.beta_0
        a, b, c = 0.25 * d, 0.5 * self.beta_0, log_s
        return (-b + torch.sqrt(b * b - 4 * a * c)) / (2 * a)

    def t_from_sigma(self, sigma):
        # sigma = sqrt(1 - s^2) / s  ->  s^2 = 1 / (1 + sigma^2)
        log_s = -0.5 * torch.log1p(sigma**2)
        return self._t_from_log_s(log_s)

    def prior_std(self) -> float:
        return 1.0

    def discretize(self, x, t, t_next):
        """DDPM step: beta_i = beta(t) (t - t_next); f = (sqrt(1 - beta_i) - 1) x, G = sqrt(beta_i)."""
        beta_i = self.beta(t) * (t - t_next)
        f = bcast(torch.sqrt(1.0 - beta_i) - 1.0, x) * x
        return f, torch.sqrt(beta_i)

    def langevin_alpha(self, t, t_next):
        return 1.0 - self.beta(t) * (t - t_next)

    def pc_min_steps(self, eps: float | None = None) -> int:
        """The fewest N for which every step of the time grid has beta(t) dt < 1.

        With beta_i = beta(t) dt >= 1 the VP reverse-diffusion step takes sqrt(1 - beta_i) and
        the Langevin alpha_i = 1 - beta_i turns negative: the samples become NaN.  The largest
        beta_i is the first step's, beta(T) (T - eps) / (N - 1), so N must exceed
        beta(T) (T - eps) + 1 (N >= 21 for beta_max = 20).  Sub-VP (and VP's Euler-Maruyama
        predictor alone) has no square root to break, but its step is only first order in
        beta_i: on a Gaussian target N = 5 gives a sample std about 27 times too large, N = 10
        about 1.25 times; the same limit keeps one rule for both.
        """
        eps = self.eps if eps is None else float(eps)
        worst = float(self.beta(torch.tensor(self.T, dtype=torch.float64))) * (self.T - eps)
        return math.floor(worst) + 2

    def to_dict(self) -> dict:
        return {"type": "vp", "beta_min": self.beta_0, "beta_max": self.beta_1}


class SubVPSDE(VPSDE):
    """sub-VP SDE: same drift as VP, smaller diffusion; std(t) = 1 - s(t)^2."""

    name = "subvp"
    label = "sub-VP"
    summary = ("sub-VP, beta from 0.1 to 20: the VP drift with less noise; the VE-trained model is used "
               "through x_t / s(t); Paper PC needs more than 20 steps.")

    def sde(self, x, t):
        beta_t = self.beta(t)
        drift = -0.5 * bcast(beta_t, x) * x
        discount = -torch.expm1(-2 * self.beta_0 * t - (self.beta_1 - self.beta_0) * t**2)
        return drift, torch.sqrt(beta_t * discount).to(x.dtype)

    def marginal_std(self, t):
        return -torch.expm1(2.0 * self._log_mean_coeff(t))

    def t_from_sigma(self, sigma):
        # sigma = (1 - s^2) / s  ->  s^2 + sigma s - 1 = 0
        s = (-sigma + torch.sqrt(sigma**2 + 4.0)) / 2.0
        return self._t_from_log_s(torch.log(s))

    def discretize(self, x, t, t_next):
        return SDE.discretize(self, x, t, t_next)

    def langevin_alpha(self, t, t_next):
        return torch.ones_like(t)

    def to_dict(self) -> dict:
        return {"type": "subvp", "beta_min": self.beta_0, "beta_max": self.beta_1}


#: SDE name -> class: the choices of ``SamplerSettings.sde``, the CLI and the GUI, in the GUI's order
SDES: dict[str, type[SDE]] = {"ve": VESDE, "vp": VPSDE, "subvp": SubVPSDE}
#: the SDE a run samples under when none is named: the model's own (VE)
DEFAULT_SDE = "ve"


def make_sde(spec: dict | str | None = None) -> SDE:
    """Build an SDE from its ``to_dict()`` form or its name ('ve', 'vp', 'subvp')."""
    if spec is None:
        spec = "ve"
    if isinstance(spec, str):
        spec = {"type": spec}
    kind = spec.get("type", "ve").lower()
    if kind == "ve":
        return VESDE(spec.get("sigma_min", 0.01), spec.get("sigma_max", 348.0))
    if kind == "vp":
        return VPSDE(spec.get("beta_min", 0.1), spec.get("beta_max", 20.0))
    if kind in ("subvp", "sub-vp", "sub_vp"):
        return SubVPSDE(spec.get("beta_min", 0.1), spec.get("beta_max", 20.0))
    raise ValueError(f"Unknown SDE type {kind!r}; expected 've', 'vp' or 'subvp'.")
