"""Metrics match their definitions (DESIGN.md) and scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.transform import resize

from sdesr_gui.core import metrics
from sdesr_gui.core.faces import downsample, quantize


def _astronaut_pairs(n: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n pairs of 128x128 float64 RGB images in [0, 1]: astronaut crops and noisy copies."""
    rng = np.random.default_rng(seed)
    img = data.astronaut().astype(np.float64) / 255.0
    crops = [img[0:256, 150:406], img[100:400, 100:400], img[200:512, 0:312]][:n]
    hr = np.stack([resize(c, (128, 128), order=3, anti_aliasing=True) for c in crops])
    hr = np.clip(hr, 0, 1)
    noisy = np.clip(hr + rng.normal(0, [[[[0.02]]], [[[0.05]]], [[[0.1]]]][:n], hr.shape),
                    0, 1)
    return noisy, hr


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(0, 3, 1, 2).float()


def test_psnr_matches_skimage_and_hand_value() -> None:
    sr, hr = _astronaut_pairs()
    got = metrics.psnr(_t(sr), _t(hr))
    assert got.shape == (3,)
    for i in range(3):
        ref = peak_signal_noise_ratio(hr[i], sr[i].astype(np.float32).astype(np.float64),
                                      data_range=1)
        assert got[i].item() == pytest.approx(ref, abs=1e-3)
    hr0 = torch.full((1, 3, 128, 128), 0.5)
    assert metrics.psnr(hr0 + 0.1, hr0)[0].item() == pytest.approx(20.0, abs=1e-4)
    assert math.isinf(metrics.psnr(hr0, hr0)[0].item())


def test_single_image_and_numpy_inputs_give_float() -> None:
    sr, hr = _astronaut_pairs(1)
    a8 = np.round(sr[0] * 255).astype(np.uint8)
    b8 = np.round(hr[0] * 255).astype(np.uint8)
    v = metrics.psnr(a8, b8)
    assert isinstance(v, float)
    assert v == pytest.approx(peak_signal_noise_ratio(b8, a8, data_range=255), abs=1e-3)
    assert isinstance(metrics.ssim(_t(sr)[0], _t(hr)[0]), float)


