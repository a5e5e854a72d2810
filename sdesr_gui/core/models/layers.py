"""Shared building blocks for the score network and the attribute classifier.

All blocks are plain ``torch.nn`` modules (no Qt, no global state).  The noise
level enters every network through :class:`FourierNoiseEmbedding`, which maps
``c_noise = log(sigma) / 4`` to an embedding vector that conditions each
:class:`ResBlock` with a per-channel scale and shift (FiLM).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ConfigDict",
    "FOURIER_SEED",
    "group_count",
    "c_noise_from_sigma",
    "FourierNoiseEmbedding",
    "ResBlock",
    "SelfAttention",
    "Downsample",
    "Upsample",
    "zero_module",
]

#: Seed of the generator that draws the (fixed) Fourier frequencies, so that two
#: freshly built models with the same config have identical buffers.
FOURIER_SEED = 20220512


class ConfigDict:
    """``to_dict`` / ``from_dict`` for the frozen architecture dataclasses stored in checkpoints:
    tuple fields (``TUPLE_FIELDS``) become JSON lists and back; unknown keys raise ValueError."""

    TUPLE_FIELDS: tuple[str, ...] = ()
    WHAT: str = "config"

    def to_dict(self) -> dict:
        """JSON-friendly dict (tuples become lists)."""
        d = dataclasses.asdict(self)  # type: ignore[call-overload]
        for key in self.TUPLE_FIELDS:
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict):
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown {cls.WHAT} keys: {', '.join(unknown)}.")
        kw = dict(d)
        for key in cls.TUPLE_FIELDS:
            if key in kw:
                kw[key] = tuple(kw[key])
        return cls(**kw)


def group_count(channels: int, max_groups: int = 32) -> int:
    """Number of GroupNorm groups for ``channels``: the largest divisor of
    ``channels`` not above ``min(max_groups, channels // 4)`` (at least 1)."""
    upper = max(1, min(max_groups, channels // 4))
    for g in range(upper, 0, -1):
        if channels % g == 0:
            return g
    return 1


def norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with a group count that divides ``channels``."""
    return nn.GroupNorm(group_count(channels), channels, eps=1e-6)


def zero_module(module: nn.Module) -> nn.Module:
    """Set every parameter of ``module`` to zero (in place) and return it."""
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module


def c_noise_from_sigma(sigma: torch.Tensor) -> torch.Tensor:
    """EDM noise conditioning value ``log(sigma) / 4``."""
    return torch.log(sigma) / 4.0


class FourierNoiseEmbedding(nn.Module):
    """Gaussian Fourier features of ``c_noise`` followed by a 2-layer SiLU MLP.

    Args:
        dim: size of the Fourier feature vector and of the output embedding
            (must be even).
        scale: standard deviation of the random frequencies.
        seed: seed of the generator drawing the frequencies (fixed by default,
            so a fresh model is deterministic).

    The frequencies are a persistent, non-trainable buffer (``freqs``) so they
    round-trip through checkpoints.
    """

    def __init__(self, dim: int, scale: float = 16.0, seed: int = FOURIER_SEED) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"Fourier embedding size must be an even number >= 2, got {dim}.")
        gen = torch.Generator().manual_seed(int(seed))
        freqs = torch.randn(dim // 2, generator=gen, dtype=torch.float32) * float(scale)
        self.register_buffer("freqs", freqs, persistent=True)
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        """Map ``c_noise`` of shape ``[B]`` to an embedding of shape ``[B, dim]``."""
        c = c_noise.reshape(-1, 1).to(torch.float32)
        phase = (2.0 * math.pi) * c * self.freqs.to(torch.float32).reshape(1, -1)
        feats = torch.cat([torch.cos(phase), torch.sin(phase)], dim=1)
        feats = feats.to(self.mlp[0].weight.dtype)
        return self.mlp(feats)


class ResBlock(nn.Module):
    """Residual block with FiLM noise conditioning.

    ``GroupNorm -> SiLU -> conv3x3 -> GroupNorm -> (1 + scale) * h + shift ->
    SiLU -> dropout -> conv3x3`` plus a (1x1 when channels differ) skip, output
    scaled by ``1 / sqrt(2)``.  The last conv is zero-initialised, so a fresh
    block is the (scaled) identity on its skip path.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_ch = in_ch
        self.out_ch = out_ch
        self.norm1 = norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = norm(out_ch)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = zero_module(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, in_ch, H, W]``, ``emb``: ``[B, emb_dim]`` -> ``[B, out_ch, H, W]``."""
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb_proj(F.silu(emb)).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        h = self.norm2(h) * (1.0 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return (self.skip(x) + h) * (1.0 / math.sqrt(2.0))


class SelfAttention(nn.Module):
    """Multi-head self-attention over spatial positions, with GroupNorm and a
    residual connection (output projection zero-initialised)."""

    def __init__(self, ch: int, heads: int = 1) -> None:
        super().__init__()
        if heads < 1 or ch % heads:
            raise ValueError(f"attention heads ({heads}) must divide the channel count ({ch}).")
        self.heads = heads
        self.norm = norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = zero_module(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, C, H, W]`` -> same shape."""
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = (t.transpose(-1, -2) for t in qkv.unbind(dim=1))  # [B, heads, HW, d]
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 convolution."""

    def __init__(self, in_ch: int, out_ch: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch or in_ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour upsampling then a 3x3 conv."""

    def __init__(self, in_ch: int, out_ch: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch or in_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
