"""`sdesr detect`, `index`, `match`, `eval-match` and `bench-gallery` end to end, with every
bad-input path: one line on stderr, exit code 2, nothing written, evidence folders untouched."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from cli_util import one_line_error, run

ROOT = Path(__file__).resolve().parents[1]
STILL = ROOT / "resources" / "sample_scene.jpg"
CLIP = ROOT / "resources" / "sample_clip.mp4"
FACE = ROOT / "resources" / "sample_face.png"


def tree(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture()
def evidence(tmp_path: Path) -> Path:
    d = tmp_path / "evidence"
    d.mkdir()
    shutil.copy(STILL, d / "scene.jpg")
    shutil.copy(CLIP, d / "clip.mp4")
    return d


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))  # never the user's own cache


# ------------------------------------------------------------------------------------------ detect
def test_detect_still_writes_crops_lr_and_record(evidence: Path, tmp_path: Path, capsys) -> None:
    before = tree(evidence)
    out = tmp_path / "out"
    code, stdout, err = run(["detect", evidence / "scene.jpg", "--out", out], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["scene_f000000_00.png", "scene_f000000_00_lr.png",
                                                      "scene_faces.json"]
    assert Image.open(out / "scene_f000000_00.png").size == (128, 128)
    assert Image.open(out / "scene_f000000_00_lr.png").size == (16, 16)
    for name in ("scene_f000000_00.png", "scene_f000000_00_lr.png"):  # cut from the input: labelled so
        assert "not generated" in Image.open(out / name).text["Comment"]
    rec = json.loads((out / "scene_faces.json").read_text())
    assert rec["kind"] == "detect" and rec["inputs"][0]["sha256"] == before["scene.jpg"]
    (face,) = rec["extra"]["faces"]
    assert face["frame"] == 0 and face["method"] == "landmarks" and face["prob"] > 0.9
    assert len(face["box"]) == 4 and len(face["landmarks"]) == 5 and 25 < face["face_width"] < 40
    assert {o["kind"] for o in rec["outputs"]} == {"aligned_face", "lr_input"}
    assert tree(evidence) == before


def test_detect_video_every_n_frames(evidence: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code, _, err = run(["detect", evidence / "clip.mp4", "--every", "30", "--out", out, "--quiet"], capsys)
    assert code == 0, err
    rec = json.loads((out / "clip_faces.json").read_text())
    assert [f["frame"] for f in rec["extra"]["faces"]] == [0, 30]
    assert [f["timestamp_s"] for f in rec["extra"]["faces"]] == [0.0, 2.0]
    assert rec["inputs"][0]["frame_count"] == 60 and rec["inputs"][0]["fps"] == 15.0
    assert (out / "clip_f000030_00.png").is_file() and rec["extra"]["frames_without_faces"] == []


def test_detect_manual_box_and_eyes(evidence: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    # frame 0 of the clip: the face is near (441, 170)
    code, _, err = run(["detect", evidence / "clip.mp4", "--frame", "0", "--box", "428,155,454,186",
                        "--eyes", "437.1,165.9,447.7,166.4", "--out", out, "--quiet"], capsys)
    assert code == 0, err
    (face,) = json.loads((out / "clip_faces.json").read_text())["extra"]["faces"]
    assert face["method"] == "eyes" and face["frame"] == 0 and face["box"] == [428.0, 155.0, 454.0, 186.0]


def test_detect_says_a_transparent_still_went_on_grey(tmp_path: Path, capsys) -> None:
    rgba = np.dstack([np.asarray(Image.open(FACE).convert("RGB")), np.full((128, 128), 255, np.uint8)])
    rgba[:20, :, 3] = 0
    d = tmp_path / "evidence"
    d.mkdir()
    Image.fromarray(rgba, "RGBA").save(d / "cut.png")
    out = tmp_path / "out"
    code, _, err = run(["detect", d / "cut.png", "--box", "10,10,118,118", "--out", out, "--quiet"], capsys)
    assert code == 0, err
    assert "sdesr: warning: 'cut.png' has transparent pixels; they were composited on a neutral mid-grey" in err
    rec = json.loads((out / "cut_faces.json").read_text())
    assert len(rec["inputs"][0]["notes"]) == 1 and "mid-grey (128, 128, 128)" in rec["inputs"][0]["notes"][0]


def test_detect_bad_input_is_one_line_and_writes_nothing(evidence: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    (evidence / "junk.mp4").write_bytes(b"\x00" * 4000)
    cases = [
        (["detect", evidence / "missing.png", "--out", out], ["missing.png", "does not exist"]),
        (["detect", evidence / "junk.mp4", "--out", out], ["junk.mp4"]),
        (["detect", evidence / "clip.mp4", "--frame", "60", "--out", out], ["outside"]),
        (["detect", evidence / "clip.mp4", "--every", "0", "--out", out], ["--every"]),
        (["detect", evidence / "scene.jpg", "--out", evidence / "crops"], ["inside the input folder"]),
        (["detect", evidence / "scene.jpg", "--box", "1,2,3", "--out", out], ["--box"]),
        (["detect", evidence / "scene.jpg", "--box", "5,5,1,1", "--out", out], ["--box"]),
        (["detect", evidence / "clip.mp4", "--every", "10", "--box", "1,1,9,9", "--out", out], ["--frame"]),
    ]
    before = tree(evidence)
    for args, words in cases:
        code, _, err = run(args, capsys)
        one_line_error(code, err, *words, alone=False)
    assert not out.exists() and not (evidence / "crops").exists()
    assert tree(evidence) == before


def test_detect_refuses_to_overwrite(evidence: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert run(["detect", evidence / "scene.jpg", "--out", out, "--quiet"], capsys)[0] == 0
    code, _, err = run(["detect", evidence / "scene.jpg", "--out", out], capsys)
    one_line_error(code, err, "already exists", alone=False)
    assert run(["detect", evidence / "scene.jpg", "--out", out, "--overwrite", "--quiet"], capsys)[0] == 0


# ------------------------------------------------------------------------------------------ gallery
@pytest.fixture()
def gallery(tmp_path: Path) -> Path:
    g = tmp_path / "gallery"
    (g / "astronaut").mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(g / "astronaut" / "portrait.png")
    # a second 'identity' for the mechanics: the same photo mirrored and recoloured
    Image.fromarray(np.ascontiguousarray(data.astronaut()[:, ::-1, ::-1])).save(g / "mirror.png")
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(g / "wall.png")
    (g / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return g


def test_index_and_match(gallery: Path, tmp_path: Path, capsys) -> None:
    before = tree(gallery)
    cache = tmp_path / "cache"
    code, out, err = run(["index", gallery, "--cache-dir", cache], capsys)
    assert code == 0, err
    assert "added 2" in out and "skipped 2" in out
    assert "wall.png" in err and "broken.jpg" in err  # skipped files are listed
    code, out, _ = run(["index", gallery, "--cache-dir", cache, "--json"], capsys)
    rep = json.loads(out)
    assert (rep["added"], rep["unchanged"]) == (0, 2) and len(rep["skipped"]) == 2

    code, out, err = run(["match", FACE, "--gallery", gallery, "--top", "2", "--json", "--cache-dir", cache], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert isinstance(res, list) and res[0]["probe"] == str(FACE)
    cands = res[0]["candidates"]
    assert [c["identity"] for c in cands][0] == "astronaut" and len(cands) == 2
    assert {"identity", "file", "score"} <= set(cands[0]) and cands[0]["score"] > 0.9
    assert Path(cands[0]["file"]) == gallery.resolve() / "astronaut" / "portrait.png"

    # two samples of one probe: consensus with rank-1 stability
    probe2 = tmp_path / "probes" / "flip.png"
    probe2.parent.mkdir()
    Image.open(FACE).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(probe2)
    code, out, err = run(["match", FACE, probe2, "--gallery", gallery, "--consensus", "--json", "--cache-dir", cache],
                         capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["probes"]) == 2 and doc["consensus"]["samples"] == 2
    assert doc["consensus"]["candidates"][0]["identity"] == "astronaut"
    assert 0 <= doc["consensus"]["candidates"][0]["rank1_frequency"] <= 1
    code, out, err = run(["match", FACE, "--gallery", gallery, "--top", "1", "--bicubic", "--cache-dir", cache],
                         capsys)
    assert code == 0 and "astronaut" in out and "leads, not identifications" in out and "bicubic baseline" in out
    code, out, err = run(["match", FACE, "--gallery", gallery, "--top", "2", "--bicubic", "--json",
                          "--cache-dir", cache], capsys)
    (entry,) = json.loads(out)
    assert len(entry["bicubic_candidates"]) == 2
    assert entry["bicubic_candidates"][0]["score"] < entry["candidates"][0]["score"]
    assert tree(gallery) == before and not list(gallery.rglob("*.sqlite3"))


def test_match_and_index_errors(gallery: Path, tmp_path: Path, capsys) -> None:
    cache = tmp_path / "cache"
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    cases = [
        (["match", blank, "--gallery", gallery, "--cache-dir", cache], ["no face", "blank.png"]),
        (["match", FACE, "--gallery", tmp_path / "nowhere", "--cache-dir", cache], ["does not exist"]),
        (["match", FACE, "--gallery", gallery, "--top", "0", "--cache-dir", cache], ["--top"]),
        (["index", gallery, "--cache-dir", gallery / "idx"], ["inside the gallery"]),
        (["index", tmp_path / "nowhere"], ["does not exist"]),
        (["match", FACE, "--gallery", gallery, "--embedder", "facenet", "--embedder-weights",
          tmp_path / "none.pt", "--cache-dir", cache], ["none.pt"]),
    ]
    for args, words in cases:
        code, _, err = run(args, capsys)
        one_line_error(code, err, *words, alone=False)
    assert not (gallery / "idx").exists()


def test_eval_match_hr_bicubic_sr(gallery: Path, tmp_path: Path, tiny_weights, capsys) -> None:
    probes = tmp_path / "probes"
    (probes / "astronaut").mkdir(parents=True)
    a = data.astronaut()
    Image.fromarray(a[20:460, 40:480]).save(probes / "astronaut" / "crop.png")
    shutil.copy(gallery / "astronaut" / "portrait.png", probes / "astronaut" / "same.png")  # in the gallery
    Image.fromarray(a[:480, 16:496]).save(gallery / "astronaut" / "portrait2.png")
    report = tmp_path / "report" / "eval.json"  # its folder is made
    from sdesr_gui.core import calibration as cal

    rng = np.random.default_rng(0)
    kinds = tuple(cal.PROBE_KINDS)
    c = cal.build_calibration("dlib", {k: rng.normal(0.95, 0.02, 2000) for k in kinds},
                              {k: rng.normal(0.85, 0.03, 100_000) for k in kinds}, {"data": "synthetic"})
    cal.save_calibrations(tmp_path / "cal.json", [c], "test")
    code, out, err = run(["eval-match", "--gallery", gallery, "--probes", probes, "--weights", tiny_weights["score"],
                          "--steps", "2", "--json", report, "--cache-dir", tmp_path / "cache", "--quiet",
                          "--calibration", tmp_path / "cal.json"], capsys)
    assert code == 0, err
    assert "Rank-1 ↑" in out and "bicubic" in out and "sr" in out and "mean estimate" in out
    assert "calibrated false-match rates" in out and "Rank-1 ↑: Closed-set identification" in out
    rep = json.loads(report.read_text())
    assert set(rep["results"]) == {"hr", "bicubic", "sr", "mean"}
    assert {"rank1", "auc", "fmr"} <= set(rep["metric_legend"])
    for k, r in rep["results"].items():  # predicted vs observed FMR for every probe kind
        rows = r["calibration_check"]
        assert [row["target_fmr"] for row in rows] == [0.1, 0.01, 0.001, 0.0001]
        assert all(row["comparisons"] >= 1 and 0 <= row["observed_fmr"] <= 1 for row in rows)
    hr = rep["results"]["hr"]
    assert hr["counted"] == 2 and hr["rank1"] == 1.0
    # a probe never matches its own photo: same.png's best astronaut face is portrait2, not itself
    assert rep["probes"][1].endswith("same.png") and hr["ranks"] == [1, 1]
    assert hr["genuine_scores"][1] < 0.999
    for r in rep["results"].values():
        assert 0 <= r["rank1"] <= r["rank5"] <= r["rank10"] <= 1 and 0 <= r["auc"] <= 1
    assert rep["results"]["hr"]["cs_to_hr"] == pytest.approx(1.0, abs=1e-5)
    assert rep["sampler"]["steps"] == 2 and rep["model"]["sha256"]

    # --samples 3: "sr" is each probe's first sample (the same seed as above), "consensus" all three
    report3 = tmp_path / "report" / "eval3.json"
    code, out, err = run(["eval-match", "--gallery", gallery, "--probes", probes, "--weights", tiny_weights["score"],
                          "--steps", "2", "--samples", "3", "--json", report3, "--cache-dir", tmp_path / "cache",
                          "--quiet", "--calibration", "none"], capsys)
    assert code == 0, err
    assert "consensus: 3 samples per probe" in out
    rep3 = json.loads(report3.read_text())
    assert set(rep3["results"]) == {"hr", "bicubic", "sr", "mean", "consensus"}
    con = rep3["results"]["consensus"]
    assert con["samples_per_probe"] == 3 and con["counted"] == 2 and 0 <= con["rank1"] <= 1
    assert rep3["results"]["sr"]["genuine_scores"][0] == pytest.approx(rep["results"]["sr"]["genuine_scores"][0],
                                                                     abs=1e-4)
    assert -1 <= con["cs_to_hr"] <= 1

    code, out, err = run(["eval-match", "--gallery", gallery, "--probes", probes, "--no-sr", "--json",
                          gallery / "eval.json", "--cache-dir", tmp_path / "cache"], capsys)
    one_line_error(code, err, "inside the input folder", alone=False)
    assert not (gallery / "eval.json").exists()


def test_bench_gallery(capsys) -> None:
    code, out, err = run(["bench-gallery", "--size", "300", "--queries", "5", "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["faces"] == 300 and r["query"]["median_ms"] > 0 and "cpu" in r["device"]


def test_eval_match_gives_the_16x_model_its_8x8_lr(gallery: Path, tmp_path: Path, tiny_weights, capsys) -> None:
    """eval-match degrades each probe to the chosen model's LR size (8x8 for the 16x model); its
    bicubic row is the blow-up of that same LR."""
    probes = tmp_path / "probes"
    (probes / "astronaut").mkdir(parents=True)
    Image.fromarray(data.astronaut()[20:460, 40:480]).save(probes / "astronaut" / "crop.png")
    reports = {}
    for key in ("score16", "score"):
        reports[key] = tmp_path / f"{key}.json"
        code, out, err = run(["eval-match", "--gallery", gallery, "--probes", probes, "--weights", tiny_weights[key],
                              "--steps", "2", "--json", reports[key], "--cache-dir", tmp_path / "cache", "--quiet",
                              "--calibration", "none"], capsys)
        assert code == 0, err
    r16, r8 = (json.loads(reports[k].read_text()) for k in ("score16", "score"))
    assert r16["model"]["lr_size"] == 8 and r8["model"]["lr_size"] == 16
    # an 8x8 LR keeps less of the face than a 16x16 one: its bicubic blow-up is further from the HR
    assert r16["results"]["bicubic"]["cs_to_hr"] < r8["results"]["bicubic"]["cs_to_hr"]
    assert r16["results"]["hr"]["cs_to_hr"] == pytest.approx(1.0, abs=1e-5)
