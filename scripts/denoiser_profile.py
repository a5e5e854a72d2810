#!/usr/bin/env python
"""PSNR of a score model's one-step denoiser D(HR + sigma z, sigma, LR) against HR, per noise level.

    python scripts/denoiser_profile.py DATASET WEIGHTS [WEIGHTS ...] [--images 16] [--sigmas 0.01 0.1 ...]

A sampler walks sigma from the top of the range down to 0.01; a sample can only be as clean as
the denoiser is at each level on the way. The top level is the mean estimate; the low levels
decide whether noise is left in the samples. Same first ``--images`` validation faces and noise
(seeded) for every file, so the rows compare models. Prints one JSON line per file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from sdesr_gui.core.datasets import FaceDataset  # noqa: E402
from sdesr_gui.core.metrics import psnr  # noqa: E402
from sdesr_gui.core.models.checkpoint import load_checkpoint  # noqa: E402

SIGMAS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 3.0, 348.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("weights", nargs="+")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--sigmas", type=float, nargs="+", default=list(SIGMAS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    val = FaceDataset(a.dataset, "val", crop=None, flip=False, limit=a.images)
    b = val.batch(list(range(len(val))), None, crop=None, flip=False, degradation="bicubic")
    hr, y_up = b["hr"], b["y_up"]
    z = torch.randn(hr.shape, generator=torch.Generator().manual_seed(a.seed))
    for w in a.weights:
        model, _ = load_checkpoint(w, device="cpu")
        model = model.float().eval()
        row = {}
        with torch.no_grad():
            for s in a.sigmas:
                d = model.denoise(hr + s * z, s, y_up).clamp(0, 1)
                row[f"{s:g}"] = round(float(psnr(d, hr).mean()), 2)
        print(json.dumps({"weights": str(w), "images": len(hr), "psnr_by_sigma": row}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
