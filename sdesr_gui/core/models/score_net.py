"""Conditional score network: an NCSN++-style U-Net with EDM preconditioning.

The network predicts the SR *residual* (SRDiff): with ``r = x - y_up`` the
preconditioned denoiser is

    D(x; sigma, y_up) = y_up + c_skip * r + c_out * F(c_in * r, 2 * y_up - 1; c_noise)

(Karras et al. 2022), where ``sd = sigma_data`` is the std of ``HR - y_up``::

    c_skip = sd^2 / (sigma^2 + sd^2)      c_out = sigma * sd / sqrt(sigma^2 + sd^2)
    c_in   = 1 / sqrt(sigma^2 + sd^2)     c_noise = log(sigma) / 4

``D`` estimates the clean HR image and the VE score is ``(D - x) / sigma^2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (
    ConfigDict,
    Downsample,
    FourierNoiseEmbedding,
    ResBlock,
    SelfAttention,
    Upsample,
    c_noise_from_sigma,
    norm,
    zero_module,
)

__all__ = ["ScoreNetConfig", "ScoreUNet", "as_sigma", "ARCHITECTURES"]


@dataclass(frozen=True)
class ScoreNetConfig(ConfigDict):
    """Architecture of :class:`ScoreUNet` (stored in checkpoints as a dict).

    ``patch`` > 1 pixel-unshuffles the input by that factor first (128x128x6 ->
    32x32x96 for ``patch`` 4, as in "simple diffusion", Hoogeboom et al. 2023) and
    pixel-shuffles the output back, so the U-Net's FLOPs go to wide convolutions at
    low resolution.  ``channels[i]`` is the width at resolution
    ``image_size / (patch * 2**i)``; attention runs at the levels whose resolution
    (for ``image_size`` inputs) is listed in ``attn_resolutions``.  The same weights
    run on any input whose side is a multiple of ``patch * 2 ** (len(channels) - 1)``
    (e.g. 64x64 training crops); the attention stays at the same *level*.

    ``full_res_channels`` > 0 (with ``patch`` > 1) adds a thin full-resolution head: the
    U-Net's last features, 1x1-projected and pixel-shuffled to full resolution, joined with the
    network input by a 3x3 conv and SiLU, then a zero-initialised 3x3 conv whose output is added
    to the U-Net's.  A patch-4 U-Net must carry each 4x4 patch's 48 noise values through its
    first ``channels[0]`` channels, which limits per-pixel denoising at low sigma; the head gives
    that local task its own capacity.  Being zero-initialised, a new head leaves a trained patch
    U-Net's output unchanged (warm start).
    """

    channels: tuple[int, ...] = (16, 32, 64, 96)
    blocks_per_level: int = 1
    attn_resolutions: tuple[int, ...] = (16,)
    emb_dim: int = 128
    dropout: float = 0.0
    sigma_data: float = 0.2
    image_size: int = 128
    in_channels: int = 3
    scale_factor: int = 8
    attn_heads: int = 4
    fourier_scale: float = 16.0
    patch: int = 1
    full_res_channels: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "attn_resolutions", tuple(int(r) for r in self.attn_resolutions))
        if not self.channels or any(c < 1 for c in self.channels):
            raise ValueError("channels must be a non-empty tuple of positive widths.")
        if self.blocks_per_level < 1:
            raise ValueError("blocks_per_level must be at least 1.")
        if self.patch < 1:
            raise ValueError("patch must be at least 1.")
        if self.full_res_channels < 0 or (self.full_res_channels and self.patch == 1):
            raise ValueError("full_res_channels needs patch > 1 (and must not be negative).")
        if self.image_size % (self.patch * 2 ** (len(self.channels) - 1)):
            raise ValueError("image_size must be divisible by patch * 2 ** (len(channels) - 1).")
        if self.sigma_data <= 0:
            raise ValueError("sigma_data must be positive.")

    @property
    def num_levels(self) -> int:
        """Number of resolution levels."""
        return len(self.channels)

    def level_resolution(self, level: int) -> int:
        """Resolution of ``level`` for ``image_size`` inputs."""
        return self.image_size // (self.patch * 2**level)

    def level_has_attention(self, level: int) -> bool:
        """Whether the blocks of ``level`` are followed by self-attention."""
        return self.level_resolution(level) in self.attn_resolutions

    TUPLE_FIELDS = ("channels", "attn_resolutions")
    WHAT = "score-network config"

    @classmethod
    def tiny(cls) -> "ScoreNetConfig":
        """A very small config for tests (two levels, attention at the lowest)."""
        return cls(channels=(8, 16), blocks_per_level=1, attn_resolutions=(64,), emb_dim=16,
                   attn_heads=1)

    @classmethod
    def v2(cls) -> "ScoreNetConfig":
        """The v2 design: pixel-unshuffle by 4, then a U-Net at 32/16/8 (for 128 frames) with
        widths 64/128/192, two blocks per level, attention at 16 and 8, and a 32-channel
        full-resolution head."""
        return cls(channels=(64, 128, 192), blocks_per_level=2, attn_resolutions=(16, 8),
                   emb_dim=128, sigma_data=0.1, patch=4, full_res_channels=32)


#: named network designs (``sdesr train --arch``, ``sdesr bench --arch``): v1 = the 1.9 M
#: full-resolution U-Net, v2 = pixel-unshuffle by 4 then a wide U-Net at 32/16/8 with a thin
#: full-resolution head, v2-patch = the same without that head (the first v2 run)
ARCHITECTURES = {"v1": ScoreNetConfig, "v2": ScoreNetConfig.v2,
                 "v2-patch": lambda: ScoreNetConfig.from_dict(dict(ScoreNetConfig.v2().to_dict(),
                                                                   full_res_channels=0))}


def as_sigma(sigma: torch.Tensor | float, batch: int, like: torch.Tensor) -> torch.Tensor:
    """Return ``sigma`` as a ``[batch]`` tensor with ``like``'s dtype and device.

    Accepts a Python float, a scalar tensor, or any tensor with ``batch`` (or 1)
    elements (e.g. ``[B]`` or ``[B, 1, 1, 1]``).
    """
    s = torch.as_tensor(sigma, dtype=like.dtype, device=like.device).reshape(-1)
    if s.numel() == 1:
        s = s.expand(batch)
    elif s.numel() != batch:
        raise ValueError(f"sigma has {s.numel()} values for a batch of {batch}.")
    return s


class ScoreUNet(nn.Module):
    """NCSN++-spirit U-Net predicting the SR residual, with EDM preconditioning.

    Use :meth:`denoise` (also ``forward``) for the preconditioned denoiser and
    :meth:`score` for the VE score; :meth:`forward_raw` is the bare network.
    """

    def __init__(self, config: ScoreNetConfig | None = None) -> None:
        super().__init__()
        cfg = config or ScoreNetConfig()
        self.config = cfg
        ch = cfg.channels
        emb = cfg.emb_dim

        self.noise_embed = FourierNoiseEmbedding(emb, scale=cfg.fourier_scale)
        p2 = cfg.patch * cfg.patch
        self.conv_in = nn.Conv2d(2 * cfg.in_channels * p2, ch[0], 3, padding=1)

        # Encoder: per level `blocks_per_level` ResBlocks (+attention), then downsample.
        self.down = nn.ModuleList()
        skip_ch = [ch[0]]
        cur = ch[0]
        for lvl, width in enumerate(ch):
            level = nn.Module()
            level.blocks = nn.ModuleList()
            level.attn = nn.ModuleList()
            for _ in range(cfg.blocks_per_level):
                level.blocks.append(ResBlock(cur, width, emb, cfg.dropout))
                cur = width
                level.attn.append(self._attn(lvl, cur))
                skip_ch.append(cur)
            if lvl < len(ch) - 1:
                level.downsample = Downsample(cur, cur)
                skip_ch.append(cur)
            else:
                level.downsample = nn.Identity()
            self.down.append(level)

        # Middle: ResBlock - attention - ResBlock at the lowest resolution.
        self.mid1 = ResBlock(cur, cur, emb, cfg.dropout)
        self.mid_attn = SelfAttention(cur, self._heads(cur))
        self.mid2 = ResBlock(cur, cur, emb, cfg.dropout)

        # Decoder: per level `blocks_per_level + 1` ResBlocks eating the skips.
        self.up = nn.ModuleList()
        for lvl in reversed(range(len(ch))):
            width = ch[lvl]
            level = nn.Module()
            level.blocks = nn.ModuleList()
            level.attn = nn.ModuleList()
            for _ in range(cfg.blocks_per_level + 1):
                level.blocks.append(ResBlock(cur + skip_ch.pop(), width, emb, cfg.dropout))
                cur = width
                level.attn.append(self._attn(lvl, cur))
            if lvl > 0:
                # Change width while upsampling: cheaper than a full-width conv at 2x res.
                level.upsample = Upsample(cur, ch[lvl - 1])
                cur = ch[lvl - 1]
            else:
                level.upsample = nn.Identity()
            self.up.append(level)
        assert not skip_ch

        self.norm_out = norm(cur)
        self.conv_out = zero_module(nn.Conv2d(cur, cfg.in_channels * p2, 3, padding=1))

        cf = cfg.full_res_channels
        if cf:
            self.full_proj = nn.Conv2d(cur, cf * p2, 1)
            self.full_mix = nn.Conv2d(cf + 2 * cfg.in_channels, cf, 3, padding=1)
            self.full_out = zero_module(nn.Conv2d(cf, cfg.in_channels, 3, padding=1))

    # ------------------------------------------------------------------ helpers
    def _heads(self, ch: int) -> int:
        heads = max(1, self.config.attn_heads)
        while ch % heads:
            heads -= 1
        return heads

    def _attn(self, level: int, ch: int) -> nn.Module:
        if self.config.level_has_attention(level):
            return SelfAttention(ch, self._heads(ch))
        return nn.Identity()

    @property
    def sigma_data(self) -> float:
        """Std of the residual ``HR - y_up`` used by the preconditioning."""
        return float(self.config.sigma_data)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this number."""
        return self.config.patch * 2 ** (self.config.num_levels - 1)

    # ------------------------------------------------------------------ network
    def forward_raw(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        """Bare U-Net: ``x_in`` ``[B, 6, H, W]``, ``c_noise`` ``[B]`` -> ``[B, 3, H, W]``."""
        if x_in.ndim != 4 or x_in.shape[1] != 2 * self.config.in_channels:
            raise ValueError(
                f"expected input of shape [B, {2 * self.config.in_channels}, H, W], "
                f"got {tuple(x_in.shape)}."
            )
        m = self.multiple
        if x_in.shape[-1] % m or x_in.shape[-2] % m:
            raise ValueError(f"input height and width must be multiples of {m}, "
                             f"got {tuple(x_in.shape[-2:])}.")
        emb = self.noise_embed(c_noise.reshape(-1).expand(x_in.shape[0]))

        p = self.config.patch
        h = self.conv_in(F.pixel_unshuffle(x_in, p) if p > 1 else x_in)
        skips = [h]
        for level in self.down:
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(h, emb))
                skips.append(h)
            if not isinstance(level.downsample, nn.Identity):
                h = level.downsample(h)
                skips.append(h)

        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)

        for level in self.up:
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            h = level.upsample(h)

        h = F.silu(self.norm_out(h))
        out = self.conv_out(h)
        if p == 1:
            return out
        out = F.pixel_shuffle(out, p)
        if self.config.full_res_channels:
            g = F.silu(self.full_mix(torch.cat([F.pixel_shuffle(self.full_proj(h), p), x_in], dim=1)))
            out = out + self.full_out(g)
        return out

    def precondition(self, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """EDM coefficients ``(c_skip, c_out, c_in, c_noise)``; the first three
        shaped ``[B, 1, 1, 1]``, ``c_noise`` shaped ``[B]``."""
        sd2 = self.sigma_data**2
        s = sigma.reshape(-1, 1, 1, 1)
        s2 = s**2
        c_skip = sd2 / (s2 + sd2)
        c_out = s * self.sigma_data / torch.sqrt(s2 + sd2)
        c_in = 1.0 / torch.sqrt(s2 + sd2)
        c_noise = c_noise_from_sigma(sigma.reshape(-1))
        return c_skip, c_out, c_in, c_noise

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor | float, y_up: torch.Tensor) -> torch.Tensor:
        """Preconditioned residual denoiser ``D(x; sigma, y_up)`` (estimate of HR).

        Args:
            x: noisy image ``x0 + sigma * z``, ``[B, 3, H, W]`` (data in [0, 1]).
            sigma: noise level, ``[B]`` tensor or scalar (broadcast over the batch).
            y_up: bicubic-upsampled LR image, same shape as ``x``.
        """
        if y_up.shape != x.shape:
            raise ValueError(f"y_up shape {tuple(y_up.shape)} differs from x shape {tuple(x.shape)}.")
        sigma = as_sigma(sigma, x.shape[0], x)
        c_skip, c_out, c_in, c_noise = self.precondition(sigma)
        r = x - y_up
        f = self.forward_raw(torch.cat([c_in * r, 2.0 * y_up - 1.0], dim=1), c_noise)
        return y_up + c_skip * r + c_out * f.to(x.dtype)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, y_up: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`denoise`."""
        return self.denoise(x, sigma, y_up)

    def score(self, x: torch.Tensor, sigma: torch.Tensor | float, y_up: torch.Tensor) -> torch.Tensor:
        """VE score estimate ``(D - x) / sigma^2``."""
        s = as_sigma(sigma, x.shape[0], x)
        d = self.denoise(x, s, y_up)
        return (d - x) / s.reshape(-1, 1, 1, 1) ** 2

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
