#!/usr/bin/env python
"""Does the samples' disagreement predict the mean estimate's error?  (README, "Uncertainty")

On ``--faces`` validation faces of a prepared dataset (``split == "val"`` in its manifest,
spread evenly over the split), each face is degraded to 16x16 and enhanced with K = ``--samples``
samples (fast sampler, seeds seed .. seed + K - 1) plus the model's mean estimate.  Per face,
with the core functions the CLI records (``core.uncertainty``):

* the std map over the K samples (ddof = 1, mean over RGB, [0, 1] units);
* calibration: RMS(mean estimate - HR) / RMS(std) (1 = the std predicts the error);
* the Spearman correlation of the 8x8-patch means of std and |mean estimate - HR|.

The map is checked as the app shows it: the samples' std times the model's stored scale
(``uncertainty_scale`` in its metadata, 1 without one).  ``--fit N`` instead measures the
unscaled ratio on N other validation faces (none among the evaluation faces) and
``--store-scale OUT`` writes a copy of the weights carrying that ratio as the model's scale;
the evaluation on the default faces then stays a held-out check of it.

Reports the calibration pooled over faces (sqrt of the mean squared error over the sqrt of the
mean squared std) and per face, the mean per-face Spearman, and the share of each face above
the threshold, as JSON (``--json`` or stdout) plus one markdown line.  Targets: ratio between
0.8 and 1.25, Spearman >= 0.5.

    python scripts/uncertainty_eval.py --dataset /root/sdesr_work/celeba128 --faces 12 --threads 1
    python scripts/uncertainty_eval.py --dataset ... --weights W --fit 24 --store-scale W_scaled.safetensors
    python scripts/uncertainty_eval.py --dataset ... --faces 24 --fast-method dpmpp_2m_sde   # another sampler

The sampler options are the CLI's (``sdesr enhance --help``; K = ``--samples``, 6 here): the
check can be run for any sampler the app offers, and a stored fit records the settings it was
measured with.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sdesr_gui.core import faces, uncertainty  # noqa: E402
from sdesr_gui.core.datasets import read_manifest  # noqa: E402
from sdesr_gui.cli.common import UsageError, add_sampler_args, load_enhancer, settings_from_args  # noqa: E402
from sdesr_gui.core.enhance import SCORE_WEIGHTS_NAME, weights_dir  # noqa: E402
from sdesr_gui.core.errors import SdesrError  # noqa: E402
from sdesr_gui.core.metrics import psnr  # noqa: E402
from sdesr_gui.core.provenance import device_info, to_json, versions, write_json_atomic  # noqa: E402
from sdesr_gui.core.video import load_still  # noqa: E402

TARGET_RATIO = (0.8, 1.25)
TARGET_SPEARMAN = 0.5


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def spread(rows: list, n: int) -> list:
    """``n`` rows spread evenly over ``rows`` (deterministic)."""
    if n >= len(rows):
        return list(rows)
    idx = np.linspace(0, len(rows) - 1, n).round().astype(int)
    return [rows[i] for i in idx]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, help="a prepared dataset (manifest.csv + images/)")
    ap.add_argument("--weights", default=str(weights_dir() / SCORE_WEIGHTS_NAME))
    ap.add_argument("--faces", type=int, default=12)
    ap.add_argument("--fit", type=int, metavar="N", default=0,
                    help="measure on N other validation faces (spread over the split, none of them among "
                    "the --faces evaluation faces) with the map unscaled: the pooled ratio there is the "
                    "scale to store with the model (--store-scale)")
    ap.add_argument("--store-scale", metavar="OUT", default=None,
                    help="with --fit: write a copy of --weights to OUT whose metadata carries the fitted scale "
                    "(uncertainty_scale; the tensors are copied unchanged)")
    add_sampler_args(ap)  # the CLI's sampler options (sampler, SDE, fast method, churn, guidance, ...)
    ap.set_defaults(samples=6)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", metavar="FILE", help="write the report here (default: stdout)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    dataset = Path(a.dataset)
    val = sorted((r for r in read_manifest(dataset) if r["split"] == "val"), key=lambda r: r["file"])
    rows = spread(val, a.faces)
    if a.fit:  # faces disjoint from the evaluation faces, so the evaluation stays a held-out check
        held = {r["file"] for r in rows}
        rows = spread([r for r in val if r["file"] not in held], a.fit)
    if not rows:
        print(f"no validation faces in {dataset}", file=sys.stderr)
        return 2
    if a.store_scale and not a.fit:
        print("--store-scale needs --fit N: the scale is measured on the fit faces", file=sys.stderr)
        return 2
    try:
        settings = settings_from_args(a)
    except UsageError as e:
        print(e, file=sys.stderr)
        return 2
    if settings.samples < 2:
        print("the map needs at least two samples per face (--samples K >= 2)", file=sys.stderr)
        return 2
    try:  # the CLI's loader: the default classifier only when an attribute is set, as `sdesr evaluate`
        enh = load_enhancer(a, need_classifier=any(v is not None for v in settings.attributes.values()))
    except SdesrError as e:  # a missing or unreadable model file: its one sentence
        print(e, file=sys.stderr)
        return 2
    # the evaluation checks the map as the app shows it (times the model's stored scale); a fit
    # measures the unscaled std
    scale = 1.0 if a.fit else uncertainty.model_scale(enh.model_info)
    per_face, stds = [], []
    t_all = time.perf_counter()
    for i, r in enumerate(rows):
        hr = faces.to_tensor(load_still(dataset / r["file"]))
        lr = enh.degrade(hr)
        t0 = time.perf_counter()
        res = enh.run(lr, settings)
        umap = uncertainty.uncertainty_map(res.samples, scale=scale)
        cmp = uncertainty.compare_with_reference(res.mean, hr, umap)
        stds.append(umap.std)
        per_face.append({
            "file": r["file"], "identity": r.get("identity"),
            "rms_error": cmp["rms_error"], "rms_std": round(umap.rms_std, 6), "ratio": cmp["ratio"],
            "spearman_patch": cmp["spearman_patch"], "mean_std": round(umap.mean_std, 6),
            "share_above_threshold": round(umap.share_above, 6),
            "psnr_mean_estimate": round(float(psnr(res.mean, hr)), 4),
            "psnr_samples": [round(float(v), 4) for v in psnr(res.samples, hr.expand_as(res.samples))],
            "seconds": round(time.perf_counter() - t0, 2)})
        f = per_face[-1]
        log(f"{i + 1}/{len(rows)} {r['file']}: ratio {f['ratio']:.3f}, spearman {f['spearman_patch']:.3f}, "
            f"share>{uncertainty.DEFAULT_THRESHOLD:g} {f['share_above_threshold']:.3f} ({f['seconds']:.0f} s)")

    err2 = np.array([f["rms_error"] ** 2 for f in per_face])
    std2 = np.array([f["rms_std"] ** 2 for f in per_face])
    ratios = np.array([f["ratio"] for f in per_face])
    rhos = np.array([f["spearman_patch"] for f in per_face])
    pooled = float(np.sqrt(err2.mean()) / np.sqrt(std2.mean()))
    all_std = np.concatenate([s.ravel() for s in stds])
    face = uncertainty.region_masks()["face"]
    summary = {
        "faces": len(per_face), "samples": settings.samples, "std_scale": scale,
        "role": "fit (faces disjoint from the evaluation faces, map unscaled)" if a.fit else "evaluation",
        "ratio_pooled": round(pooled, 4),
        "ratio_per_face": {"mean": round(float(ratios.mean()), 4), "median": round(float(np.median(ratios)), 4),
                           "min": round(float(ratios.min()), 4), "max": round(float(ratios.max()), 4)},
        "spearman_patch_mean": round(float(rhos.mean()), 4),
        "spearman_patch_per_face": {"median": round(float(np.median(rhos)), 4), "min": round(float(rhos.min()), 4),
                                    "max": round(float(rhos.max()), 4)},
        "share_above_threshold_mean": round(float(np.mean([f["share_above_threshold"] for f in per_face])), 4),
        "threshold": uncertainty.DEFAULT_THRESHOLD,
        "std_quantiles_all_pixels": {q: round(float(np.quantile(all_std, float(q))), 4)
                                     for q in ("0.5", "0.9", "0.99")},
        "std_quantiles_face_box": {q: round(float(np.quantile(np.concatenate([s[face] for s in stds]), float(q))), 4)
                                   for q in ("0.5", "0.9", "0.99")},
        "psnr_mean_estimate": round(float(np.mean([f["psnr_mean_estimate"] for f in per_face])), 3),
        "psnr_sample": round(float(np.mean([np.mean(f["psnr_samples"]) for f in per_face])), 3),
        "targets": {"ratio": list(TARGET_RATIO), "spearman_patch": TARGET_SPEARMAN},
    }
    summary["meets_targets"] = bool(TARGET_RATIO[0] <= pooled <= TARGET_RATIO[1]
                                    and summary["spearman_patch_mean"] >= TARGET_SPEARMAN)
    report = {"summary": summary, "per_face": per_face, "dataset": str(dataset), "weights": a.weights,
              "settings": settings.to_dict(), "threads": torch.get_num_threads(),
              "command": "python scripts/uncertainty_eval.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "seconds": round(time.perf_counter() - t_all, 1), "device": device_info(a.device),
              "versions": versions()}
    if a.store_scale:
        from sdesr_gui.core.models.checkpoint import file_sha256, update_metadata
        fitted = round(pooled, 3)
        update_metadata(a.weights, a.store_scale, {
            uncertainty.SCALE_KEY: fitted,
            "uncertainty_scale_fit": {"faces": len(per_face), "samples": settings.samples, "ratio_pooled": round(pooled, 4),
                                      "settings": settings.to_dict(),
                                      "from": Path(a.weights).name, "sha256": file_sha256(a.weights),
                                      "what": uncertainty.SCALE_WHAT}})
        report["stored_scale"] = {"file": a.store_scale, "uncertainty_scale": fitted}
        log(f"wrote {a.store_scale} with uncertainty_scale {fitted}")
    if a.json:
        write_json_atomic(a.json, report)
    else:
        sys.stdout.write(to_json(report))
    print(f"| {summary['faces']} faces, K = {settings.samples} | calibration RMS(mean - HR) / RMS(std) = "
          f"{summary['ratio_pooled']:.2f} (per face {summary['ratio_per_face']['min']:.2f} to "
          f"{summary['ratio_per_face']['max']:.2f}) | patch Spearman {summary['spearman_patch_mean']:.2f} "
          f"(per face {summary['spearman_patch_per_face']['min']:.2f} to "
          f"{summary['spearman_patch_per_face']['max']:.2f}) | share of face above "
          f"{uncertainty.DEFAULT_THRESHOLD:g}: {summary['share_above_threshold_mean']:.2f} |",
          file=sys.stderr if not a.json else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