def test_ssim_matches_skimage() -> None:
    sr, hr = _astronaut_pairs()
    got = metrics.ssim(_t(sr), _t(hr))
    for i in range(3):
        ref = structural_similarity(
            sr[i].astype(np.float32).astype(np.float64), hr[i], channel_axis=-1,
            data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert got[i].item() == pytest.approx(ref, abs=1e-4)
    # uint8 numpy path too
    a8 = np.round(sr[1] * 255).astype(np.uint8)
    b8 = np.round(hr[1] * 255).astype(np.uint8)
    ref = structural_similarity(a8 / 255.0, b8 / 255.0, channel_axis=-1, data_range=1,
                                gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert metrics.ssim(a8, b8) == pytest.approx(ref, abs=1e-4)


def test_ssim_identical_is_one() -> None:
    _, hr = _astronaut_pairs()
    assert torch.allclose(metrics.ssim(_t(hr), _t(hr)), torch.ones(3), atol=1e-6)


def test_consistency_hand_values() -> None:
    torch.manual_seed(0)
    sr = torch.rand(2, 3, 128, 128)
    lr = downsample(sr, 16)
    assert torch.allclose(metrics.consistency(sr, lr), torch.zeros(2), atol=1e-6)
    sr_mid = 0.25 + 0.5 * sr  # its downsample stays well inside (0, 1): no clamping
    lr_mid = downsample(sr_mid, 16)
    assert torch.allclose(metrics.consistency(sr_mid, lr_mid + 1 / 255), torch.ones(2),
                          atol=1e-4)
    # quantized LR of a constant image: error bounded by half a grey level
    const = torch.full((1, 3, 128, 128), 0.3)
    assert metrics.consistency(const, quantize(downsample(const)))[0].item() <= 0.25 + 1e-6


def test_cosine_similarity_hand_values() -> None:
    assert metrics.cosine_similarity(np.array([1.0, 0.0]), np.array([0.0, 2.0])) == \
        pytest.approx(0.0)
    assert metrics.cosine_similarity(np.array([1.0, 1.0]), np.array([2.0, 2.0])) == \
        pytest.approx(1.0)
    assert metrics.cosine_similarity(np.array([1.0, 0.0]), np.array([-3.0, 0.0])) == \
        pytest.approx(-1.0)
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    got = metrics.cosine_similarity(a, b)
    assert isinstance(got, torch.Tensor)
    assert torch.allclose(got, torch.tensor([1 / math.sqrt(2), 1.0]), atol=1e-6)
    assert metrics.cosine_similarity(np.zeros(3), np.ones(3)) == 0.0


def test_cs_uses_embedding() -> None:
    def embed(x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))  # mean colour as a toy embedding

    hr = torch.rand(2, 3, 128, 128)
    assert torch.allclose(metrics.cs(embed, hr, hr), torch.ones(2), atol=1e-6)
    red = torch.zeros(1, 3, 128, 128)
    red[:, 0] = 1
    green = torch.zeros(1, 3, 128, 128)
    green[:, 1] = 1
    assert metrics.cs(embed, red, green)[0].item() == pytest.approx(0.0, abs=1e-7)


def test_rank_n() -> None:
    gallery = ["a", "b", "c"]
    probes = ["a", "b", "c"]
    sim = np.array([[0.9, 0.1, 0.2],   # a first -> rank 1
                    [0.8, 0.7, 0.1],   # b second -> rank 2
                    [0.9, 0.8, 0.1]])  # c third -> rank 3
    assert metrics.rank_n(sim, probes, gallery, 1) == pytest.approx(1 / 3)
    assert metrics.rank_n(sim, probes, gallery, 2) == pytest.approx(2 / 3)
    assert metrics.rank_n(sim, probes, gallery, 3) == pytest.approx(1.0)
    assert list(metrics.identity_ranks(sim, probes, gallery)) == [1, 2, 3]
    # several gallery images per identity: identity scores by its best image
    sim2 = np.array([[0.1, 0.95, 0.9]])
    assert metrics.rank_n(sim2, ["a"], ["a", "b", "a"], 1) == 0.0
    assert metrics.rank_n(sim2, ["a"], ["a", "b", "a"], 2) == 1.0
    # ties are pessimistic
    assert metrics.rank_n(np.ones((1, 3)), ["a"], gallery, 1) == 0.0
    # probes without mate
    sim3 = np.array([[0.9, 0.1, 0.2], [0.9, 0.1, 0.2]])
    assert metrics.rank_n(sim3, ["a", "z"], gallery, 1) == 1.0
    assert metrics.rank_n(sim3, ["a", "z"], gallery, 1, unmatched="miss") == 0.5
    with pytest.raises(ValueError):
        metrics.rank_n(sim3, ["a"], gallery, 1)


def test_verification_auc() -> None:
    assert metrics.verification_auc([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 1.0
    assert metrics.verification_auc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    assert metrics.verification_auc([0.5] * 6, [1, 0, 1, 0, 1, 0]) == 0.5
    # one genuine-impostor tie among four pairs -> 3.5 / 4
    assert metrics.verification_auc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == 0.875
    with pytest.raises(ValueError):
        metrics.verification_auc([0.1, 0.2], [1, 1])


def test_lr_mismatch_flags_a_sample_that_does_not_reproduce_its_lr(astronaut_face):
    """A sample is flagged when its LR residual (RMS, 0-255) is above 3x the mean estimate's plus
    3 grey levels: the HR frame itself (residual: 8-bit rounding) passes; the same face with its
    colours inverted does not, and the sentence gives both residuals."""
    from sdesr_gui.core import faces

    hr = faces.to_tensor(astronaut_face)
    lr = faces.degrade(hr)
    blurred = faces.upsample(lr)  # a "mean estimate" that reproduces the LR only roughly
    good, bad = metrics.image_metrics(torch.cat([hr, 1 - hr]), lr)
    mean = metrics.image_metrics(blurred, lr)[0]
    assert metrics.lr_mismatch(good, mean) is None
    flag = metrics.lr_mismatch(bad, mean)
    ref = math.sqrt(mean["consistency"])
    assert flag["lr_rms"] == pytest.approx(math.sqrt(bad["consistency"]), abs=0.01)
    assert flag["mean_estimate_lr_rms"] == pytest.approx(ref, abs=0.01)
    assert flag["limit"] == pytest.approx(3 * ref + 3, abs=0.01) and flag["lr_rms"] > 50
    assert "does not match the input" in flag["text"] and f"{ref:.1f}" in flag["text"]
    # the limit itself: at 3 x 2 + 3 = 9 grey levels a sample passes, just above it does not
    assert metrics.lr_mismatch({"consistency": 81.0}, {"consistency": 4.0}) is None
    assert metrics.lr_mismatch({"consistency": 81.5}, {"consistency": 4.0}) is not None
    # without both numbers nothing is claimed
    assert metrics.lr_mismatch({"psnr": 10.0}, {"consistency": 4.0}) is None
    assert metrics.lr_mismatch({"consistency": 900.0}, {}) is None


def test_an_evaluation_counts_the_samples_that_do_not_match_their_input():
    """EvalResult.mismatches: per sampler row, the faces whose sample's LR residual is above the
    limit set by the same face's mean estimate; nothing without the mean-estimate row."""
    from sdesr_gui.core.evaluation import MEAN_ROW, EvalResult

    res = EvalResult(per_face={"bicubic": {"consistency": [30.0, 30.0, 30.0]},
                               MEAN_ROW: {"consistency": [1.0, 4.0, 23.0]},
                               "pc": {"consistency": [2.0, 82.0, 1214.5]},
                               "fast": {"consistency": [1.0, 4.0, 20.0]}})
    # limits: 3 x 1 + 3 = 6, 3 x 2 + 3 = 9, 3 x 4.8 + 3 = 17.4 grey levels (RMS)
    assert res.mismatches() == {"pc": [1, 2], "fast": []}
    del res.per_face[MEAN_ROW]
    assert res.mismatches() == {}
