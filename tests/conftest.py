"""Shared fixtures: tiny models saved as real checkpoints, offscreen Qt."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest
import torch

from sdesr_gui.core.models import (
    AttributeClassifier,
    AttributeClassifierConfig,
    ScoreNetConfig,
    ScoreUNet,
    save_checkpoint,
)
from sdesr_gui.core.sde import VESDE


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A tiny random score model and attribute classifier written as safetensors checkpoints."""
    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    cfg = ScoreNetConfig.tiny()
    model = ScoreUNet(cfg)
    score = d / "tiny_score.safetensors"
    save_checkpoint(score, model, kind="score", config=cfg.to_dict(),
                    metadata={"sde": VESDE().to_dict(), "data_range": [0, 1], "scale_factor": 8,
                              "training_data": "none (random initialisation, tests only)"})
    ccfg = AttributeClassifierConfig.tiny()
    clf = AttributeClassifier(ccfg)
    cls_path = d / "tiny_classifier.safetensors"
    save_checkpoint(cls_path, clf, kind="classifier", config=ccfg.to_dict(),
                    metadata={"sde": VESDE().to_dict(), "default_h": 50.0,
                              "training_data": "none (random initialisation, tests only)"})
    score16 = d / "tiny_score16.safetensors"  # the same tiny net labelled as a 16x (8x8 -> 128) model
    save_checkpoint(score16, model, kind="score", config=cfg.to_dict(),
                    metadata={"sde": VESDE().to_dict(), "data_range": [0, 1], "scale_factor": 16, "lr_size": 8,
                              "training_data": "none (random initialisation, tests only)"})
    # the same net as a footage model that judges every LR degraded (threshold 0) or none (1e9)
    footage = {}
    for verdict, thr in (("always", 0.0), ("never", 1e9)):
        f = d / f"tiny_footage_{verdict}.safetensors"
        save_checkpoint(f, model, kind="score", config=cfg.to_dict(),
                        metadata={"sde": VESDE().to_dict(), "data_range": [0, 1], "scale_factor": 8,
                                  "degradation": "realistic", "footage_threshold": thr,
                                  "training_data": "none (random initialisation, tests only)"})
        footage[verdict] = f
    return {"score": score, "classifier": cls_path, "score16": score16,
            "footage_always": footage["always"], "footage_never": footage["never"]}


@pytest.fixture(scope="session")
def astronaut_face():
    """The public-domain astronaut photo from scikit-image, cropped roughly to her face (128x128)."""
    from PIL import Image
    from skimage import data

    img = Image.fromarray(data.astronaut()).crop((150, 40, 290, 180)).resize((128, 128), Image.BICUBIC)
    return np.asarray(img)
