#!/usr/bin/env python
"""Does attribute guidance change what a stranger sees? Judge guided samples with the
independent judge of ``scripts/attribute_judge.py`` (logistic regressions on dlib embeddings and,
for eyeglasses, on a HOG descriptor of the eye band; official labels), in both directions.

    python scripts/guidance_eval.py DATASET [--judge docs/attribute_judge.json] [--per-attribute 4] [--h 100]
                                    [--out docs/guidance_eval.json] [--grid /tmp/guidance_grid.png]

For each attribute, the first ``--per-attribute`` validation faces (official labels) that have
it and as many that do not are guided toward the opposite of their label (a woman to "male", a
bearded man to "no beard", ...) with the same seed as an unguided sample. A flip is counted when the judge reads
the unguided sample like the label and the guided one like the request. The grid (only with
``--grid``; it shows dataset faces, so keep it out of the repository) puts unguided and guided
samples side by side to look at.
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

sys.path.insert(0, str(ROOT / "scripts"))
from attribute_judge import ATTRIBUTES, judge_images  # noqa: E402

from sdesr_gui.core import faces  # noqa: E402
from sdesr_gui.core.enhance import (Enhancer, SamplerSettings, find_default_weights,  # noqa: E402
                                    CLASSIFIER_WEIGHTS_NAME, weights_dir)
from sdesr_gui.core.provenance import atomic_write_text, to_json  # noqa: E402
from sdesr_gui.core.video import load_still  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--judge", type=Path, default=ROOT / "docs" / "attribute_judge.json")
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--classifier", type=Path, default=None)
    ap.add_argument("--per-attribute", type=int, default=4,
                    help="validation faces per attribute and direction (official labels)")
    ap.add_argument("--h", type=float, default=100.0)
    ap.add_argument("--guidance-min-sigma", type=float, default=None,
                    help="guide only while sigma >= this (default: the classifier's model card)")
    ap.add_argument("--guidance-cap", type=float, default=SamplerSettings().guidance_cap,
                    help="each step's guidance at most this times the model's score (0 = no cap; default: "
                    "the app's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "guidance_eval.json")
    ap.add_argument("--grid", type=Path, default=None)
    a = ap.parse_args()
    judge = json.loads(a.judge.read_text())
    weights = a.weights or find_default_weights()
    enh = Enhancer.from_files(weights, a.classifier or weights_dir() / CLASSIFIER_WEIGHTS_NAME)
    rows = []
    with open(a.dataset / "manifest.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["split"] == "val" and r.get("attr_source") == "official":
                rows.append(r)
    # per attribute: the first N faces that have it (guided to "absent") and N that do not
    # (guided to "present"), so both directions are tried for every attribute
    plan = [(attr, r) for attr in ATTRIBUTES for want in (0, 1)
            for r in [r for r in rows if int(r[attr]) == 1 - want][: a.per_attribute]]
    t0 = time.perf_counter()
    results, grid = [], []
    counts: dict = {}
    for i, (attr, r) in enumerate(plan):
        hr = faces.frames_to_tensor([load_still(a.dataset / r["file"])])
        lr = enh.degrade(hr)
        seed = a.seed + i
        want = 1 - int(r[attr])
        base = enh.run(lr, SamplerSettings(seed=seed)).samples
        guided = enh.run(lr, SamplerSettings(seed=seed, h=a.h, guidance_sigma_min=a.guidance_min_sigma,
                                             guidance_cap=a.guidance_cap, attributes={attr: want})).samples
        u8 = faces.to_uint8(torch.cat([base, guided]))
        p0, p1 = (float(v) for v in judge_images(judge, u8)[attr])
        base_as_label = (p0 > 0.5) == bool(int(r[attr]))
        flipped = base_as_label and (p1 > 0.5) == bool(want)
        c = counts.setdefault((attr, want), [0, 0, 0])
        c[0] += 1
        c[1] += int(flipped)
        c[2] += int(base_as_label)
        results.append({"file": r["file"], "attribute": attr, "label": int(r[attr]), "asked": want, "seed": seed,
                        "p_present_unguided": round(p0, 3), "p_present_guided": round(p1, 3),
                        "unguided_read_as_label": base_as_label, "flipped": flipped})
        grid.append(u8)
        print(f"{i + 1}/{len(plan)} ({time.perf_counter() - t0:.0f} s): {attr} {int(r[attr])} -> {want}: "
              f"P(present) {p0:.2f} -> {p1:.2f}{' flipped' if flipped else ''}", flush=True)
    summary = {f"{attr} -> {'present' if want else 'absent'}": {"faces": c[0], "unguided_read_as_label": c[2],
                                                               "flipped": c[1]}
               for (attr, want), c in counts.items()}
    doc = {"h": a.h, "guidance_sigma_min": a.guidance_min_sigma if a.guidance_min_sigma is not None
           else enh.default_guidance_sigma_min, "guidance_cap": a.guidance_cap,
           "sampler": SamplerSettings().to_dict(), "model": enh.model_info,
           "classifier": enh.classifier_info, "judge": {k: judge.get(k) for k in ("what", "trained_on", "features", "accuracy")},
           "faces": len(plan), "summary": summary, "per_face": results,
           "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_text(a.out, to_json(doc))
    for k, v in summary.items():
        print(f"{k:22s} flipped {v['flipped']} of {v['unguided_read_as_label']} "
              f"(faces asked {v['faces']})")
    if a.grid:
        from PIL import Image

        rows_img = [np.concatenate(g, axis=1) for g in grid]
        Image.fromarray(np.concatenate(rows_img, axis=0)).save(a.grid)
        print(f"grid (rows: faces in the order above; left unguided, right guided) -> {a.grid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
