#!/usr/bin/env python
"""Score a shipped score checkpoint with the training run's own validation (same faces, same
seeds, same sampler), so an exported run can be compared with the weights it would replace.

    python scripts/val_checkpoint.py DATASET weights/sdesr_ve_8x.safetensors [--images 16] [--steps 20]

Prints one JSON line: mean estimate, fast-sampler sample and bicubic PSNR / SSIM / consistency
(and CS with dlib when installed) on the first ``--images`` validation faces of DATASET.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from sdesr_gui.core.datasets import FaceDataset  # noqa: E402
from sdesr_gui.core.models.checkpoint import load_checkpoint  # noqa: E402
from sdesr_gui.core.training import ScoreTrainConfig, _score_validate_fn  # noqa: E402


def validate(dataset, model, meta: dict, images: int = 16, steps: int = 20) -> dict:
    """The training run's validation of ``model`` (a loaded score network) on ``images`` faces."""
    model = model.float().eval()
    sde = meta.get("sde") or {}
    cfg = ScoreTrainConfig(val_images=images, val_steps=steps, val_every=1,
                           sigma_min=sde.get("sigma_min", 0.01), sigma_max=sde.get("sigma_max", 348.0))
    val = FaceDataset(dataset, "val", crop=None, flip=False, limit=images)
    with tempfile.TemporaryDirectory() as tmp:
        run = _score_validate_fn(cfg, val, Path(tmp), torch.device("cpu"))
        engine = SimpleNamespace(ema=SimpleNamespace(model=model), losses=[float("nan")])
        out = run(engine, 0, lambda: False)
    out.pop("loss", None)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("weights")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    model, meta = load_checkpoint(a.weights, device="cpu")
    out = validate(a.dataset, model, meta, a.images, a.steps)
    out["weights"] = str(a.weights)
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
