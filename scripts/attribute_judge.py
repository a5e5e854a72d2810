#!/usr/bin/env python
"""An independent attribute judge for guidance: logistic regression on dlib face embeddings.

Guidance (``--attr``) is steered by the app's own time-dependent CNN classifier; judging the
guided samples with that same classifier only says the guidance fooled it. This judge shares
nothing with it: a different network (dlib's face-recognition ResNet, frozen) and a linear
read-out trained only on CelebA's *official* attribute labels of the training identities.

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


def probabilities(judge: dict, emb: np.ndarray) -> dict[str, np.ndarray]:
    """P(attribute present) per attribute for embeddings [N, 128]."""
    xb = np.hstack([np.asarray(emb, np.float64), np.ones((len(emb), 1))])
    return {a: 1.0 / (1.0 + np.exp(-(xb @ np.asarray(judge["weights"][a])))) for a in judge["weights"]}


def _official(dataset: Path, split: str) -> tuple[list[str], np.ndarray]:
    files, labels = [], []
    with open(dataset / "manifest.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["split"] == split and r.get("attr_source") == "official":
                files.append(r["file"])
                labels.append([int(r[a]) for a in ATTRIBUTES])
    return files, np.asarray(labels, np.float64)


def _embed(paths: list[Path]) -> np.ndarray:
    from sdesr_gui.core.gallery import get_embedder
    from sdesr_gui.core.video import load_still

    emb = get_embedder("dlib")
    out = []
    for k in range(0, len(paths), 64):
        out.append(emb.embed_aligned([load_still(p) for p in paths[k:k + 64]]))
        print(f"embedded {min(k + 64, len(paths))}/{len(paths)}", file=sys.stderr, flush=True)
    return np.concatenate(out) if out else np.zeros((0, 128))


def cmd_train(a) -> int:
    from sdesr_gui.core.provenance import atomic_write_text

    ftr, ytr = _official(a.dataset, "train")
    fva, yva = _official(a.dataset, "val")
    cache = a.cache
    if cache is not None and cache.is_file():
        z = np.load(cache)
        xtr, xva = z["train"], z["val"]
    else:
        xtr, xva = _embed([a.dataset / f for f in ftr]), _embed([a.dataset / f for f in fva])
        if cache is not None:
            np.savez(cache, train=xtr, val=xva)
    weights, report = {}, {}
    for j, attr in enumerate(ATTRIBUTES):
        w = fit_logistic(xtr, ytr[:, j], a.l2)
        weights[attr] = [float(v) for v in w]
        judge = {"weights": {attr: w}}
        acc_tr = float(np.mean((probabilities(judge, xtr)[attr] > 0.5) == (ytr[:, j] > 0.5)))
        pva = probabilities(judge, xva)[attr] > 0.5
        yv = yva[:, j] > 0.5
        bal = 0.5 * (float(pva[yv].mean()) if yv.any() else 1.0) + 0.5 * (float((~pva[~yv]).mean()) if (~yv).any() else 1.0)
        report[attr] = {"val_accuracy": round(float(np.mean(pva == yv)), 4), "val_balanced_accuracy": round(bal, 4),
                        "val_present": int(yv.sum()), "val_absent": int((~yv).sum()),
                        "val_recall_present": round(float(pva[yv].mean()), 4) if yv.any() else None,
                        "val_recall_absent": round(float((~pva[~yv]).mean()), 4) if (~yv).any() else None,
                        "train_accuracy": round(acc_tr, 4), "train_present": int(ytr[:, j].sum())}
        print(f"{attr:11s} val accuracy {report[attr]['val_accuracy']:.3f} (balanced {bal:.3f}) on {len(yv)} official labels "
              f"({report[attr]['val_present']} present; recall present {report[attr]['val_recall_present']}, "
              f"absent {report[attr]['val_recall_absent']}); train {acc_tr:.3f} on {len(ytr)}")
    doc = {"what": "independent attribute judge: logistic regression (L2 %g) on dlib face-recognition "
                   "embeddings of aligned 128x128 faces; P(present) = sigmoid(w[:128] . e + w[128])" % a.l2,
           "trained_on": f"official CelebA attribute labels of the training identities ({len(ftr)} faces)",
           "checked_on": f"official labels of the validation identities ({len(fva)} faces)",
           "accuracy": report, "weights": weights, "embedder": "dlib",
           "date": datetime.date.today().isoformat(), "script": "scripts/attribute_judge.py"}
    atomic_write_text(a.out, json.dumps(doc, indent=1) + "\n")
    print(f"judge written to {a.out}")
    return 0


def cmd_judge(a) -> int:
    judge = json.loads(Path(a.judge).read_text())
    paths = [Path(p) for p in a.images]
    pr = probabilities(judge, _embed(paths))
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
