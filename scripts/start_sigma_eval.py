#!/usr/bin/env python
"""Samples started from the mean estimate (``--start-sigma``): fidelity against spread.

For each start (``none`` = pure noise at the SDE's top, the posterior sampler; a number = the
mean estimate diffused to that noise level) the fast sampler draws one sample of each of the
first ``--faces`` validation faces (face i with seed i, as ``sdesr evaluate``) and a second one
with seed 10,000 + i.  Reported per start, against bicubic of the same LR (difference ± s.e.
over faces): PSNR, SSIM, consistency, CS (dlib); and the spread, the per-pixel standard
deviation of a sample (RMS of the two seeds' difference over sqrt 2, 0-255 units), and the RMS
distance of a sample to the mean estimate.  ``--fast-methods`` runs every start with each of
several fast methods (rows then carry the method's name).  ``--degrade`` takes the LR from a fixed strength of
the degraded validation set (``core.degradations.STRENGTHS``).

    python scripts/start_sigma_eval.py --dataset DATASET --out docs/start_sigma_clean.json
    python scripts/start_sigma_eval.py --dataset DATASET --weights weights/sdesr_ve_8x_footage.safetensors \\
        --degrade moderate --sigmas none,1,0.5,0.3,0.15 --out docs/start_sigma_footage_moderate.json
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from model_card_eval import load, make_embed_fn, split_rows  # noqa: E402

from sdesr_gui.core import degradations, faces, metrics  # noqa: E402
from sdesr_gui.core.enhance import SCORE_WEIGHTS_NAME, Enhancer, SamplerSettings, weights_dir  # noqa: E402
from sdesr_gui.core.evaluation import paired_difference  # noqa: E402
from sdesr_gui.core.provenance import write_json_atomic  # noqa: E402

SECOND_SEED = 10_000  # the second sample of face i (for the spread) uses this + i


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", type=Path, required=True, help="a prepared dataset (sdesr prepare)")
    ap.add_argument("--weights", type=Path, default=None, help="score model (default: the shipped 8x)")
    ap.add_argument("--faces", type=int, default=48, help="the first N validation faces (48)")
    ap.add_argument("--sigmas", default="none,2,1,0.5,0.3,0.2,0.1",
                    help="starts, comma-separated: none (pure noise) or a noise level")
    ap.add_argument("--steps", type=int, default=40, help="fast-sampler steps of every start (40)")
    ap.add_argument("--fast-methods", default=SamplerSettings().fast_method,
                    help="fast-sampler methods, comma-separated (core.sampling.FAST_METHODS); every start "
                         "is run with each (default: the app's)")
    ap.add_argument("--degrade", default="clean", choices=list(degradations.STRENGTHS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True, help="JSON report")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    enh = Enhancer.from_files(a.weights or weights_dir() / SCORE_WEIGHTS_NAME)
    imgs = load(a.dataset, split_rows(a.dataset)[: a.faces])
    embed, embedder = make_embed_fn("dlib")
    hr = torch.cat([faces.to_tensor(im) for im in imgs])
    base = degradations.STRENGTHS[a.degrade]
    lr = torch.stack([degradations.degrade(hr[i], replace(base, seed=i), enh.lr_size) for i in range(len(hr))])
    e_hr = embed(hr)

    def score(x: torch.Tensor) -> dict[str, np.ndarray]:
        m = metrics.image_metrics(x, lr, hr)
        return {"psnr": np.array([d["psnr"] for d in m]), "ssim": np.array([d["ssim"] for d in m]),
                "consistency": np.array([d["consistency"] for d in m]),
                "cs": np.array([float(v) for v in metrics.cosine_similarity(embed(x), e_hr)])}

    ref = score(faces.upsample(lr))
    mean = torch.cat([enh.mean_estimate(lr[i:i + 1]) for i in range(len(lr))])
    report = {"faces": len(imgs), "degrade": a.degrade, "steps": a.steps, "embedder": embedder,
              "weights": enh.model_info.get("name"), "weights_sha256": enh.model_info.get("sha256"),
              "columns": "per metric: [mean over faces, mean difference from bicubic, its s.e.]",
              "spread": "per-pixel std of a sample: RMS(seed i - seed 10000+i) / sqrt 2, 0-255 units",
              "rows": {}}

    def add(name: str, r: dict, **extra) -> None:
        row = {}
        for k, v in r.items():
            d = paired_difference(v, ref[k])
            row[k] = [float(v.mean()), d["mean"], d["se"]]
        row.update(extra)
        report["rows"][name] = row
        print(name, "  ".join(f"{k} {v[0]:.4f} ({v[1]:+.4f} ± {v[2]:.4f})" for k, v in row.items()
                              if isinstance(v, list)),
              "  ".join(f"{k} {v:.2f}" for k, v in extra.items()), flush=True)

    add("bicubic", ref)
    add("mean estimate", score(mean))
    methods = [m.strip() for m in a.fast_methods.split(",")]
    for method, text in ((m, t) for m in methods for t in a.sigmas.split(",")):
        s0 = None if text.strip() == "none" else float(text)
        st = SamplerSettings(sampler="fast", steps=a.steps, start_sigma=s0, fast_method=method)
        t0 = time.perf_counter()
        x0 = torch.cat([enh.run_many(lr[i:i + a.batch], replace(st, seed=i)) for i in range(0, len(lr), a.batch)])
        secs = time.perf_counter() - t0
        x1 = torch.cat([enh.run_many(lr[i:i + a.batch], replace(st, seed=SECOND_SEED + i))
                        for i in range(0, len(lr), a.batch)])
        name = f"start {text.strip()}" + (f", {method}" if len(methods) > 1 else "")
        add(name, score(x0), spread=float((x0 - x1).pow(2).mean().sqrt() / np.sqrt(2) * 255),
            rms_to_mean=float((x0 - mean).pow(2).mean().sqrt() * 255), seconds=secs)
        write_json_atomic(a.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
