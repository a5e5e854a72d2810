"""The weights shipped in weights/ are real trained models (issue 3).

They load, their denoised estimate of a real face -- the public-domain scikit-image astronaut
aligned to the face frame (resources/sample_face.png) -- beats the noisy input and bicubic at a
mid noise level, and the attribute classifier reads her attributes (female, no beard, no
glasses) at sigma 0.01.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sdesr_gui.core import faces
from sdesr_gui.core.enhance import CLASSIFIER_WEIGHTS_NAME, SCORE_WEIGHTS_16X_NAME, SCORE_WEIGHTS_NAME
from sdesr_gui.core.models import load_checkpoint
from sdesr_gui.core.video import load_still

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights"


@pytest.fixture(scope="module")
def astronaut():
    return faces.to_tensor(load_still(ROOT / "resources" / "sample_face.png"))


def _mse(a, b):
    return float((a - b).pow(2).mean())


def test_shipped_files_are_small_safetensors_with_a_model_card():
    for name in (SCORE_WEIGHTS_NAME, SCORE_WEIGHTS_16X_NAME, CLASSIFIER_WEIGHTS_NAME):
        p = WEIGHTS / name
        assert p.is_file(), f"{name} is not shipped"
        assert p.stat().st_size <= 15 * 2 ** 20  # the project limit; v2 is 10.2 MiB as int8
    card = (WEIGHTS / "README.md").read_text()
    assert SCORE_WEIGHTS_NAME in card and SCORE_WEIGHTS_16X_NAME in card and CLASSIFIER_WEIGHTS_NAME in card


@pytest.mark.parametrize("name,scale", [(SCORE_WEIGHTS_NAME, 8), (SCORE_WEIGHTS_16X_NAME, 16)])
@pytest.mark.parametrize("sigma", [0.05, 0.1, 0.2])
def test_score_model_denoises_a_real_face_better_than_noise_and_bicubic(astronaut, sigma, name, scale):
    model, meta = load_checkpoint(WEIGHTS / name)
    assert meta["kind"] == "score" and meta["scale_factor"] == scale and meta["lr_size"] == 128 // scale
    assert "celeba" in str(meta["training_data"]).lower()
    hr = astronaut
    y_up = faces.upsample(faces.degrade(hr, 128 // scale))
    gen = torch.Generator().manual_seed(0)
    noisy = hr + sigma * torch.randn(hr.shape, generator=gen)
    with torch.no_grad():
        den = model.denoise(noisy, sigma, y_up)
    err = _mse(den, hr)
    assert err < _mse(noisy, hr)
    assert err < _mse(y_up, hr)


def test_classifier_reads_the_astronauts_attributes(astronaut):
    clf, meta = load_checkpoint(WEIGHTS / CLASSIFIER_WEIGHTS_NAME)
    assert meta["kind"] == "classifier" and float(meta["default_h"]) > 0
    with torch.no_grad():
        p = torch.sigmoid(clf(astronaut, torch.tensor([0.01])))[0]
    got = dict(zip(clf.attributes, p.tolist()))
    assert got["male"] < 0.5 and got["beard"] < 0.5 and got["eyeglasses"] < 0.5, got
