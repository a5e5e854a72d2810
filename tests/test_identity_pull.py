"""scripts/identity_pull.py: do generated faces drift towards the model's training identities?"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import identity_pull  # noqa: E402

SPLIT = {"t1": "train", "t2": "train", "t3": "train", "v1": "val", "v2": "val", "v3": "val"}
IDS = ["t1", "t2", "t3", "v1", "v2", "v3"]


def test_probe_stats_reads_the_wrong_identities_by_split():
    # probe of v1: its own identity beats the other validation people but loses to t2
    s = np.array([0.10, 0.70, 0.20, 0.60, 0.30, 0.50])
    r = identity_pull.probe_stats(s, IDS, "v1", SPLIT)
    assert r["top_impostor_train"] is True
    assert r["lost_to_train"] is True and r["rank1_val"] is True and r["rank1_all"] is False
    assert r["pull"] == pytest.approx(np.mean([0.10, 0.70, 0.20]) - np.mean([0.30, 0.50]))
    assert r["best_train_score"] == pytest.approx(0.70) and r["best_val_score"] == pytest.approx(0.50)
    # one of three training people above the true one, none of the two other validation people
    assert r["above_train"] == pytest.approx(1 / 3) and r["above_val"] == 0.0
    assert r["excess_above"] == pytest.approx(1 / 3)
    # the same probe with its own identity first everywhere: nothing lost
    s2 = s.copy()
    s2[3] = 0.9
    r2 = identity_pull.probe_stats(s2, IDS, "v1", SPLIT)
    assert r2["rank1_all"] and r2["rank1_val"] and not r2["lost_to_train"]
    # a probe's own photo left out (-inf) never counts as a wrong identity's score
    s3 = s.copy()
    s3[1] = -np.inf
    r3 = identity_pull.probe_stats(s3, IDS, "v1", SPLIT)
    assert r3["top_impostor_train"] is False and r3["best_val_score"] == pytest.approx(0.50)


def test_cluster_se_counts_identities_not_probes():
    v = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    # three probes of each of two people: two clusters, not six independent values
    se_clustered = identity_pull.cluster_se(v, ["a", "a", "a", "b", "b", "b"])
    se_independent = identity_pull.cluster_se(v, ["a", "b", "c", "d", "e", "f"])
    assert se_clustered > se_independent > 0
    assert se_independent == pytest.approx(np.std(v, ddof=1) / math.sqrt(6), rel=0.1)
    assert math.isnan(identity_pull.cluster_se(v, ["a"] * 6))


def test_summary_pairs_each_kind_with_the_hr_photo():
    hr = [identity_pull.probe_stats(np.array([0.1, 0.2, 0.3, 0.9, 0.5, 0.6]), IDS, "v1", SPLIT)] * 2
    sr = [identity_pull.probe_stats(np.array([0.8, 0.2, 0.3, 0.7, 0.5, 0.6]), IDS, "v1", SPLIT)] * 2
    out = identity_pull.summarize({"hr": hr, "bicubic": hr, "sr": sr}, ["v1", "v1"], base_rate=0.6)
    assert out["kinds"]["hr"]["top_impostor_train"]["mean"] == 0.0
    assert out["kinds"]["sr"]["top_impostor_train"]["mean"] == 1.0
    assert out["paired"]["sr - hr"]["lost_to_train"]["mean"] == 1.0
    assert out["paired"]["sr - bicubic"]["pull"]["mean"] == pytest.approx((0.8 - 0.1) / 3)
    assert "| sr |" in identity_pull.render(out)


def test_split_identities_reads_the_manifest(tmp_path):
    with open(tmp_path / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file", "identity", "split"])
        w.writeheader()
        w.writerows([{"file": "a.png", "identity": "7", "split": "train"},
                     {"file": "b.png", "identity": "8", "split": "val"},
                     {"file": "c.png", "identity": "", "split": "val"}])
    assert identity_pull.split_identities(tmp_path) == {"7": "train", "8": "val"}


def test_columns_round_per_probe_values():
    rows = [identity_pull.probe_stats(np.array([0.123456, 0.2, 0.3, 0.9, 0.5, 0.6]), IDS, "v1", SPLIT)]
    col = identity_pull.columns({"hr": rows})
    assert col["hr"]["pull"] == [round(rows[0]["pull"], 4)] and col["hr"]["rank1_all"] == [1.0]
