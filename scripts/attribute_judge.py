#!/usr/bin/env python
"""An independent attribute judge for guidance: logistic regressions on features that share
nothing with the guiding classifier.

Guidance (``--attr``) is steered by the app's own time-dependent CNN classifier; judging the
guided samples with that same classifier only says the guidance fooled it. This judge shares
nothing with it: other features and a linear read-out trained only on CelebA's *official*
attribute labels of the training identities (the guiding classifier learned mostly from teacher
pseudo-labels). Male and beard are read from dlib's face-recognition embedding (frozen ResNet);
eyeglasses from a HOG descriptor of the eye band, because dlib's embedding is trained to ignore
glasses (its read-out of them was at chance).

    python scripts/attribute_judge.py train DATASET [--out docs/attribute_judge.json]
    python scripts/attribute_judge.py judge docs/attribute_judge.json IMAGE... (128x128 aligned faces)

``train`` reports the judge's accuracy on the official labels of the validation identities
(never used to fit it) and writes the weights (numbers only) with that accuracy.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

ATTRIBUTES = ("male", "beard", "eyeglasses")
#: attribute -> the features its read-out uses
FEATURES = {"male": "dlib", "beard": "dlib", "eyeglasses": "hog_eyes"}
#: the eye band of the canonical 128x128 frame (rows, columns) that ``hog_eyes`` describes
EYE_BAND = (slice(48, 88), slice(24, 104))
FEATURE_WHAT = {
    "dlib": "dlib face-recognition embedding (128-D) of the aligned 128x128 face",
    "hog_eyes": "HOG (9 orientations, 8x8 cells, 2x2 blocks; 1,296-D) of the grey eye band, rows 48-87 "
                "and columns 24-103 of the 128x128 frame, standardised",
}


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 50) -> np.ndarray:
    """Weights [D + 1] (last: bias) of an L2-regularised, class-balanced logistic regression
    (each class weighs half: a rare attribute is not ignored), by Newton's method."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    n_pos = max(float(y.sum()), 1.0)
    n_neg = max(float(len(y) - y.sum()), 1.0)
    sw = np.where(y > 0.5, len(y) / (2 * n_pos), len(y) / (2 * n_neg))
    w = np.zeros(xb.shape[1])
    reg = l2 * np.eye(xb.shape[1])
    reg[-1, -1] = 0.0  # the bias is not shrunk
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(xb @ w)))
        g = xb.T @ (sw * (p - y)) + reg @ w
        h = (xb * (sw * p * (1 - p))[:, None]).T @ xb + reg
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def _standardise(judge: dict, attr: str, x: np.ndarray) -> np.ndarray:
    st = (judge.get("standardise") or {}).get(attr)
    if st is None:
        return x
    return (x - np.asarray(st["mean"])) / np.asarray(st["std"])


def probabilities(judge: dict, feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """P(attribute present) per attribute, from ``feats`` = {feature kind: [N, D]}."""
    out = {}
    for a, w in judge["weights"].items():
        x = _standardise(judge, a, np.asarray(feats[judge.get("features", FEATURES)[a]], np.float64))
        xb = np.hstack([x, np.ones((len(x), 1))])
        out[a] = 1.0 / (1.0 + np.exp(-(xb @ np.asarray(w))))
    return out


def hog_eyes(images: np.ndarray) -> np.ndarray:
    """``hog_eyes`` features of uint8 RGB 128x128 faces [N, 128, 128, 3] -> [N, 1296]."""
    from skimage.feature import hog

    grey = np.asarray(images, np.float64).mean(axis=-1) / 255.0
    return np.stack([hog(g[EYE_BAND], orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2),
                         feature_vector=True) for g in grey]) if len(grey) else np.zeros((0, 1296))


def features(images: np.ndarray, kinds=("dlib", "hog_eyes")) -> dict[str, np.ndarray]:
    """Every feature kind in ``kinds`` for uint8 RGB aligned faces [N, 128, 128, 3]."""
    out = {}
    if "dlib" in kinds:
        from sdesr_gui.core.gallery import get_embedder

        out["dlib"] = get_embedder("dlib").embed_aligned(list(images))
    if "hog_eyes" in kinds:
        out["hog_eyes"] = hog_eyes(images)
    return out


def judge_images(judge: dict, images: np.ndarray) -> dict[str, np.ndarray]:
    """P(attribute present) per attribute for uint8 RGB aligned faces [N, 128, 128, 3]."""
    return probabilities(judge, features(images, set(judge.get("features", FEATURES).values())))


