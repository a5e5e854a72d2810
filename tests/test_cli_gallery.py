"""`sdesr index`, `match --json FILE` and `bench-gallery --faces`: the JSON contract, the default
cache location, and every refusal to write into evidence (gallery, probe folders)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from cli_util import one_line_error, run

ROOT = Path(__file__).resolve().parents[1]
FACE = ROOT / "resources" / "sample_face.png"  # an aligned 128x128 frame of the astronaut


def snapshot(d: Path) -> dict:
    out = {}
    for p in sorted(d.rglob("*")):
        st = p.stat()
        out[p.relative_to(d).as_posix()] = (p.is_dir(), st.st_mtime_ns,
                                             hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "")
    return out


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path: Path) -> Path:
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))  # never the user's own cache
    return cache


@pytest.fixture()
def gallery(tmp_path: Path) -> Path:
    g = tmp_path / "gallery"
    (g / "astronaut" / "2009").mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(g / "astronaut" / "2009" / "portrait.png")
    # a second identity for the mechanics: the photo mirrored and recoloured
    Image.fromarray(np.ascontiguousarray(data.astronaut()[:, ::-1, ::-1])).save(g / "other.png")
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(g / "wall.png")  # no face
    (g / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")  # corrupt
    return g


@pytest.fixture()
def probes(tmp_path: Path) -> Path:
    d = tmp_path / "probes"
    d.mkdir()
    Image.open(FACE).save(d / "frame.png")  # 128x128: taken as an aligned frame
    Image.fromarray(data.astronaut()[20:260, 100:320]).save(d / "photo.jpg")  # detected, then aligned
    return d


def test_index_uses_the_user_cache_and_match_writes_a_json_file(gallery: Path, probes: Path, tmp_path: Path,
                                                                 private_cache: Path, capsys) -> None:
    before, before_probes = snapshot(gallery), snapshot(probes)
    code, out, err = run(["index", gallery, "--embedder", "dlib"], capsys)
    assert code == 0, err
    assert "added 2" in out and "skipped 2" in out and "Traceback" not in err
    dbs = list((private_cache / "sdesr_gui" / "galleries").glob("*.sqlite"))
    assert len(dbs) == 1
    key = hashlib.sha256((str(gallery.resolve()) + "\0dlib").encode()).hexdigest()
    assert dbs[0].name == f"{key}.sqlite"

    report = tmp_path / "reports" / "match.json"
    code, out, err = run(["match", probes / "frame.png", probes / "photo.jpg", "--gallery", gallery,
                          "--top", "2", "--json", report], capsys)
    assert code == 0, err
    assert out == "" and str(report) in err
    doc = json.loads(report.read_text())
    assert [d["probe"] for d in doc] == [str(probes / "frame.png"), str(probes / "photo.jpg")]
    shipped_calibration = (ROOT / "weights" / "match_calibration.json").is_file()
    for entry in doc:
        assert set(entry) == {"probe", "probe_kind", "candidates"} and len(entry["candidates"]) == 2
        assert entry["probe_kind"] == "hr"  # an aligned photo and a detected one: neither is generated
        for c in entry["candidates"]:
            assert {"identity", "file", "score"} <= set(c) and -1.0 <= c["score"] <= 1.0
            if shipped_calibration:  # every score says how often strangers reach it
                assert c["calibration"]["kind"] == "hr" and c["calibration"]["text"]
        top = entry["candidates"][0]
        assert top["identity"] == "astronaut" and top["score"] > 0.9
        assert Path(top["file"]) == gallery.resolve() / "astronaut" / "2009" / "portrait.png"
        assert entry["candidates"][0]["score"] >= entry["candidates"][1]["score"]
    # `--json` with no file still prints to stdout (the README's `--json > out.json`)
    code, out, err = run(["match", probes / "frame.png", "--gallery", gallery, "--top", "1", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)[0]["candidates"][0]["identity"] == "astronaut"
    assert snapshot(gallery) == before and snapshot(probes) == before_probes


def test_match_refuses_to_write_into_evidence_and_bad_inputs_are_one_line(gallery: Path, probes: Path,
                                                                          tmp_path: Path, capsys) -> None:
    before, before_probes = snapshot(gallery), snapshot(probes)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    cases = [
        (["match", probes / "frame.png", "--gallery", gallery, "--json", gallery / "m.json"], ["inside", "evidence"]),
        (["match", probes / "frame.png", "--gallery", gallery, "--json", probes / "m.json"], ["inside", "evidence"]),
        (["match", probes, "--gallery", gallery, "--json", probes / "sub" / "m.json"], ["inside"]),
        (["match", probes / "frame.png", "--gallery", gallery, "--json", tmp_path], ["is a folder"]),
        (["match", corrupt, "--gallery", gallery], ["corrupt.png"]),
        (["match", tmp_path / "missing.png", "--gallery", gallery], ["missing.png", "does not exist"]),
        (["match", probes / "frame.png", "--gallery", tmp_path / "nowhere"], ["does not exist"]),
        (["index", probes / "frame.png"], ["not a folder"]),
        (["bench-gallery", "--faces", "0"], ["--faces"]),
    ]
    for args, words in cases:
        code, _, err = run(args, capsys)
        one_line_error(code, err, *words)
    assert snapshot(gallery) == before and snapshot(probes) == before_probes


def test_bench_gallery_prints_the_median_query_time(capsys) -> None:
    code, out, err = run(["bench-gallery", "--faces", "300", "--queries", "5", "--samples", "2"], capsys)
    assert code == 0, err
    assert "300 faces" in out and "median" in out and "ms" in out
    code, out, err = run(["bench-gallery", "--faces", "300", "--queries", "5", "--json"], capsys)
    r = json.loads(out)
    assert r["faces"] == 300 and r["query"]["median_ms"] > 0


def test_match_reports_calibrated_rates_for_the_probe_kind(gallery: Path, tmp_path: Path, capsys) -> None:
    from sdesr_gui.core import calibration as cal
    from sdesr_gui.core.provenance import atomic_save_png

    rng = np.random.default_rng(0)
    kinds = ("hr", "bicubic", "sample", "mean")
    c = cal.build_calibration("dlib", {k: rng.normal(0.95, 0.02, 2000) for k in kinds},
                              {k: rng.normal(0.85, 0.03, 100_000) for k in kinds}, {"data": "synthetic"})
    cal_file = tmp_path / "cal.json"
    cal.save_calibrations(cal_file, [c], "test")
    d = tmp_path / "probes"
    d.mkdir()
    face = np.asarray(Image.open(FACE).convert("RGB"))
    atomic_save_png(d / "run_sample0.png", face, generated=True)  # labelled generated: a sample
    atomic_save_png(d / "run_mean.png", face, generated=True)  # the mean estimate
    Image.fromarray(face[::8, ::8]).save(d / "lr.png")  # 16x16: an LR, matched as its bicubic
    code, out, err = run(["match", d / "run_sample0.png", d / "run_mean.png", d / "lr.png", "--gallery", gallery,
                          "--top", "2", "--json", "--calibration", cal_file], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert [e["probe_kind"] for e in doc] == ["sample", "mean", "bicubic"]
    for e in doc:
        top = e["candidates"][0]
        assert top["calibration"]["kind"] == e["probe_kind"]
        assert top["calibration"]["fmr_text"] == c.describe(top["score"], e["probe_kind"])["fmr_text"]
    # the text table says the same, with the column explained; --probe-kind overrides the guess
    code, out, err = run(["match", d / "run_sample0.png", "--gallery", gallery, "--top", "1",
                          "--calibration", cal_file, "--probe-kind", "hr"], capsys)
    assert code == 0, err
    assert "probe kind: hr" in out and "strangers >=" in out and "how often a stranger's photo" in out
    code, out, err = run(["match", d / "run_sample0.png", "--gallery", gallery, "--calibration", "none"], capsys)
    assert code == 0 and "not probabilities" in out


def test_index_with_workers_and_a_faiss_backend(gallery: Path, probes: Path, private_cache: Path, capsys) -> None:
    pytest.importorskip("faiss")
    before = snapshot(gallery)
    code, out, err = run(["index", gallery, "--workers", "2", "--backend", "faiss", "--json", "--quiet"], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["added"] == 2 and r["workers"] == 2 and r["search"]["backend"] == "faiss"
    assert r["search"]["spec"] == "IDMap2,Flat" and r["search"]["count"] == 2
    assert Path(r["search"]["index"]).is_file() and private_cache in Path(r["search"]["index"]).parents
    code, out, err = run(["match", probes / "frame.png", "--gallery", gallery, "--backend", "faiss", "--json",
                          "--quiet"], capsys)
    assert code == 0, err
    assert json.loads(out)[0]["candidates"][0]["identity"] == "astronaut"
    code, out, err = run(["index", gallery, "--workers", "0"], capsys)
    one_line_error(code, err, "--workers")
    code, out, err = run(["match", probes / "frame.png", "--gallery", gallery, "--backend", "milvus"], capsys)
    one_line_error(code, err, "--milvus-uri")
    assert snapshot(gallery) == before


def test_bench_gallery_measures_a_backend_and_its_recall(tmp_path: Path, capsys) -> None:
    pytest.importorskip("faiss")
    code, out, err = run(["bench-gallery", "--faces", "3000", "--queries", "5", "--samples", "2", "--backend",
                          "faiss", "--faiss-index", "IVF16,SQ8", "--workdir", tmp_path / "w"], capsys)
    assert code == 0, err
    assert "IVF16,SQ8" in out and "recall@10 vs exact" in out and "MiB for the gallery" in out
    code, out, err = run(["bench-gallery", "--faces", "3000", "--queries", "5", "--samples", "2", "--backend",
                          "faiss", "--workdir", tmp_path / "w", "--reuse-index", "--json"], capsys)
    r = json.loads(out)
    assert r["database_reused"] and r["backend_info"]["spec"] == "IVF16,SQ8" and 0 < r["recall_at_10"] <= 1
