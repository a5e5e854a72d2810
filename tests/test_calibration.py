"""core.calibration: false-match rates and likelihood ratios from genuine / impostor score
histograms, their check on held-out scores, the file round trip, and the rates reaching every
candidate list of a match (GUI result, CLI JSON) for the right probe kind."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sdesr_gui.core import calibration as cal
from sdesr_gui.core.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[1]


def normal_tail(x: float, mu: float, sd: float) -> float:
    return 0.5 * math.erfc((x - mu) / (sd * math.sqrt(2)))


def synthetic(seed: int = 0, n_imp: int = 200_000, n_gen: int = 5_000, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    return rng.normal(0.95 + shift, 0.02, n_gen), rng.normal(0.80 + shift, 0.03, n_imp)


def test_histogram_counts_match_numpy() -> None:
    rng = np.random.default_rng(1)
    s = rng.uniform(-0.2, 0.99, 20_000)
    h = cal.ScoreHistogram.of(s)
    assert h.total == s.size
    for t in (-0.5, -0.1234, 0.0, 0.4567, 0.9, 0.98999, 1.0):
        assert abs(h.at_least(t) - np.sum(s >= t)) <= max(1.0, 0.002 * s.size * cal.BIN / 0.001)
    assert h.within(0.5, 0.02) == pytest.approx(np.sum(np.abs(s - 0.5) <= 0.02), abs=40)
    t = h.score_at_tail(200)
    assert np.sum(s >= t) <= 200 < np.sum(s >= t - 2 * cal.BIN)
    assert cal.ScoreHistogram.from_dict(h.to_dict()).at_least(0.3) == h.at_least(0.3)


def test_fmr_follows_the_impostor_tail_and_says_it_in_words() -> None:
    gen, imp = synthetic()
    kc = cal.build_calibration("x", {"hr": gen}, {"hr": imp}, {}).kind("hr")
    for t in (0.80, 0.86, 0.89):
        f = kc.fmr(t)
        assert f["fmr"] == pytest.approx(normal_tail(t, 0.80, 0.03), rel=0.1)
    f = kc.fmr(0.86)  # about 1 in 44
    assert "1 time in 4" in f["text"] and "rough" not in f["text"]
    f = kc.fmr(0.99)  # beyond every impostor: only a bound, never a made-up rate
    assert f["fmr"] is None and f["fmr_upper"] == pytest.approx(3 / imp.size)
    assert "no stranger scored this high" in f["text"]
    assert 0 < kc.fmr(0.925)["events"] < 10 and "rough" in kc.fmr(0.925)["text"]
    c = cal.build_calibration("x", {"hr": gen}, {"hr": imp}, {})
    assert cal.short_rate(c.describe(0.925, "hr")).startswith("~1 in ")
    assert cal.short_rate(c.describe(0.86, "hr")).startswith("1 in ")
    assert cal.short_rate(c.describe(0.99, "hr")).startswith("< 1 in ")
    assert kc.fmr(0.5)["fmr"] > 0.99 and "most strangers" in kc.fmr(0.5)["text"]
    assert cal.format_rate(1 / 347) == "1 in 350" and cal.format_rate(1 / 123_456) == "1 in 120,000"


def test_likelihood_ratio_where_supported_a_bound_beyond_the_strangers() -> None:
    gen, imp = synthetic()
    kc = cal.build_calibration("x", {"hr": gen}, {"hr": imp}, {}).kind("hr")

    def pdf(x, mu, sd):
        return math.exp(-0.5 * ((x - mu) / sd) ** 2) / sd

    lr = kc.likelihood_ratio(0.90)
    assert lr["likelihood_ratio"] == pytest.approx(pdf(0.90, 0.95, 0.02) / pdf(0.90, 0.80, 0.03), rel=0.5)
    low = kc.likelihood_ratio(0.88)
    assert low["likelihood_ratio"] < 0.5 and "more likely for a stranger" in low["text"]
    high = kc.likelihood_ratio(0.97)  # no stranger near: a lower bound only
    assert high["likelihood_ratio"] is None and high["likelihood_ratio_at_least"] > 100 and "at least" in high["text"]
    none = kc.likelihood_ratio(0.2)  # no same-person pair near: nothing claimed
    assert none["likelihood_ratio"] is None and none["likelihood_ratio_at_least"] is None and "too few" in none["text"]


def test_verify_agrees_on_held_out_scores_and_catches_a_shift() -> None:
    gen, imp = synthetic(0)
    kc = cal.build_calibration("x", {"hr": gen}, {"hr": imp}, {}).kind("hr")
    rows = cal.verify(kc, synthetic(1)[1], rates=(1e-1, 1e-2, 1e-3))
    assert [r["target_fmr"] for r in rows] == [1e-1, 1e-2, 1e-3]
    assert all(r["within_2x"] for r in rows), rows
    shifted = cal.verify(kc, synthetic(2, shift=0.03)[1], rates=(1e-2, 1e-3))
    assert not any(r["within_2x"] for r in shifted)


def test_file_round_trip_describe_and_a_damaged_file(tmp_path: Path) -> None:
    gen, imp = synthetic()
    c = cal.build_calibration("dlib", {"sample": gen}, {"sample": imp},
                              {"model": {"sha256": "abc"}, "data": "synthetic"})
    f = tmp_path / "cal.json"
    cal.save_calibrations(f, [c], "test")
    back = cal.load_calibration("dlib", f)
    assert back is not None and back.kind("sample").impostor.total == imp.size
    assert cal.load_calibration("facenet", f) is None
    d = back.describe(0.86, "sample", gallery_faces=35_000)
    assert d["calibrated"] and d["fmr"] == pytest.approx(normal_tail(0.86, 0.8, 0.03), rel=0.1)
    assert d["expected_strangers"] == pytest.approx(d["fmr"] * 35_000)
    assert "35,000 photos" in d["text"] and "strangers' photos score this high" in d["text"]
    assert back.describe(0.86, "hr")["calibrated"] is False
    assert cal.short_rate(d).startswith("1 in ") and cal.short_rate(None) == "–"
    # a generated probe from another model is flagged; an HR probe never is
    cands = [{"identity": "a", "score": 0.9}]
    cal.annotate(cands, back, "sample", 10, model_sha256="other")
    assert "another score model" in cands[0]["calibration"]["note"]
    assert back.model_note("other", "hr") is None
    f.write_text("{not json")
    with pytest.raises(CheckpointError, match="damaged"):
        cal.load_calibration("dlib", f)


def test_pair_scores_split_same_and_other_identities_and_leave_out_own_photo() -> None:
    p = np.array([[1.0, 0.0], [0.0, 1.0]])
    g = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    gen, imp = cal.pair_scores(p, ["a", "b"], g, ["a", "a", "b"], [{"f0"}, set()], ["f0", "f1", "f2"])
    assert sorted(gen.tolist()) == pytest.approx([0.6, 1.0])  # probe a vs its own photo f0 left out
    assert sorted(imp.tolist()) == pytest.approx([0.0, 0.0, 0.8])


def test_match_result_candidates_carry_rates_of_their_probe_kind(tmp_path: Path) -> None:
    from test_matching import GalleryIndex, TagEmbedder, GALLERY, probe

    from sdesr_gui.core.matching import run_match

    (tmp_path / "g").mkdir()
    idx = GalleryIndex(tmp_path / "g", TagEmbedder(), cache_dir=tmp_path / "c")
    idx._write_synthetic([(f"{k}.png", k, v.astype(np.float32)) for k, v in GALLERY.items()])
    rng = np.random.default_rng(0)
    kinds = ("sample", "bicubic", "mean")
    # different strangers' distributions per kind: the same cosine means different things
    c = cal.build_calibration("tag-test", {k: rng.normal(0.95, 0.02, 2000) for k in kinds},
                              {k: rng.normal(m, 0.1, 50_000) for k, m in zip(kinds, (0.3, 0.5, 0.4))},
                              {"model": {"sha256": "m1"}})
    res = run_match(idx, TagEmbedder(), [("s1", "Sample 1", probe(1)), ("s2", "Sample 2", probe(2))], probe(5),
                    None, 3, mean=probe(4), calibration=c, model_sha256="m1")
    top = res.per_sample["s1"][0]
    assert top["calibration"]["kind"] == "sample"
    assert top["calibration"]["fmr"] == pytest.approx(c.describe(top["score"], "sample")["fmr"])
    assert res.bicubic[0]["calibration"]["kind"] == "bicubic"
    assert res.mean[0]["calibration"]["kind"] == "mean"
    row = res.consensus[0]
    assert row["calibration"]["kind"] == "sample" and "upper bound" in row["calibration"]["note"]
    assert all("calibration" in r for r in res.consensus)
    assert res.calibration["embedder"] == "tag-test"
    doc = json.loads(json.dumps(res.to_export()))
    assert doc["calibration"]["embedder"] == "tag-test"
    assert doc["per_sample"]["Sample 1"][0]["calibration"]["fmr_text"]
    # no calibration: the raw scores, and the record says so
    bare = run_match(idx, TagEmbedder(), [("s1", "Sample 1", probe(1))], probe(5), None, 3, calibration=None)
    assert "calibration" not in bare.per_sample["s1"][0] and bare.to_export()["calibration"] is None


def test_shipped_calibration_holds_numbers_for_every_probe_kind() -> None:
    path = ROOT / "weights" / cal.CALIBRATION_NAME
    if not path.is_file():
        pytest.skip("no calibration file shipped")
    doc = json.loads(path.read_text())
    c = cal.load_calibration("dlib", path)
    assert c is not None and set(c.kinds) == set(cal.PROBE_KINDS)
    for kind, kc in c.kinds.items():
        assert kc.impostor.total > 100_000 and kc.genuine.total > 500, kind
        # strangers score lower than the same person, for every kind of probe
        assert kc.impostor.summary()["mean"] < kc.genuine.summary()["mean"]
    made = doc["embedders"]["dlib"]["made"]
    assert made["split"] == "train" and made["model"]["sha256"]
    text = path.read_text()
    assert ".png" not in text and ".jpg" not in text  # numbers only: no photo names


def test_a_failed_held_out_check_is_said_with_the_rate() -> None:
    gen, imp = synthetic(0)
    c = cal.build_calibration("x", {"sample": gen}, {"sample": imp}, {})
    kc = c.kind("sample")
    kc.check = cal.verify(kc, synthetic(2, shift=0.02)[1], rates=(1e-2, 1e-3))  # strangers score higher
    top = max(r["threshold"] for r in kc.check)
    assert all(not r["within_2x"] and r["ratio"] > 2 for r in kc.check)
    d = c.describe(top + 0.005, "sample")
    assert "times as often as predicted" in d["check_note"] and d["check_note"] in d["text"]
    kc.check = cal.verify(kc, synthetic(1)[1], rates=(1e-2, 1e-3))  # a check that agrees: nothing added
    assert "check_note" not in c.describe(top + 0.005, "sample")
    back = cal.KindCalibration.from_dict(json.loads(json.dumps(kc.to_dict())))
    assert back.check == kc.check
