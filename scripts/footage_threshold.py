#!/usr/bin/env python
"""Calibrate the footage model's threshold: the LR residual above which an LR counts as degraded.

    python scripts/footage_threshold.py DATASET FOOTAGE.safetensors [--images 64] [--skip 100] [--json OUT]

On ``--images`` validation faces (after the first ``--skip``, so not the faces the model card's
tables use), each LR is made clean and at every footage-grade strength (core.degradations.STRENGTHS,
seed = face index), and the footage model's residual (Enhancer.lr_residual: RMS, 0-255, of the LR
it does not explain) is measured. The threshold maximises the balanced accuracy of "clean" vs
"any degraded strength"; the script prints the residuals per strength, the threshold and its
accuracy on both sides. Write it into the model with `sdesr train export --footage-threshold`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sdesr_gui.core import degradations as D  # noqa: E402
from sdesr_gui.core.datasets import FaceDataset  # noqa: E402
from sdesr_gui.core.enhance import Enhancer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("weights", type=Path)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--skip", type=int, default=100)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    ds = FaceDataset(a.dataset, "val", flip=False, limit=a.skip + a.images)
    hr = ds.hr_batch(range(a.skip, len(ds)))
    enh = Enhancer.from_files(a.weights)
    res: dict[str, list[float]] = {}
    for name, base in D.STRENGTHS.items():
        vals = []
        for i in range(hr.shape[0]):
            lr = D.degrade(hr[i], dataclasses.replace(base, seed=a.skip + i), enh.lr_size)[None]
            with torch.no_grad():
                vals.append(enh.lr_residual(lr))
        res[name] = vals
        v = np.asarray(vals)
        print(f"{name:9s} residual median {np.median(v):.2f}  10% {np.quantile(v, 0.1):.2f}  90% {np.quantile(v, 0.9):.2f}")
    clean = np.asarray(res["clean"])
    deg = np.concatenate([np.asarray(v) for k, v in res.items() if k != "clean"])
    best = max(np.unique(np.concatenate([clean, deg])),
               key=lambda t: 0.5 * ((clean <= t).mean() + (deg > t).mean()))
    t = float(round(best, 2))
    per = {k: float((np.asarray(v) > t).mean()) for k, v in res.items()}
    print(f"threshold {t:.2f}: clean judged clean {1 - per['clean']:.2f}; judged degraded: "
          + ", ".join(f"{k} {per[k]:.2f}" for k in res if k != "clean"))
    if a.json:
        a.json.write_text(json.dumps({"threshold": t, "faces": int(hr.shape[0]), "skip": a.skip,
                                      "judged_degraded": per, "residuals": res}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
