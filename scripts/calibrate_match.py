#!/usr/bin/env python
"""Measure the match-score calibration (genuine and impostor score distributions of single
comparisons, per probe kind) on a prepared dataset's TRAINING identities, and check it on its
VALIDATION identities (never used to make it).

    python scripts/calibrate_match.py DATASET [--out weights/match_calibration.json]
                                      [--check docs/match_calibration_check.json] [--cache DIR]

DATASET is a folder made by ``sdesr prepare`` (manifest.csv with file, identity, split). For
each identity of a split, its first ``--probes-per-id`` faces are probes and its next
``--gallery-per-id`` faces form the gallery. Each probe is compared with every gallery photo
as an HR photo, as the bicubic blow-up of its 16x16 LR, as one generated sample (the fast
sampler at its defaults, seed = probe number) and as the model's mean estimate. Pairs of the
same identity are genuine, the rest impostors. The file written holds histograms only (no
photos, no embeddings).

Embeddings are cached in ``--cache`` (keyed by split, kind, file list and model), so a re-run
with new weights only recomputes the generated kinds.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sdesr_gui.core import calibration as cal  # noqa: E402
from sdesr_gui.core import faces  # noqa: E402
from sdesr_gui.core.enhance import Enhancer, SamplerSettings, find_default_weights  # noqa: E402
from sdesr_gui.core.gallery import get_embedder  # noqa: E402
from sdesr_gui.core.provenance import atomic_write_text, to_json, versions  # noqa: E402
from sdesr_gui.core.video import load_still  # noqa: E402


WHAT = ("Genuine and impostor score histograms of single comparisons (probe vs one gallery photo) per embedder "
        "and probe kind, and their check on validation identities; numbers only. Made by "
        "scripts/calibrate_match.py.")


def split_sets(dataset: Path, split: str, probes_per_id: int, gallery_per_id: int, probe_ids: int):
    """(probes, gallery) as (file, identity) lists: every identity with enough faces gives
    gallery photos; the first ``probe_ids`` of them (0: all) also give probes."""
    rows: dict[str, list[str]] = {}
    with open(dataset / "manifest.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["split"] == split and r.get("identity"):
                rows.setdefault(r["identity"], []).append(r["file"])
    probes, gallery = [], []
    used = 0
    for ident in sorted(rows):
        files = sorted(rows[ident])
        if len(files) < probes_per_id + 1:
            continue
        if not probe_ids or used < probe_ids:
            probes += [(f, ident) for f in files[:probes_per_id]]
            used += 1
        gallery += [(f, ident) for f in files[probes_per_id:probes_per_id + gallery_per_id]]
    return probes, gallery


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def cached(cache: Path, key: str, make):
    f = cache / f"{key}.npy"
    if f.is_file():
        return np.load(f)
    v = make()
    tmp = f.with_suffix(".tmp.npy")
    np.save(tmp, v)
    tmp.replace(f)
    return v


def embed_kinds(dataset, probes, gallery, emb, enh, settings, cache, split, batch):
    def load(items):
        return [load_still(dataset / f) for f, _ in items]

    model_sha = enh.model_info.get("sha256")
    pfiles = [f for f, _ in probes]
    out = {}
    t0 = time.perf_counter()
    out["gallery"] = cached(cache, _key(split, "gallery", [f for f, _ in gallery], emb.cache_key),
                            lambda: emb.embed_aligned(load(gallery)))
    print(f"[{split}] gallery: {len(gallery)} photos embedded ({time.perf_counter() - t0:.0f} s)", flush=True)
    hr = load(probes)
    lr = enh.degrade(faces.frames_to_tensor(hr))
    out["hr"] = cached(cache, _key(split, "hr", pfiles, emb.cache_key), lambda: emb.embed_aligned(hr))
    out["bicubic"] = cached(cache, _key(split, "bicubic", pfiles, emb.cache_key),
                            lambda: emb.embed_aligned(faces.to_uint8(faces.upsample(lr))))

    def means():
        return emb.embed_aligned([faces.to_uint8(enh.mean_estimate(lr[i:i + 1]))[0] for i in range(len(hr))])

    out["mean"] = cached(cache, _key(split, "mean", pfiles, emb.cache_key, model_sha), means)

    def samples():
        imgs = []
        for k in range(0, len(hr), batch):
            s = SamplerSettings(**{**settings.__dict__, "seed": k})
            imgs += faces.to_uint8(enh.run_many(lr[k:k + batch], s))
            print(f"[{split}] samples {len(imgs)}/{len(hr)} ({time.perf_counter() - t0:.0f} s)", flush=True)
        return emb.embed_aligned(imgs)

    out["sample"] = cached(cache, _key(split, "sample", pfiles, emb.cache_key, model_sha, settings.to_dict()),
                           samples)
    print(f"[{split}] all probe kinds embedded ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def pair_scores(vecs, probes, gallery):
    pid, gid = [i for _, i in probes], [i for _, i in gallery]
    return {kind: cal.pair_scores(vecs[kind], pid, vecs["gallery"], gid) for kind in cal.PROBE_KINDS}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "weights" / cal.CALIBRATION_NAME)
    ap.add_argument("--check", type=Path, default=ROOT / "docs" / "match_calibration_check.json")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "sdesr_gui" / "calibration")
    ap.add_argument("--weights", type=Path, default=None, help="score model (default: the shipped one)")
    ap.add_argument("--probes-per-id", type=int, default=1)
    ap.add_argument("--gallery-per-id", type=int, default=6)
    ap.add_argument("--probe-ids", type=int, default=200,
                    help="training identities that give probes (0: all; every identity gives gallery photos)")
    ap.add_argument("--val-probes-per-id", type=int, default=2)
    ap.add_argument("--val-gallery-per-id", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    a.cache.mkdir(parents=True, exist_ok=True)
    weights = a.weights or find_default_weights()
    enh = Enhancer.from_files(weights)
    emb = get_embedder("dlib")
    settings = SamplerSettings()

    probes, gallery = split_sets(a.dataset, "train", a.probes_per_id, a.gallery_per_id, a.probe_ids)
    vecs = embed_kinds(a.dataset, probes, gallery, emb, enh, settings, a.cache, "train", a.batch)
    sc = pair_scores(vecs, probes, gallery)
    n_ids = len({i for _, i in probes})
    n_gal_ids = len({i for _, i in gallery})
    made = {
        "data": f"{a.dataset.name}: the 'train' split of a dataset prepared by `sdesr prepare` from CelebA "
                "(aligned faces, identities.csv); validation identities are never used",
        "split": "train", "identities": n_ids, "gallery_identities": n_gal_ids, "probes": len(probes),
        "gallery_photos": len(gallery),
        "probes_per_identity": a.probes_per_id, "gallery_photos_per_identity": a.gallery_per_id,
        "pairs": "each probe against every gallery photo; genuine = same identity",
        "model": {"file": Path(weights).name, "sha256": enh.model_info.get("sha256")},
        "sampler": settings.to_dict(), "embedder": emb.info(),
        "script": "scripts/calibrate_match.py", "date": datetime.date.today().isoformat(), "versions": versions(),
    }
    c = cal.build_calibration(emb.cache_key, {k: v[0] for k, v in sc.items()}, {k: v[1] for k, v in sc.items()},
                              made, probes={k: len(probes) for k in sc}, identities={k: n_ids for k in sc})
    cal.save_calibrations(a.out, [c], WHAT)
    print(f"calibration written to {a.out}")

    # check on the validation identities
    vp, vg = split_sets(a.dataset, "val", a.val_probes_per_id, a.val_gallery_per_id, 0)
    vv = embed_kinds(a.dataset, vp, vg, emb, enh, settings, a.cache, "val", a.batch)
    vs = pair_scores(vv, vp, vg)
    report = {"calibration": str(a.out.name), "validation": {"identities": len({i for _, i in vp}),
                                                             "probes": len(vp), "gallery_photos": len(vg)},
              "model": made["model"], "embedder": emb.cache_key, "kinds": {}}
    print("\n| probe | target FMR | threshold | predicted FMR | observed FMR (val) | events | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind in cal.PROBE_KINDS:
        rows = cal.verify(c.kind(kind), vs[kind][1])
        report["kinds"][kind] = {"rows": rows, "genuine_val": cal.ScoreHistogram.of(vs[kind][0]).summary(),
                                 "impostor_val": cal.ScoreHistogram.of(vs[kind][1]).summary(),
                                 "genuine_train": c.kind(kind).genuine.summary(),
                                 "impostor_train": c.kind(kind).impostor.summary()}
        for r in rows:
            print(f"| {kind} | {r['target_fmr']:g} | {r['threshold']:.3f} | {r['predicted_fmr']:.2e} | "
                  f"{r['observed_fmr']:.2e} | {r['observed_events']} | "
                  + ("–" if r["ratio"] is None else f"{r['ratio']:.2f}") + " |")
        c.kind(kind).check = rows  # the app warns where validation strangers beat the prediction
    cal.save_calibrations(a.out, [c], WHAT)
    a.check.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.check, to_json(report))
    print(f"\ncheck written to {a.check}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