def _official(dataset: Path, split: str, official: bool = True) -> tuple[list[str], np.ndarray]:
    """Files and labels of ``split``: official labels only, or (``official=False``) every face
    with the manifest's labels (teacher pseudo-labels where CelebA has none)."""
    files, labels = [], []
    with open(dataset / "manifest.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["split"] == split and (r.get("attr_source") == "official" or not official):
                files.append(r["file"])
                labels.append([int(r[a]) for a in ATTRIBUTES])
    return files, np.asarray(labels, np.float64)


def _features(paths: list[Path], kinds) -> dict[str, np.ndarray]:
    from sdesr_gui.core.video import load_still

    parts: dict[str, list] = {}
    for k in range(0, len(paths), 64):
        for kind, f in features(np.stack([load_still(p) for p in paths[k:k + 64]]), kinds).items():
            parts.setdefault(kind, []).append(f)
        print(f"features of {min(k + 64, len(paths))}/{len(paths)}", file=sys.stderr, flush=True)
    return {kind: np.concatenate(v) for kind, v in parts.items()}


def cmd_train(a) -> int:
    from sdesr_gui.core.provenance import atomic_write_text

    ftr, ytr = _official(a.dataset, "train")
    fva, yva = _official(a.dataset, "val")
    fall, yall = _official(a.dataset, "val", official=False)
    kinds = sorted(set(FEATURES.values()))
    cache = a.cache
    z = dict(np.load(cache)) if cache is not None and cache.is_file() else {}
    splits = (("train", ftr), ("val", fva), ("valall", fall))
    if not all(f"{s}_{k}" in z for s, _ in splits for k in kinds):
        if "train" in z:  # an older cache with dlib embeddings only
            z["train_dlib"], z["val_dlib"] = z.pop("train"), z.pop("val")
        for split, files in splits:
            todo = [k for k in kinds if f"{split}_{k}" not in z]
            for k, v in _features([a.dataset / f for f in files], todo).items():
                z[f"{split}_{k}"] = v
        if cache is not None:
            np.savez(cache, **z)
    xtr = {k: z[f"train_{k}"] for k in kinds}
    xva = {k: z[f"val_{k}"] for k in kinds}
    xall = {k: z[f"valall_{k}"] for k in kinds}
    weights, report, standardise = {}, {}, {}
    for j, attr in enumerate(ATTRIBUTES):
        kind = FEATURES[attr]
        if kind != "dlib":  # HOG bins have very different scales: standardise on the training faces
            standardise[attr] = {"mean": [float(v) for v in xtr[kind].mean(0)],
                                 "std": [float(v) for v in xtr[kind].std(0) + 1e-6]}
        judge = {"features": FEATURES, "standardise": standardise}
        w = fit_logistic(_standardise(judge, attr, xtr[kind]), ytr[:, j], a.l2)
        weights[attr] = [float(v) for v in w]
        judge["weights"] = {attr: w}
        acc_tr = float(np.mean((probabilities(judge, xtr)[attr] > 0.5) == (ytr[:, j] > 0.5)))
        pva = probabilities(judge, xva)[attr] > 0.5
        yv = yva[:, j] > 0.5
        bal = 0.5 * (float(pva[yv].mean()) if yv.any() else 1.0) + 0.5 * (float((~pva[~yv]).mean()) if (~yv).any() else 1.0)
        report[attr] = {"val_accuracy": round(float(np.mean(pva == yv)), 4), "val_balanced_accuracy": round(bal, 4),
                        "val_present": int(yv.sum()), "val_absent": int((~yv).sum()),
                        "val_recall_present": round(float(pva[yv].mean()), 4) if yv.any() else None,
                        "val_recall_absent": round(float((~pva[~yv]).mean()), 4) if (~yv).any() else None,
                        "train_accuracy": round(acc_tr, 4), "train_present": int(ytr[:, j].sum()),
                        "features": kind}
        pall, yv_all = probabilities(judge, xall)[attr] > 0.5, yall[:, j] > 0.5
        report[attr].update({
            "val_all_accuracy": round(float(np.mean(pall == yv_all)), 4),
            "val_all_balanced_accuracy": round(0.5 * float(pall[yv_all].mean()) + 0.5 * float((~pall[~yv_all]).mean()), 4),
            "val_all_present": int(yv_all.sum()), "val_all_n": int(len(yv_all))})
        print(f"{attr:11s} val accuracy {report[attr]['val_accuracy']:.3f} (balanced {bal:.3f}) on {len(yv)} official labels "
              f"({report[attr]['val_present']} present; recall present {report[attr]['val_recall_present']}, "
              f"absent {report[attr]['val_recall_absent']}); train {acc_tr:.3f} on {len(ytr)}")
    doc = {"what": "independent attribute judge: per attribute a class-balanced logistic regression (L2 %g) "
                   "on features of aligned 128x128 faces; P(present) = sigmoid(w[:-1] . f + w[-1]), f "
                   "standardised where 'standardise' says so" % a.l2,
           "trained_on": f"official CelebA attribute labels of the training identities ({len(ftr)} faces)",
           "checked_on": f"official labels of the validation identities ({len(fva)} faces); val_all_*: all "
                         f"{len(fall)} validation faces with the manifest's labels (teacher pseudo-labels "
                         "where CelebA has none)",
           "features": FEATURES, "feature_what": {k: FEATURE_WHAT[k] for k in kinds},
           "accuracy": report, "weights": weights, "standardise": standardise,
           "date": datetime.date.today().isoformat(), "script": "scripts/attribute_judge.py"}
    atomic_write_text(a.out, json.dumps(doc, indent=1) + "\n")
    print(f"judge written to {a.out}")
    return 0


def cmd_judge(a) -> int:
    judge = json.loads(Path(a.judge).read_text())
    paths = [Path(p) for p in a.images]
    pr = probabilities(judge, _features(paths, set(judge.get("features", FEATURES).values())))
    for i, p in enumerate(paths):
        print(p, " ".join(f"{k}={v[i]:.2f}" for k, v in pr.items()))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("dataset", type=Path)
    t.add_argument("--out", type=Path, default=ROOT / "docs" / "attribute_judge.json")
    t.add_argument("--l2", type=float, default=1.0)
    t.add_argument("--cache", type=Path, default=None, help="keep the embeddings in this .npz (re-fits are instant)")
    t.set_defaults(func=cmd_train)
    j = sub.add_parser("judge")
    j.add_argument("judge")
    j.add_argument("images", nargs="+")
    j.set_defaults(func=cmd_judge)
    a = ap.parse_args()
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
