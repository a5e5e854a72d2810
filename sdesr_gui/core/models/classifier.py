"""Time-dependent soft-biometric attribute classifier (SRDG guidance).

``C(x_t, sigma)`` sees a *noisy* VE-space image ``x_t = x0 + sigma * z`` and
returns one binary logit per attribute; ``grad_x log C_a`` guides the sampler.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConfigDict, Downsample, FourierNoiseEmbedding, ResBlock, c_noise_from_sigma, norm
from .score_net import as_sigma

__all__ = ["AttributeClassifierConfig", "AttributeClassifier", "DEFAULT_ATTRIBUTES"]

#: Attributes of the shipped classifier (CelebA: Male, Beard (= not No_Beard), Eyeglasses).
DEFAULT_ATTRIBUTES: tuple[str, ...] = ("male", "beard", "eyeglasses")

#: Assumed std of the clean data around 0.5, used to normalise the input.
_DATA_STD = 0.25


@dataclass(frozen=True)
class AttributeClassifierConfig(ConfigDict):
    """Architecture of :class:`AttributeClassifier` (stored in checkpoints).

    ``channels[i]`` is the width at resolution ``image_size / 2**i``; the last
    level (8x8 for the default at 128) is globally average-pooled.
    """

    attributes: tuple[str, ...] = DEFAULT_ATTRIBUTES
    channels: tuple[int, ...] = (16, 32, 48, 64, 96)
    emb_dim: int = 64
    image_size: int = 128
    in_channels: int = 3
    dropout: float = 0.0
    fourier_scale: float = 16.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", tuple(str(a) for a in self.attributes))
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if not self.attributes:
            raise ValueError("the classifier needs at least one attribute.")
        if len(set(self.attributes)) != len(self.attributes):
            raise ValueError("attribute names must be unique.")
        if not self.channels or any(c < 1 for c in self.channels):
            raise ValueError("channels must be a non-empty tuple of positive widths.")

    TUPLE_FIELDS = ("attributes", "channels")
    WHAT = "classifier config"

    @classmethod
    def tiny(cls) -> "AttributeClassifierConfig":
        """A very small config for tests."""
        return cls(channels=(8, 16), emb_dim=16)


class AttributeClassifier(nn.Module):
    """Noise-conditioned encoder -> global average pool -> one logit per attribute."""

    def __init__(self, config: AttributeClassifierConfig | None = None) -> None:
        super().__init__()
        cfg = config or AttributeClassifierConfig()
        self.config = cfg
        ch = cfg.channels
        self.noise_embed = FourierNoiseEmbedding(cfg.emb_dim, scale=cfg.fourier_scale)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        cur = ch[0]
        for lvl, width in enumerate(ch):
            self.blocks.append(ResBlock(cur, width, cfg.emb_dim, cfg.dropout))
            cur = width
            nxt = ch[lvl + 1] if lvl + 1 < len(ch) else None
            self.downs.append(Downsample(cur, nxt) if nxt is not None else nn.Identity())
            if nxt is not None:
                cur = nxt
        self.norm_out = norm(cur)
        self.head = nn.Linear(cur, len(cfg.attributes))

    @property
    def attributes(self) -> tuple[str, ...]:
        """Attribute names, in logit order."""
        return self.config.attributes

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """Logits ``[B, n_attr]`` for noisy images ``x`` ``[B, 3, H, W]`` at noise ``sigma`` ``[B]``."""
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected input of shape [B, {self.config.in_channels}, H, W], "
                             f"got {tuple(x.shape)}.")
        s = as_sigma(sigma, x.shape[0], x)
        emb = self.noise_embed(c_noise_from_sigma(s))
        h = (x - 0.5) / torch.sqrt(s.reshape(-1, 1, 1, 1) ** 2 + _DATA_STD**2)
        h = self.conv_in(h)
        for block, down in zip(self.blocks, self.downs):
            h = down(block(h, emb))
        h = F.silu(self.norm_out(h)).mean(dim=(2, 3))
        return self.head(h)

    def log_prob(self, x: torch.Tensor, sigma: torch.Tensor | float,
                 targets: torch.Tensor) -> torch.Tensor:
        """``log C_a(c_a | x, sigma)`` per attribute, ``[B, n_attr]``; ``targets`` in {0, 1}."""
        logits = self.forward(x, sigma)
        t = targets.to(logits.dtype).expand_as(logits)
        return -F.binary_cross_entropy_with_logits(logits, t, reduction="none")

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

