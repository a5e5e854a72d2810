"""The independent attribute judge of scripts/attribute_judge.py (used by guidance_eval.py):
its shipped read-outs load, and its eyeglasses read-out (HOG of the eye band) sees glasses
drawn on a real aligned face."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sdesr_gui.core import faces

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import attribute_judge as aj  # noqa: E402

JUDGE = ROOT / "docs" / "attribute_judge.json"


@pytest.fixture(scope="module")
def aligned_astronaut():
    from skimage import data

    img = data.astronaut()
    face = faces.largest_face(faces.detect_faces(img))
    return faces.align_face(img, face.landmarks)[0]


def _with_glasses(face: np.ndarray) -> np.ndarray:
    """Dark round frames around the template's eye positions and a bridge between them."""
    im = Image.fromarray(face)
    d = ImageDraw.Draw(im)
    (lx, ly), (rx, ry) = faces.TEMPLATE_LANDMARKS[0], faces.TEMPLATE_LANDMARKS[1]
    for x, y in ((lx, ly), (rx, ry)):
        d.ellipse((x - 12, y - 9, x + 12, y + 9), outline=(20, 20, 20), width=2)
    d.line((lx + 12, ly, rx - 12, ry), fill=(20, 20, 20), width=2)
    return np.asarray(im)


def test_shipped_judge_reads_each_attribute_from_its_features():
    judge = json.loads(JUDGE.read_text())
    assert judge["features"] == aj.FEATURES
    for attr in aj.ATTRIBUTES:
        dim = {"dlib": 128, "hog_eyes": 1296}[aj.FEATURES[attr]]
        assert len(judge["weights"][attr]) == dim + 1, attr
    assert len(judge["standardise"]["eyeglasses"]["mean"]) == 1296
    # the reason for the HOG read-out: it sees glasses on held-out official labels
    assert judge["accuracy"]["eyeglasses"]["val_balanced_accuracy"] >= 0.9


def test_eyeglasses_judge_sees_drawn_glasses(aligned_astronaut):
    judge = json.loads(JUDGE.read_text())
    judge = dict(judge, weights={"eyeglasses": judge["weights"]["eyeglasses"]})
    pair = np.stack([aligned_astronaut, _with_glasses(aligned_astronaut)])
    p = aj.judge_images(judge, pair)["eyeglasses"]
    assert p.shape == (2,)
    # she wears none; drawn frames raise the odds by orders of magnitude (cartoon frames are not
    # CelebA's photographed glasses, so they need not cross 0.5: about 0.2 here)
    odds = p / (1 - p)
    assert p[0] < 0.01 and odds[1] > 1e3 * odds[0], p
