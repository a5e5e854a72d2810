"""core.report: the export behind the GUI's Export (Qt-free)."""

import base64
import json
import os
import re

import numpy as np
import pytest

from sdesr_gui.core import report as R
from sdesr_gui.core.provenance import sha256_file


def _job(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "evidence" / "cam1.png"
    src.parent.mkdir()
    src.write_bytes(b"pretend this is a still")
    imgs = [R.ExportImage("input_crop", rng.integers(0, 255, (128, 128, 3), dtype=np.uint8), "crop", False, "crop"),
            R.ExportImage("input_lr", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), "lr", False, "LR"),
            R.ExportImage("s1_seed5", rng.integers(0, 255, (128, 128, 3), dtype=np.uint8), "sample", True,
                          "Sample 1 <script>", {"seed": 5, "consistency": 1.5})]
    cands = {"gallery": "/g", "embedder": "fake", "top_k": 2,
             "per_sample": {"Sample 1": [{"identity": "a&b", "file": "a/1.png", "score": 0.9}]},
             "consensus": [{"identity": "a&b", "file": "a/1.png", "mean_score": 0.9, "rank1_frequency": 1.0,
                            "in_top_k": "1/1", "ranks": [1]}],
             "stability": {"samples": 1}, "bicubic": []}
    job = R.ExportJob(images=imgs, input={"path": str(src), "sha256": sha256_file(src), "kind": "still"},
                      frame={"index": 0}, face={"kind": "manual", "box": [1, 2, 3, 4]},
                      model={"name": "m", "sha256": "0" * 64}, sampler={"sampler": "fast", "steps": 3, "seed": 5},
                      candidates=cands, notes=["a note"])
    return job, src


def test_export_writes_everything_with_matching_hashes(tmp_path):
    job, src = _job(tmp_path)
    res = R.export_run(job, tmp_path / "out", folder_name="case 12/run", forbidden=[src.parent])
    assert res.folder.parent == tmp_path / "out" and res.folder.name == "case_12_run"
    names = sorted(os.listdir(res.folder))
    assert names == sorted(["GENERATED_s1_seed5.png", "input_crop.png", "input_lr.png", "run.json",
                            "report.html", "SHA256SUMS"])
    assert R.verify_export(res.folder) == []
    html = (res.folder / "report.html").read_text()
    for name, digest in re.findall(r"data-file='([^']+)' data-sha256='([0-9a-f]{64})'", html):
        assert sha256_file(res.folder / name) == digest
    png = (res.folder / "GENERATED_s1_seed5.png").read_bytes()
    assert base64.b64encode(png).decode() in html
    assert b"investigative lead" in png  # the PNG text chunk marks it as generated
    assert "<script>" not in html and "a&amp;b" in html and "not identifications" in html
    rec = json.loads((res.folder / "run.json").read_text())
    assert rec["inputs"][0]["sha256"] == sha256_file(src)
    assert rec["extra"]["gallery_candidates"]["per_sample"]["Sample 1"][0]["identity"] == "a&b"
    assert [o["generated"] for o in rec["outputs"]] == [False, False, True]
    # a second export never overwrites the first
    res2 = R.export_run(job, tmp_path / "out", folder_name="case 12/run")
    assert res2.folder.name == "case_12_run-2"
    # tampering is detected
    (res.folder / "input_lr.png").write_bytes(b"changed")
    assert R.verify_export(res.folder) == ["input_lr.png"]


def test_export_refuses_evidence_folders(tmp_path):
    job, src = _job(tmp_path)
    with pytest.raises(R.ExportError, match="evidence"):
        R.export_run(job, src.parent / "sub", forbidden=[src.parent])
    assert sorted(os.listdir(src.parent)) == ["cam1.png"]


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    job, _ = _job(tmp_path)
    calls = {"n": 0}
    real = R.atomic_write_bytes

    def flaky(path, data):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(R, "atomic_write_bytes", flaky)
    out = tmp_path / "out"
    with pytest.raises(R.ExportError, match="nothing was left behind"):
        R.export_run(job, out)
    assert os.listdir(out) == []


def test_report_gives_each_candidate_its_rate_and_the_mean_estimate_its_list(tmp_path):
    from sdesr_gui.core import calibration as cal

    job, src = _job(tmp_path)
    rng = np.random.default_rng(0)
    c = cal.build_calibration("fake", {k: rng.normal(0.95, 0.02, 2000) for k in ("sample", "mean")},
                              {k: rng.normal(0.85, 0.03, 50_000) for k in ("sample", "mean")}, {"data": "synthetic"})
    cands = job.candidates
    cal.annotate(cands["per_sample"]["Sample 1"], c, "sample", 1000)
    cands["mean_estimate"] = {"candidates": [{"identity": "zed", "file": "z/1.png", "score": 0.91}]}
    cal.annotate(cands["mean_estimate"]["candidates"], c, "mean", 1000)
    cands["calibration"] = {"file": "cal.json", "data": "synthetic", "rates": "false-match rate: ..."}
    res = R.export_run(job, tmp_path / "out", folder_name="cal", forbidden=[src.parent])
    html = (res.folder / "report.html").read_text()
    want = cands["per_sample"]["Sample 1"][0]["calibration"]
    assert cal.short_rate(want) in html and "strangers scoring this high" in html
    assert want["text"].replace("'", "&#x27;") in html
    assert "Mean estimate (matched on its own" in html and "zed" in html
    assert "Scores are calibrated (cal.json" in html
    # without a calibration the report says the scores are raw cosines
    del cands["calibration"]
    res = R.export_run(job, tmp_path / "out", folder_name="raw", forbidden=[src.parent])
    assert "not probabilities" in (res.folder / "report.html").read_text()
