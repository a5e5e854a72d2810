#!/usr/bin/env python
"""Do generated faces look more like the people the model was trained on?

A forensic question about any learned super-resolver: given the LR of a stranger, does its
output drift towards identities it saw in training (whose photos it may have memorised), so
that a gallery search puts a *training* identity first more often than it would for the true
photo? This script measures it on a gallery that holds both kinds of people.

    python scripts/identity_pull.py --dataset DATASET --gallery GALLERY --probes PROBES \
        [--weights FILE] [--limit N] [--json OUT]

DATASET is a prepared dataset (``sdesr prepare``; its manifest says which identities are in the
training split of the shipped model), GALLERY a folder with sub-folders per identity, PROBES a
folder of photos of validation identities (sub-folder = identity), as ``sdesr eval-match``
takes them (``scripts/match_sets.py`` makes both). Each probe is compared as its HR photo, the
bicubic blow-up of its LR (16x16, or 8x8 for the 16x model), one fast sample (seed = probe number) and the mean estimate.

For every probe and kind, over the gallery identities other than the probe's own:

* ``top_impostor_train``: the best-scoring wrong identity is a training identity (the base
  rate, if the kind did not care, is the training share of the wrong identities);
* ``pull``: mean score to training identities minus mean score to the other validation
  identities (dlib cosine); the model's pull is how much this rises from the HR photo;
* ``excess_above``: the share of training identities that score above the true one minus the
  share of the other validation identities that do (0 if the kind has no preference; a
  comparison that does not depend on how many of each the gallery holds);
* ``lost_to_train``: the true identity beats every other validation identity but a training
  identity scores above it (Rank-1 lost to someone the model learned);
* ``rank1_all`` / ``rank1_val``: Rank-1 against the whole gallery / its validation identities.

Differences between kinds are paired over probes; their standard errors resample identities
(probes of one person are not independent). Writes numbers only (no photos, no embeddings).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sdesr_gui.core import faces  # noqa: E402
from sdesr_gui.core.enhance import Enhancer, SamplerSettings, find_default_weights  # noqa: E402
from sdesr_gui.core.gallery import GalleryIndex, get_embedder  # noqa: E402
from sdesr_gui.core.provenance import sha256_file, to_json, versions, write_json_atomic  # noqa: E402

KINDS = ("hr", "bicubic", "sr", "mean")
#: the statistics compared between kinds, paired over probes
PAIRED = ("top_impostor_train", "pull", "excess_above", "lost_to_train")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def split_identities(dataset: Path) -> dict[str, str]:
    """identity -> split ('train' / 'val') from a prepared dataset's manifest."""
    out: dict[str, str] = {}
    with open(dataset / "manifest.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            if r.get("identity"):
                out.setdefault(r["identity"], r["split"])
    return out


def probe_stats(scores: np.ndarray, gallery_ids: list[str], true_id: str, split_of: dict[str, str]) -> dict:
    """The statistics of one probe from its identity scores [I] (own photo already left out)."""
    true_j = gallery_ids.index(true_id)
    is_train = np.array([split_of.get(g) == "train" for g in gallery_ids])
    wrong = np.ones(len(gallery_ids), bool)
    wrong[true_j] = False
    tr, va = wrong & is_train, wrong & ~is_train
    s_true = scores[true_j]
    best_wrong = int(np.argmax(np.where(wrong, scores, -np.inf)))
    best_val = scores[va].max() if va.any() else -np.inf
    best_tr = scores[tr].max() if tr.any() else -np.inf
    out = {
        "top_impostor_train": bool(is_train[best_wrong]),
        "pull": float(scores[tr].mean() - scores[va].mean()) if tr.any() and va.any() else float("nan"),
        "lost_to_train": bool(s_true > best_val and best_tr > s_true),
        "above_train": float(np.mean(scores[tr] > s_true)) if tr.any() else float("nan"),
        "above_val": float(np.mean(scores[va] > s_true)) if va.any() else float("nan"),
        "rank1_all": bool(s_true > scores[wrong].max()),
        "rank1_val": bool(s_true > best_val),
        "true_score": float(s_true),
        "best_train_score": float(best_tr),
        "best_val_score": float(best_val),
    }
    out["excess_above"] = out["above_train"] - out["above_val"]
    return out


def cluster_se(values: np.ndarray, groups: list[str]) -> float:
    """Standard error of the mean of ``values`` with identities as independent clusters."""
    g = np.array(groups)
    uniq = sorted(set(groups))
    if len(uniq) < 2:
        return float("nan")
    n = len(values)
    dev = np.array([np.sum(values[g == u] - values.mean()) for u in uniq])
    return float(np.sqrt(len(uniq) / (len(uniq) - 1) * np.sum(dev ** 2)) / n)


def _paired(rows_a: list[dict], rows_b: list[dict], key: str, ids: list[str]) -> dict:
    """Mean and identity-clustered s.e. of ``key`` of one kind minus another, probe by probe."""
    d = np.array([r[key] for r in rows_a], float) - np.array([r[key] for r in rows_b], float)
    return {"mean": float(np.mean(d)), "se": cluster_se(d, ids)}


def summarize(per: dict[str, list[dict]], ids: list[str], base_rate: float) -> dict:
    out: dict = {"base_rate_top_impostor_train": base_rate, "kinds": {}, "paired": {}}
    for k, rows in per.items():
        row = {}
        for key in ("top_impostor_train", "pull", "excess_above", "lost_to_train", "rank1_all", "rank1_val"):
            v = np.array([r[key] for r in rows], dtype=float)
            row[key] = {"mean": float(np.nanmean(v)), "se": cluster_se(v, ids)}
        out["kinds"][k] = row
    pairs = [(k, "hr") for k in per if k != "hr"] + ([("sr", "bicubic")] if {"sr", "bicubic"} <= set(per) else [])
    for a, b in pairs:
        out["paired"][f"{a} - {b}"] = {key: _paired(per[a], per[b], key, ids) for key in PAIRED}
    return out


def columns(per: dict[str, list[dict]]) -> dict:
    """Per-probe values as one list per kind and statistic (rounded), for the JSON report."""
    return {k: {key: [round(float(r[key]), 4) for r in rows] for key in rows[0]} for k, rows in per.items() if rows}


def render(summary: dict) -> str:
    lines = ["| probe | top wrong identity is a training one | pull (train - val, cosine) | share above the true identity, train - val | Rank-1 lost to a training identity | Rank-1, whole gallery | Rank-1, validation identities only |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for k, r in summary["kinds"].items():
        f = lambda key, fmt="{:.3f}": (fmt.format(r[key]["mean"]) + " ± " + fmt.format(r[key]["se"]))  # noqa: E731
        lines.append(f"| {k} | {f('top_impostor_train')} | {f('pull', '{:.4f}')} | {f('excess_above', '{:.4f}')} | {f('lost_to_train')} | "
                     f"{f('rank1_all')} | {f('rank1_val')} |")
    lines.append(f"\nbase rate of a training identity among the wrong ones: {summary['base_rate_top_impostor_train']:.3f}")
    for k, r in summary["paired"].items():
        lines.append(f"paired {k}: top wrong is training {r['top_impostor_train']['mean']:+.3f} ± "
                     f"{r['top_impostor_train']['se']:.3f}; pull {r['pull']['mean']:+.4f} ± {r['pull']['se']:.4f}; "
                     f"excess above {r['excess_above']['mean']:+.4f} ± {r['excess_above']['se']:.4f}; "
                     f"lost to training {r['lost_to_train']['mean']:+.3f} ± {r['lost_to_train']['se']:.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from sdesr_gui.cli.gallery import _probe_files, _probe_frame

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, type=Path)
    ap.add_argument("--gallery", required=True, type=Path)
    ap.add_argument("--probes", required=True, type=Path, action="append",
                    help="folder of probe photos (sub-folder = identity); may be given more than once")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    split_of = split_identities(a.dataset)
    emb = get_embedder("dlib")
    index = GalleryIndex(a.gallery, emb, cache_dir=a.cache_dir)
    index.update()
    g_files, g_ids, g_sha, g_emb = index.entries()
    if len(set(g_ids)) != len(g_ids):
        raise SystemExit("identity_pull.py expects one gallery photo per identity")
    items = [it for folder in a.probes for it in _probe_files(folder)]
    items = items[: a.limit] if a.limit else items
    hr, ids, own = [], [], []
    for p, ident in items:
        fr, _ = _probe_frame(p)
        if fr is None or ident not in g_ids:
            continue
        hr.append(fr)
        ids.append(ident)
        sha = sha256_file(p)
        own.append([j for j, s in enumerate(g_sha) if s == sha])
    log(f"{len(hr)} probes, gallery of {len(g_ids)} identities "
        f"({sum(split_of.get(g) == 'train' for g in g_ids)} of them training identities)")

    weights = a.weights or find_default_weights()
    enh = Enhancer.from_files(weights)
    hr_t = faces.frames_to_tensor(hr)
    lr = enh.degrade(hr_t)  # the model's LR: 16x16 for 8x, 8x8 for the 16x model
    settings = SamplerSettings(sampler="fast", seed=0)
    kinds = {"hr": hr, "bicubic": faces.to_uint8(faces.upsample(lr))}
    sr = []
    for k in range(0, len(hr), 8):  # face i of the run: seed i, as eval-match
        sr += faces.to_uint8(enh.run_many(lr[k:k + 8], SamplerSettings(sampler="fast", seed=k)))
        log(f"  samples {min(k + 8, len(hr))}/{len(hr)}")
    kinds["sr"] = sr
    kinds["mean"] = [faces.to_uint8(enh.mean_estimate(lr[k:k + 1]))[0] for k in range(len(hr))]

    per: dict[str, list[dict]] = {}
    for kind, frames in kinds.items():
        v = np.asarray(emb.embed_aligned(frames), np.float32)
        s = v @ g_emb.T
        rows = []
        for i in range(len(hr)):
            sc = s[i].copy()
            sc[own[i]] = -np.inf  # a probe never matches its own photo
            rows.append(probe_stats(sc, g_ids, ids[i], split_of))
        per[kind] = rows
    n_wrong_train = sum(split_of.get(g) == "train" for g in g_ids)
    base = n_wrong_train / (len(g_ids) - 1)
    summary = summarize(per, ids, base)
    print(render(summary))
    if a.json:
        write_json_atomic(a.json, {
            "what": "Pull of generated faces towards training identities (scripts/identity_pull.py); numbers only.",
            "gallery": str(a.gallery), "probes": len(hr), "identities": len(set(ids)),
            "weights": str(weights), "model_sha256": sha256_file(weights), "sampler": settings.to_dict(),
            "sample_seeds": "probe i (in the order of probe_identities) is sampled with seed i",
            "summary": summary, "per_probe": columns(per), "probe_identities": ids,
            "versions": versions()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
