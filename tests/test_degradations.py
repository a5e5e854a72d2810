"""Footage-grade degradations (issue 14): deterministic for a seed, recorded, each effect real."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sdesr_gui.core import degradations as D
from sdesr_gui.core import faces
from sdesr_gui.core.metrics import psnr
from sdesr_gui.core.video import load_still
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hr() -> torch.Tensor:
    return faces.to_tensor(load_still(ROOT / "resources" / "sample_face.png"))  # [1, 3, 128, 128]


def test_clean_parameters_are_exactly_the_bicubic_lr(hr):
    assert D.Degradation().is_clean
    assert torch.equal(D.degrade(hr, D.Degradation()), faces.degrade(hr))
    assert torch.equal(D.degrade(hr, None), faces.degrade(hr))
    assert torch.equal(D.degrade(hr, D.STRENGTHS["clean"], lr_size=8), faces.degrade(hr, 8))


@pytest.mark.parametrize("name", ["mild", "moderate", "strong"])
def test_strengths_are_deterministic_recorded_and_ordered(hr, name):
    p = dataclasses.replace(D.STRENGTHS[name], seed=7)
    a, b = p.apply(hr), D.degrade(hr, p.to_dict())  # the recorded dict reproduces it exactly
    assert torch.equal(a, b) and a.shape == (1, 3, 16, 16)
    assert torch.equal(a, faces.quantize(a)) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert D.Degradation.from_dict(p.to_dict()) == p
    other_seed = dataclasses.replace(p, seed=8).apply(hr)
    assert not torch.equal(a, other_seed)  # the noise comes from the seed
    assert p.describe() != "clean"
    assert p.apply(hr, lr_size=8).shape == (1, 3, 8, 8)


def test_stronger_sets_move_the_lr_further_from_the_clean_one(hr):
    clean = faces.degrade(hr)
    err = {n: float(psnr(D.degrade(hr, D.STRENGTHS[n]), clean)) for n in ("mild", "moderate", "strong")}
    assert err["mild"] > err["moderate"] > err["strong"] > 18.0


@pytest.mark.parametrize("kw", [dict(blur=1.5), dict(motion_len=8.0, motion_angle=45.0), dict(noise=6 / 255),
                                dict(shot=0.002), dict(jpeg=30), dict(h264_qp=36)])
def test_each_effect_changes_the_lr_on_its_own(hr, kw):
    lr = D.Degradation(seed=1, **kw).apply(hr)
    assert not torch.equal(lr, faces.degrade(hr))


def test_motion_blur_follows_its_angle():
    k0 = D._motion_kernel(8.0, 0.0)
    k90 = D._motion_kernel(8.0, 90.0)
    assert abs(float(k0.sum()) - 1) < 1e-6 and abs(float(k90.sum()) - 1) < 1e-6
    assert torch.allclose(k0.T, k90, atol=1e-6)  # horizontal streak turned upright
    r = k0.shape[0] // 2
    assert float(k0[r].sum()) > 0.95  # all of a horizontal streak lies on the middle row


def test_compression_in_the_frame_differs_from_on_the_face(hr):
    clean = faces.degrade(hr)
    for codec in (dict(jpeg=35), dict(h264_qp=32)):
        on_face = D.Degradation(**codec).apply(hr)
        in_frame = D.Degradation(where="frame", grid_offset=(3, 5), **codec).apply(hr)
        assert not torch.equal(on_face, in_frame)
        for lr in (on_face, in_frame):  # compression damages but keeps the face
            assert 21.0 < float(psnr(lr, clean)) < 40.0


def test_h264_like_coarser_qp_loses_more(hr):
    x = faces.degrade(hr)
    errs = [float((D.h264_like(x, qp) - x).pow(2).mean()) for qp in (10, 24, 36, 48)]
    assert errs == sorted(errs) and errs[0] < 1e-3 < errs[-1]
    grey = torch.full((1, 3, 16, 16), 0.5)  # a flat grey block passes (DC only, no chroma)
    assert float((D.h264_like(grey, 30) - grey).abs().max()) <= 2 / 255


def test_bad_parameters_are_refused():
    for kw in (dict(where="sky"), dict(jpeg=0), dict(h264_qp=60), dict(noise=-1.0)):
        with pytest.raises(ValueError):
            D.Degradation(**kw)
    with pytest.raises(ValueError, match="unknown"):
        D.Degradation.from_dict({"blurr": 1.0})
    with pytest.raises(ValueError, match="strength"):
        D.degraded_set(torch.zeros(1, 3, 128, 128), ("extreme",))


def test_mix_draws_are_reproducible_and_mixed(hr):
    mix = D.DegradationMix()
    a = [mix.draw(np.random.default_rng([3, i])) for i in range(200)]
    b = [mix.draw(np.random.default_rng([3, i])) for i in range(200)]
    assert a == b
    clean = sum(p.is_clean for p in a)
    assert 25 < clean < 80  # p_clean 0.25 (plus the rare draw where nothing fires)
    assert any(p.h264_qp > 0 for p in a) and any(p.jpeg < 100 for p in a)
    assert any(p.where == "frame" for p in a) and any(p.motion_len > 0 for p in a)
    assert torch.equal(a[0].apply(hr), b[0].apply(hr))


def test_degraded_set_records_per_face_parameters():
    g = torch.Generator().manual_seed(1)
    hr = torch.rand(3, 3, 128, 128, generator=g)
    out = D.degraded_set(hr, ("clean", "moderate"), seed=2)
    lr, recs = out["moderate"]
    assert lr.shape == (3, 3, 16, 16) and len(recs) == 3
    assert [r["strength"] for r in recs] == ["moderate"] * 3
    assert len({r["seed"] for r in recs}) == 3
    again = D.degraded_set(hr, ("moderate",), seed=2)["moderate"][0]
    assert torch.equal(lr, again)
    assert torch.equal(out["clean"][0], faces.degrade(hr))
    rebuilt = torch.stack([D.degrade(hr[i], {k: v for k, v in r.items() if k != "strength"})
                           for i, r in enumerate(recs)])
    assert torch.equal(rebuilt, lr)
