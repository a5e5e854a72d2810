"""`sdesr enhance` and `sdesr bench` end to end with a tiny model, and every bad-input path."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_util import one_line_error, run
from sdesr_gui.core.presets import DEFAULT_GUIDANCE_CAP
from sdesr_gui.core.provenance import sha256_file


@pytest.fixture()
def inputs(tmp_path, astronaut_face):
    d = tmp_path / "evidence"
    d.mkdir()
    Image.fromarray(astronaut_face).save(d / "face.png")
    Image.fromarray(astronaut_face).resize((16, 16), Image.BICUBIC).save(d / "lr.png")
    Image.fromarray(astronaut_face).resize((40, 30)).save(d / "odd.jpg")
    return d


def tree(d: Path) -> dict:
    return {p.name: sha256_file(p) for p in sorted(d.iterdir())}


def test_enhance_writes_samples_bicubic_and_record(tmp_path, inputs, tiny_weights, capsys):
    before = tree(inputs)
    out = tmp_path / "out"
    code, _, err = run(["enhance", inputs / "face.png", inputs / "lr.png", "--out", out, "--weights",
                        tiny_weights["score"], "--samples", "2", "--steps", "3", "--seed", "5"], capsys)
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["face.json", "face_bicubic.png", "face_mean.png", "face_sample1.png", "face_sample2.png",
                     "face_std.npy", "face_uncertainty.png",
                     "lr.json", "lr_bicubic.png", "lr_mean.png", "lr_sample1.png", "lr_sample2.png",
                     "lr_std.npy", "lr_uncertainty.png"]
    assert tree(inputs) == before  # inputs untouched, nothing written next to them
    rec = json.loads((out / "face.json").read_text())
    assert rec["inputs"][0]["sha256"] == sha256_file(inputs / "face.png")
    assert rec["inputs"][0]["mode"] == "hr" and json.loads((out / "lr.json").read_text())["inputs"][0]["mode"] == "lr"
    assert rec["model"]["sha256"] == sha256_file(tiny_weights["score"])
    assert rec["sampler"]["seeds"] == [5, 6] and rec["sampler"]["steps"] == 3
    assert rec["device"]["device"] == "cpu" and "torch" in rec["versions"]
    assert rec["timings"]["nfe"] == 3 and rec["timings"]["sampling_seconds"] > 0
    for o in rec["outputs"]:
        assert sha256_file(o["path"]) == o["sha256"]
    samples = [o for o in rec["outputs"] if o["kind"] == "sample"]
    assert [o["seed"] for o in samples] == [5, 6] and all("psnr" in o and "consistency" in o for o in samples)
    assert Image.open(out / "face_sample1.png").size == (128, 128)
    assert "investigative lead" in rec["notice"]


def test_enhance_scale_16_takes_8x8_faces_and_degrades_frames_to_8x8(tmp_path, inputs, tiny_weights, capsys,
                                                                      astronaut_face, monkeypatch):
    import shutil

    Image.fromarray(astronaut_face).resize((8, 8), Image.BICUBIC).save(inputs / "tiny.png")
    before = tree(inputs)
    out = tmp_path / "out"
    code, _, err = run(["enhance", inputs / "face.png", inputs / "tiny.png", "--out", out, "--weights",
                        tiny_weights["score16"], "--scale", "16", "--steps", "2"], capsys)
    assert code == 0, err
    assert tree(inputs) == before
    face, tiny = (json.loads((out / f"{n}.json").read_text()) for n in ("face", "tiny"))
    assert face["inputs"][0]["mode"] == "hr" and tiny["inputs"][0]["mode"] == "lr"
    assert face["scale"] == {"factor": 16, "lr_size": 8, "why": "the 16x model given by --weights"}
    assert face["model"]["scale_factor"] == 16
    # the bicubic baseline of the 128x128 frame comes from its 8x8 LR: blurrier than from 16x16
    bic = next(o for o in face["outputs"] if o["kind"] == "bicubic")
    out8 = tmp_path / "out8"
    assert run(["enhance", inputs / "face.png", "--out", out8, "--weights", tiny_weights["score"], "--steps", "2"],
               capsys)[0] == 0
    bic8 = next(o for o in json.loads((out8 / "face.json").read_text())["outputs"] if o["kind"] == "bicubic")
    assert bic["psnr"] < bic8["psnr"] - 1.0
    # a model of the other magnification than asked for is refused in one sentence
    code, _, err = run(["enhance", inputs / "tiny.png", "--out", tmp_path / "o2", "--weights",
                        tiny_weights["score"], "--scale", "16"], capsys)
    assert code == 2 and "is a 8x model" in err and "Traceback" not in err
    # without --scale or --weights an 8x8 input picks the installed 16x model and says so
    wdir = tmp_path / "installed"
    wdir.mkdir()
    shutil.copy(tiny_weights["score"], wdir / "sdesr_ve_8x.safetensors")
    shutil.copy(tiny_weights["score16"], wdir / "sdesr_ve_16x.safetensors")
    monkeypatch.setenv("SDESR_WEIGHTS_DIR", str(wdir))
    code, _, err = run(["enhance", inputs / "tiny.png", inputs / "lr.png", "--out", tmp_path / "auto",
                        "--steps", "2"], capsys)
    assert code == 0, err
    assert "tiny.png: using the 16x model" in err and "lr.png: using" not in err
    assert json.loads((tmp_path / "auto" / "tiny.json").read_text())["scale"]["factor"] == 16
    assert json.loads((tmp_path / "auto" / "lr.json").read_text())["scale"]["factor"] == 8
    (wdir / "sdesr_ve_16x.safetensors").unlink()
    code, _, err = run(["enhance", inputs / "tiny.png", "--out", tmp_path / "auto2", "--steps", "2"], capsys)
    assert code == 2 and "no 16x score model is installed" in err
    assert not (tmp_path / "auto2").exists()


def test_enhance_takes_the_footage_model_for_a_degraded_lr_and_says_why(tmp_path, inputs, tiny_weights, capsys,
                                                                        monkeypatch):
    import shutil

    wdir = tmp_path / "installed"
    wdir.mkdir()
    shutil.copy(tiny_weights["score"], wdir / "sdesr_ve_8x.safetensors")
    monkeypatch.setenv("SDESR_WEIGHTS_DIR", str(wdir))
    footage = wdir / "sdesr_ve_8x_footage.safetensors"
    for source, degraded in ((tiny_weights["footage_always"], True), (tiny_weights["footage_never"], False)):
        shutil.copy(source, footage)
        out = tmp_path / f"out_{degraded}"
        code, _, err = run(["enhance", inputs / "lr.png", "--out", out, "--steps", "2"], capsys)
        assert code == 0, err
        rec = json.loads((out / "lr.json").read_text())
        choice = rec["model_choice"]
        assert choice["degraded"] is degraded and "LR degradation estimate" in choice["text"]
        assert choice["residual"] >= 0 and choice["threshold"] == (0.0 if degraded else 1e9)
        want = footage if degraded else wdir / "sdesr_ve_8x.safetensors"
        assert rec["model"]["sha256"] == sha256_file(want)
        assert ("the footage model" if degraded else "the clean-trained model") in err
    # --footage off never asks; --footage on always uses it
    code, _, err = run(["enhance", inputs / "lr.png", "--out", tmp_path / "off", "--steps", "2", "--footage", "off"],
                       capsys)
    assert code == 0 and "model_choice" not in json.loads((tmp_path / "off" / "lr.json").read_text())
    code, _, err = run(["enhance", inputs / "lr.png", "--out", tmp_path / "on", "--steps", "2", "--footage", "on"],
                       capsys)
    assert json.loads((tmp_path / "on" / "lr.json").read_text())["model"]["sha256"] == sha256_file(footage)
    footage.unlink()
    code, _, err = run(["enhance", inputs / "lr.png", "--out", tmp_path / "on2", "--footage", "on"], capsys)
    assert code == 2 and "footage model" in err and not (tmp_path / "on2").exists()


def test_enhance_pngs_say_in_the_file_whether_they_are_generated(tmp_path, inputs, tiny_weights, capsys):
    from sdesr_gui.core.provenance import DERIVED_NOTICE, GENERATED_NOTICE

    out = tmp_path / "out"
    code, _, err = run(["enhance", inputs / "lr.png", "--out", out, "--weights", tiny_weights["score"],
                        "--steps", "1", "--quiet"], capsys)
    assert code == 0, err
    sample, bicubic = Image.open(out / "lr_sample1.png"), Image.open(out / "lr_bicubic.png")
    assert sample.text["Comment"] == GENERATED_NOTICE and "investigative lead" in sample.text["Comment"]
    assert bicubic.text["Comment"] == DERIVED_NOTICE  # an interpolation of the input, not generated
    assert sample.text["Software"] == bicubic.text["Software"] == "SDE-SR Studio"
    assert Image.open(out / "lr_mean.png").text["Comment"] == GENERATED_NOTICE


def test_enhance_writes_the_mean_estimate_labelled_as_an_estimate(tmp_path, inputs, tiny_weights, capsys):
    """<stem>_mean.png is the denoiser at sigma_max given the LR, averaged with its estimate of
    the mirrored LR (no seed; --no-mean-mirror: one evaluation), the same for every seed, and
    the record says it is an estimate, not a sample."""
    import torch

    from sdesr_gui.core import faces
    from sdesr_gui.core.models.checkpoint import load_checkpoint
    from sdesr_gui.core.sampling import mean_estimate
    from sdesr_gui.core.video import load_still

    for seed in ("1", "2"):
        code, _, err = run(["enhance", inputs / "face.png", "--out", tmp_path / seed, "--weights",
                            tiny_weights["score"], "--steps", "2", "--seed", seed, "--quiet"], capsys)
        assert code == 0, err
    a, b = (load_still(tmp_path / s / "face_mean.png") for s in ("1", "2"))
    assert np.array_equal(a, b)  # no seed: the estimate does not depend on the samples' noise
    rec = json.loads((tmp_path / "1" / "face.json").read_text())
    (mean,) = [o for o in rec["outputs"] if o["kind"] == "mean"]
    assert mean["generated"] and "not a sample" in mean["note"] and "seed" not in mean
    assert {"psnr", "ssim", "consistency"} <= set(mean)
    assert rec["sampler"]["mean_estimate"]["sigma"] == 348.0
    model, _ = load_checkpoint(tiny_weights["score"])
    lr = faces.degrade(faces.to_tensor(load_still(inputs / "face.png")))
    with torch.no_grad():
        want = mean_estimate(model.float().eval(), faces.upsample(lr), 348.0, mirror=True)
        one = mean_estimate(model.float().eval(), faces.upsample(lr), 348.0)
    assert np.abs(faces.to_uint8(want)[0].astype(int) - a.astype(int)).max() <= 1
    assert rec["sampler"]["mean_estimate"]["evaluations"] == 2 and rec["sampler"]["mirror"] is False
    code, _, err = run(["enhance", inputs / "face.png", "--out", tmp_path / "one", "--weights",
                        tiny_weights["score"], "--steps", "2", "--no-mean-mirror", "--mirror", "--quiet"], capsys)
    assert code == 0, err
    c = load_still(tmp_path / "one" / "face_mean.png")
    assert np.abs(faces.to_uint8(one)[0].astype(int) - c.astype(int)).max() <= 1
    rec = json.loads((tmp_path / "one" / "face.json").read_text())
    assert rec["sampler"]["mean_estimate"]["evaluations"] == 1 and rec["sampler"]["mirror"] is True


def test_enhance_writes_the_uncertainty_map_of_k_samples(tmp_path, inputs, tiny_weights, capsys):
    """--samples K >= 2: <stem>_std.npy (float32 128x128: the std over the K samples, ddof=1,
    mean over RGB), <stem>_uncertainty.png (rendered, labelled generated) and the record's
    uncertainty block; an HR input adds the mean estimate's actual error against it."""
    from sdesr_gui.core import faces, uncertainty
    from sdesr_gui.core.provenance import GENERATED_NOTICE
    from sdesr_gui.core.video import load_still

    out = tmp_path / "out"
    code, _, err = run(["enhance", inputs / "face.png", inputs / "lr.png", "--out", out, "--weights",
                        tiny_weights["score"], "--samples", "3", "--steps", "2", "--quiet"], capsys)
    assert code == 0, err
    std = np.load(out / "face_std.npy")
    assert std.dtype == np.float32 and std.shape == (128, 128)
    pngs = [load_still(out / f"face_sample{k}.png") for k in (1, 2, 3)]
    assert np.abs(std - uncertainty.uncertainty_map(pngs).std).max() < 0.004  # the PNGs' std, up to 8-bit rounding
    assert Image.open(out / "face_uncertainty.png").text["Comment"] == GENERATED_NOTICE
    rec = json.loads((out / "face.json").read_text())
    block = rec["uncertainty"]
    assert block["map"] is True and block["samples"] == 3
    assert block["files"] == {"std": "face_std.npy", "map": "face_uncertainty.png"}
    assert block["threshold"] == uncertainty.DEFAULT_THRESHOLD and "threshold_reason" in block
    assert block["mean_std"] == pytest.approx(float(std.mean()), abs=1e-6)
    assert block["share_above_threshold"] == pytest.approx(
        float((std[uncertainty.region_masks()["face"]] > block["threshold"]).mean()), abs=1e-6)
    assert set(block["regions"]) == {"eyes", "nose", "mouth", "jaw", "hair_background"}
    assert len(block["sample_rms_to_mean"]) == 3
    kinds = {o["kind"]: o for o in rec["outputs"]}
    for kind, name in (("std_map", "face_std.npy"), ("uncertainty_map", "face_uncertainty.png")):
        assert Path(kinds[kind]["path"]).name == name and kinds[kind]["generated"]
        assert kinds[kind]["sha256"] == sha256_file(out / name)
    hr = block["against_hr"]  # face.png is a 128x128 HR frame
    mean = faces.to_tensor(load_still(out / "face_mean.png"))
    ref = faces.to_tensor(load_still(inputs / "face.png"))
    assert hr["rms_error"] == pytest.approx(uncertainty.rms_error(mean, ref), abs=0.003)
    assert hr["ratio"] == pytest.approx(hr["rms_error"] / block["rms_std"], rel=1e-3)
    assert -1 <= hr["spearman_patch"] <= 1 and hr["patch"] == 8
    lr_block = json.loads((out / "lr.json").read_text())["uncertainty"]
    assert lr_block["map"] is True and "against_hr" not in lr_block  # no HR, no error claimed


def test_enhance_started_from_the_mean_estimate(tmp_path, inputs, tiny_weights, capsys):
    """--start-sigma: recorded with the sampler; the map of such samples carries no calibration
    factor and says what it understates; PC refuses it in one sentence (exit 2), writing nothing."""
    from sdesr_gui.core import uncertainty

    out = tmp_path / "out"
    code, _, err = run(["enhance", inputs / "face.png", "--out", out, "--weights", tiny_weights["score"],
                        "--samples", "2", "--steps", "3", "--start-sigma", "0.05", "--quiet"], capsys)
    assert code == 0, err
    rec = json.loads((out / "face.json").read_text())
    assert rec["sampler"]["start_sigma"] == 0.05 and rec["sampler"]["sampler"] == "fast"
    assert rec["uncertainty"]["note"] == uncertainty.NEAR_MEAN_NOTE and rec["uncertainty"]["std_scale"] == 1.0
    code, _, err = run(["enhance", inputs / "face.png", "--out", tmp_path / "pc", "--weights", tiny_weights["score"],
                        "--sampler", "pc", "--steps", "3", "--start-sigma", "0.05", "--quiet"], capsys)
    one_line_error(code, err, "fast sampler only")
    assert not (tmp_path / "pc").exists()
    # the model's calibration factor is for posterior samples only
    info = {uncertainty.SCALE_KEY: 1.8}
    assert uncertainty.run_scale(info, {"start_sigma": None}) == 1.8
    assert uncertainty.run_scale(info, {"start_sigma": 0.3}) == 1.0


def test_enhance_with_one_sample_claims_no_uncertainty_map(tmp_path, inputs, tiny_weights, capsys):
    out = tmp_path / "out"
    code, _, err = run(["enhance", inputs / "face.png", "--out", out, "--weights", tiny_weights["score"],
                        "--steps", "1", "--quiet"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["face.json", "face_bicubic.png", "face_mean.png",
                                                     "face_sample1.png"]
    block = json.loads((out / "face.json").read_text())["uncertainty"]
    assert block["map"] is False and block["samples"] == 1 and "no map (K = 1)" in block["note"]


def test_enhance_plans_the_uncertainty_outputs_and_removes_them_on_failure(tmp_path, inputs, tiny_weights,
                                                                           capsys, monkeypatch):
    from sdesr_gui.core import uncertainty
    from sdesr_gui.core.errors import ExportError

    out = tmp_path / "out"
    out.mkdir()
    (out / "face_uncertainty.png").write_bytes(b"earlier work")
    code, _, err = run(["enhance", inputs / "face.png", "--out", out, "--weights", tiny_weights["score"],
                        "--samples", "2", "--steps", "1"], capsys)
    assert code == 2 and "face_uncertainty.png already exists" in err
    assert sorted(p.name for p in out.iterdir()) == ["face_uncertainty.png"]  # refused before sampling

    def broken(*a, **k):
        raise ExportError("the disk is full")

    monkeypatch.setattr(uncertainty, "render_std_map", broken)
    out2 = tmp_path / "out2"
    code, _, err = run(["enhance", inputs / "face.png", "--out", out2, "--weights", tiny_weights["score"],
                        "--samples", "2", "--steps", "1", "--quiet"], capsys)
    assert code == 2 and "disk is full" in err
    assert list(out2.iterdir()) == []  # the stem's samples, mean, bicubic and std.npy were removed


def test_enhance_says_when_a_sample_does_not_match_its_input(tmp_path, inputs, tiny_weights, capsys, monkeypatch):
    """A sample whose LR residual is far above the mean estimate's (a diverged sampler) gets an
    ``lr_mismatch`` block in the record and a warning on stderr, with --quiet too; a sample that
    reproduces the LR as well as the mean estimate gets neither. (The run's samples are replaced
    by the mean estimate and its colour negative, so the test does not depend on the tiny model.)"""
    import torch

    from sdesr_gui.core.enhance import Enhancer

    real_run = Enhancer.run

    def run_with_one_bad_sample(self, lr, settings, **kw):
        res = real_run(self, lr, settings, **kw)
        res.samples = torch.cat([res.mean, 1 - res.mean])
        return res

    monkeypatch.setattr(Enhancer, "run", run_with_one_bad_sample)
    code, _, err = run(["enhance", inputs / "face.png", "--out", tmp_path / "out", "--weights", tiny_weights["score"],
                        "--samples", "2", "--steps", "2", "--seed", "5", "--quiet"], capsys)
    assert code == 0, err
    rec = json.loads((tmp_path / "out" / "face.json").read_text())
    s1, s2 = (o for o in rec["outputs"] if o["kind"] == "sample")
    assert "lr_mismatch" not in s1
    bad = s2["lr_mismatch"]
    assert bad["lr_rms"] == pytest.approx(s2["consistency"] ** 0.5, abs=0.01) and bad["lr_rms"] > bad["limit"]
    (line,) = [ln for ln in err.splitlines() if ln.strip()]
    assert line.startswith("warning: face.png: sample 2 (seed 6) does not match the input") and "Traceback" not in err


def test_enhance_samples_under_each_sde(tmp_path, inputs, tiny_weights, capsys):
    for sde in ("ve", "vp", "subvp"):
        code, _, err = run(["enhance", inputs / "lr.png", "--out", tmp_path / sde, "--weights",
                            tiny_weights["score"], "--steps", "3", "--sde", sde, "--quiet"], capsys)
        assert code == 0, err
        rec = json.loads((tmp_path / sde / "lr.json").read_text())
        assert rec["sampler"]["sde"] == sde
    code, _, err = run(["enhance", inputs / "lr.png", "--out", tmp_path / "bad", "--weights",
                        tiny_weights["score"], "--sampler", "pc", "--steps", "10", "--sde", "vp"], capsys)
    assert code == 2 and "at least" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()


def test_enhance_is_byte_identical_for_the_same_seed(tmp_path, inputs, tiny_weights, capsys):
    hashes = []
    for name in ("a", "b"):
        code, _, err = run(["enhance", inputs / "face.png", "--out", tmp_path / name, "--weights",
                            tiny_weights["score"], "--samples", "2", "--steps", "4", "--seed", "9",
                            "--sampler", "pc", "--corrector-steps", "1"], capsys)
        assert code == 0, err
        hashes.append([sha256_file(tmp_path / name / f"face_sample{k}.png") for k in (1, 2)])
    assert hashes[0] == hashes[1] and hashes[0][0] != hashes[0][1]


def test_enhance_scales_the_map_by_the_models_stored_factor(tmp_path, inputs, tiny_weights, capsys):
    from sdesr_gui.core.models.checkpoint import update_metadata

    scaled = tmp_path / "scaled.safetensors"
    update_metadata(tiny_weights["score"], scaled, {"uncertainty_scale": 1.5})
    stds = {}
    for name, w in (("plain", tiny_weights["score"]), ("scaled", scaled)):
        code, _, err = run(["enhance", inputs / "face.png", "--out", tmp_path / name, "--weights", w,
                            "--samples", "2", "--steps", "2", "--seed", "3", "--quiet"], capsys)
        assert code == 0, err
        rec = json.loads((tmp_path / name / "face.json").read_text())
        stds[name] = (np.load(tmp_path / name / "face_std.npy"), rec["uncertainty"])
    assert np.allclose(stds["scaled"][0], 1.5 * stds["plain"][0], rtol=1e-5)  # same samples, scaled map
    assert stds["scaled"][1]["std_scale"] == 1.5 and "std_scale_what" in stds["scaled"][1]
    assert stds["plain"][1]["std_scale"] == 1.0


def test_enhance_warns_on_other_sizes_and_reads_folders(tmp_path, inputs, tiny_weights, capsys):
    code, _, err = run(["enhance", inputs, "--out", tmp_path / "o", "--weights", tiny_weights["score"],
                        "--steps", "2", "--quiet"], capsys)
    assert code == 0, err
    assert "odd.jpg" in err and "resized" in err
    assert (tmp_path / "o" / "odd_sample1.png").exists()


def test_guidance_needs_and_uses_the_classifier(tmp_path, inputs, tiny_weights, capsys):
    code, _, err = run(["enhance", inputs / "face.png", "--out", tmp_path / "g", "--weights", tiny_weights["score"],
                        "--classifier", tiny_weights["classifier"], "--attr", "male=0,beard=0,eyeglasses=?",
                        "--steps", "2", "--quiet"], capsys)
    assert code == 0, err
    rec = json.loads((tmp_path / "g" / "face.json").read_text())
    assert rec["attributes"] == {"male": 0, "beard": 0, "eyeglasses": None}
    assert rec["sampler"]["h"] == 50.0  # the classifier's default from its metadata
    assert rec["sampler"]["guidance_sigma_min"] == 0.0  # its card names no interval: the whole run
    assert rec["sampler"]["guidance_cap"] == DEFAULT_GUIDANCE_CAP  # the one table's cap
    acted = rec["sampler"]["guidance_capped"]  # how often it acted: per sample and evaluation
    assert acted["evaluations"] == rec["timings"]["nfe"] * len(rec["sampler"]["seeds"])
    assert 0 <= acted["capped"] <= acted["evaluations"]
    code, _, err = run(["enhance", inputs / "face.png", "--out", tmp_path / "g2", "--weights", tiny_weights["score"],
                        "--classifier", tiny_weights["classifier"], "--attr", "male=1", "--guidance-min-sigma",
                        "0.3", "--guidance-cap", "0", "--steps", "2", "--quiet"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "g2" / "face.json").read_text())["sampler"]["guidance_sigma_min"] == 0.3
    assert json.loads((tmp_path / "g2" / "face.json").read_text())["sampler"]["guidance_cap"] == 0.0
    code, _, err = run(["enhance", inputs / "face.png", "--out", tmp_path / "g3", "--weights", tiny_weights["score"],
                        "--guidance-min-sigma", "-1", "--steps", "2", "--quiet"], capsys)
    assert code == 2 and "cannot be negative" in err
    code, _, err = run(["enhance", inputs / "face.png", "--out", tmp_path / "g4", "--weights", tiny_weights["score"],
                        "--guidance-cap", "-0.5", "--steps", "2", "--quiet"], capsys)
    assert code == 2 and "guidance cap cannot be negative" in err and "Traceback" not in err
    assert not (tmp_path / "g4").exists()


def _write_bad_files(d: Path) -> dict:
    d.mkdir()
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("not an image")
    Image.new("RGB", (1, 1)).save(d / "tiny.png")
    Image.new("RGB", (64, 64), (200, 10, 10)).save(d / "good.png")
    data = (d / "good.png").read_bytes()
    (d / "trunc.png").write_bytes(data[: len(data) // 2])
    Image.new("1", (12000, 9000)).save(d / "bomb.png")  # 108 Mpx, tiny on disk
    (d / "folder").mkdir()
    return {"missing": d / "nope.png", "empty": d / "empty.png", "text": d / "text.png", "tiny": d / "tiny.png",
            "truncated": d / "trunc.png", "bomb": d / "bomb.png", "empty folder": d / "folder"}


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(tmp_path, tiny_weights, capsys):
    bad = _write_bad_files(tmp_path / "bad")
    for what, path in bad.items():
        out = tmp_path / f"out_{what.replace(' ', '_')}"
        code, _, err = run(["enhance", path, "--out", out, "--weights", tiny_weights["score"], "--steps", "2"], capsys)
        assert code == 2, what
        lines = [ln for ln in err.strip().splitlines() if ln]
        assert len(lines) == 1 and lines[0].startswith("sdesr: error:"), (what, err)
        assert "Traceback" not in err
        assert not out.exists() or not any(out.iterdir()), what


def test_a_video_given_to_enhance_points_to_detect(tmp_path, inputs, tiny_weights, capsys):
    clip = Path(__file__).resolve().parents[1] / "resources" / "sample_clip.mp4"
    out = tmp_path / "out"
    code, _, err = run(["enhance", inputs, clip, "--out", out, "--weights", tiny_weights["score"], "--steps", "2"],
                       capsys)
    one_line_error(code, err, "sample_clip.mp4 is a video", "sdesr detect")
    assert not out.exists()


def test_one_bad_input_among_good_ones_writes_nothing(tmp_path, inputs, tiny_weights, capsys):
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    code, _, err = run(["enhance", inputs, "--out", out, "--weights", tiny_weights["score"], "--steps", "2"], capsys)
    assert code == 2 and "broken.png" in err
    assert not out.exists()


def test_conversions_are_accepted(tmp_path, astronaut_face, tiny_weights, capsys):
    d = tmp_path / "modes"
    d.mkdir()
    im = Image.fromarray(astronaut_face)
    im.convert("L").save(d / "gray.png")
    im.convert("RGBA").save(d / "rgba.png")
    im.convert("P").save(d / "pal.png")
    im.convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray((np.asarray(im.convert("L")).astype(np.uint16) * 257)).save(d / "g16.png")
    code, _, err = run(["enhance", d, "--out", tmp_path / "o", "--weights", tiny_weights["score"], "--steps", "1",
                        "--quiet"], capsys)
    assert code == 0, err
    assert len(list((tmp_path / "o").glob("*_sample1.png"))) == 5


def test_transparent_input_goes_on_grey_with_a_warning_and_a_note_in_the_record(tmp_path, astronaut_face,
                                                                                 tiny_weights, capsys):
    d = tmp_path / "alpha"
    d.mkdir()
    rgba = np.dstack([astronaut_face, np.full((128, 128), 255, np.uint8)])
    rgba[:, :32, 3] = 0  # a transparent strip on the left
    Image.fromarray(rgba, "RGBA").save(d / "cutout.png")
    out = tmp_path / "o"
    code, _, err = run(["enhance", d / "cutout.png", "--out", out, "--weights", tiny_weights["score"],
                        "--steps", "1", "--quiet"], capsys)
    assert code == 0, err
    line = next(ln for ln in err.splitlines() if "transparent" in ln)
    assert line == ("sdesr: warning: 'cutout.png' has transparent pixels; they were composited on a neutral "
                    "mid-grey (128, 128, 128) before use.")
    rec = json.loads((out / "cutout.json").read_text())
    assert rec["inputs"][0]["notes"] == [line.split("warning: ", 1)[1]]
    # the bicubic of the degraded HR shows grey, not black, where the face was transparent
    bic = np.asarray(Image.open(out / "cutout_bicubic.png").convert("RGB"))
    assert abs(int(bic[64, 4].mean()) - 128) <= 3
    # an opaque input gets no such line
    Image.fromarray(astronaut_face).convert("RGBA").save(d / "opaque.png")
    code, _, err = run(["enhance", d / "opaque.png", "--out", tmp_path / "o3", "--weights", tiny_weights["score"],
                        "--steps", "1", "--quiet"], capsys)
    assert code == 0 and "transparent" not in err
    assert "notes" not in json.loads((tmp_path / "o3" / "opaque.json").read_text())["inputs"][0]


def test_refuses_to_write_into_the_input_folder_or_overwrite(tmp_path, inputs, tiny_weights, capsys):
    before = tree(inputs)
    for out in (inputs, inputs / "results"):
        code, _, err = run(["enhance", inputs / "face.png", "--out", out, "--weights", tiny_weights["score"]], capsys)
        assert code == 2 and "input folder" in err
    assert tree(inputs) == before
    out = tmp_path / "o"
    assert run(["enhance", inputs / "face.png", "--out", out, "--weights", tiny_weights["score"], "--steps", "1",
                "--quiet"], capsys)[0] == 0
    code, _, err = run(["enhance", inputs / "face.png", "--out", out, "--weights", tiny_weights["score"],
                        "--steps", "1"], capsys)
    assert code == 2 and "already exists" in err
    assert run(["enhance", inputs / "face.png", "--out", out, "--weights", tiny_weights["score"], "--steps", "1",
                "--overwrite", "--quiet"], capsys)[0] == 0


def test_usage_errors(tmp_path, inputs, tiny_weights, capsys, monkeypatch):
    monkeypatch.setenv("SDESR_WEIGHTS_DIR", str(tmp_path / "no_weights_here"))
    code, _, err = run(["enhance", inputs / "face.png", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "no 8x score model is installed" in err
    cases = [
        (["--attr", "hat=1"], "Unknown attribute"),
        (["--attr", "male=maybe"], "use 1 (present)"),
        (["--steps", "41"], "at most 40 steps"),
        (["--samples", "0"], "between 1 and 64"),
        (["--device", "cuda:0"] if not __import__("torch").cuda.is_available() else ["--device", "tpu"], "GPU"),
        (["--attr", "male=1"], "classifier"),
    ]
    for extra, msg in cases:
        code, _, err = run(["enhance", inputs / "face.png", "--out", tmp_path / "o2", "--weights",
                            tiny_weights["score"], *extra], capsys)
        assert code == 2 and msg in err, (extra, err)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    code, _, err = run(["enhance", inputs / "face.png", "--out", tmp_path / "o3", "--weights",
                        tmp_path / "junk.safetensors"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_bench_reports_latency_and_ratio(tiny_weights, capsys):
    code, out, err = run(["bench", "--weights", tiny_weights["score"], "--repeats", "2", "--pc-steps", "2",
                          "--json"], capsys)
    assert code == 0, err
    rep = json.loads(out)
    assert rep["nfe_latency_ms_batch1"] > 0
    names = [r["sampler"] for r in rep["samplers"]]
    assert names[0].startswith("fast") and names[-1].startswith("paper PC")
    assert rep["samplers"][0]["nfe"] <= 40 and rep["samplers"][-1]["nfe"] == 6000
    assert rep["samplers"][-1]["vs_paper_time"] == pytest.approx(1.0)
    assert rep["samplers"][0]["vs_paper_time"] < 0.05
    assert rep["mean_estimate_ms"] > 0
    assert "mirror" in names[1] and rep["samplers"][1]["nfe"] == rep["samplers"][0]["nfe"]


def test_console_script_runs_without_traceback(tmp_path):
    exe = Path(sys.executable).with_name("sdesr")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sdesr_gui.cli"]
    r = subprocess.run([*cmd, "enhance", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env={**os.environ, "SDESR_WEIGHTS_DIR": str(tmp_path)})
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1


def test_python_dash_m_and_sampler_choices_come_from_core(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sdesr_gui.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("sdesr "), r.stderr
    from sdesr_gui.cli import build_parser
    from sdesr_gui.core.enhance import DEFAULT_STEPS, SCALES, SamplerSettings
    from sdesr_gui.core.sampling import CORRECTORS, FAST_METHODS, PREDICTORS
    from sdesr_gui.core.sde import SDES

    args = build_parser().parse_args(["enhance", "x.png", "--out", str(tmp_path)])
    d = SamplerSettings()
    assert (args.sampler, args.predictor, args.corrector, args.fast_method) == (
        d.sampler, d.predictor, d.corrector, d.fast_method)
    sub = next(a for a in build_parser()._subparsers._group_actions if a.choices).choices["enhance"]
    choices = {a.dest: a.choices for a in sub._actions if a.choices}
    assert choices == {"sampler": list(DEFAULT_STEPS), "predictor": list(PREDICTORS),
                       "corrector": list(CORRECTORS), "fast_method": list(FAST_METHODS), "sde": list(SDES),
                       "scale": list(SCALES), "footage": ["auto", "on", "off"]}


def test_evaluate_reports_bicubic_and_sampler(tmp_path, astronaut_face, tiny_weights, capsys):
    d = tmp_path / "hr"
    d.mkdir()
    for i in range(3):
        Image.fromarray(np.roll(astronaut_face, i * 5, axis=1)).save(d / f"f{i}.png")
    Image.fromarray(astronaut_face[:64]).save(tmp_path / "small.png")
    code, out, err = run(["evaluate", d, "--weights", tiny_weights["score"], "--steps", "2", "--batch", "2",
                          "--json", tmp_path / "r.json", "--quiet"], capsys)
    assert code == 0, err
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["faces"] == 3 and set(rep["summary"]) == {"bicubic", "mean estimate", "fast"}
    assert "an estimate, not a sample" in out
    # the mean-estimate row is the app's mean estimate, face by face
    from sdesr_gui.core.enhance import Enhancer
    from sdesr_gui.core import faces as _faces, metrics as _metrics
    enh = Enhancer.from_files(tiny_weights["score"])
    hr0 = _faces.to_tensor(np.asarray(Image.open(d / "f1.png")))
    est = enh.mean_estimate(_faces.degrade(hr0))
    assert rep["per_face"]["mean estimate"]["psnr"][1] == pytest.approx(float(_metrics.psnr(est, hr0)[0]), rel=1e-4)
    assert rep["summary"]["bicubic"]["psnr"]["n"] == 3 and "bicubic" in out
    # samples that do not reproduce their LR are counted against each face's mean estimate
    flagged = [i for i, (c, r) in enumerate(zip(rep["per_face"]["fast"]["consistency"],
                                                 rep["per_face"]["mean estimate"]["consistency"]))
               if c ** 0.5 > 3 * r ** 0.5 + 3]
    assert rep["lr_mismatch_faces"] == {"fast": flagged}
    assert f"fast: {len(flagged)} of 3 samples do not match their input" in out
    # --no-samples: bicubic and the same mean estimate, no sampler row
    code, out, err = run(["evaluate", d, "--weights", tiny_weights["score"], "--no-samples",
                          "--json", tmp_path / "m.json", "--quiet"], capsys)
    assert code == 0, err
    mrep = json.loads((tmp_path / "m.json").read_text())
    assert set(mrep["summary"]) == {"bicubic", "mean estimate"} and mrep["settings"] is None
    assert mrep["mean_mirror"] is True
    assert mrep["per_face"]["mean estimate"]["psnr"] == rep["per_face"]["mean estimate"]["psnr"]
    code, _, err = run(["evaluate", d, "--weights", tiny_weights["score"], "--no-samples", "--no-mean"], capsys)
    assert code == 2 and "nothing to evaluate" in err and "Traceback" not in err
    # the bicubic row equals the metric computed directly
    from sdesr_gui.core import faces, metrics
    hr = faces.to_tensor(np.asarray(Image.open(d / "f0.png")))
    assert rep["per_face"]["bicubic"]["psnr"][0] == pytest.approx(
        float(metrics.psnr(faces.upsample(faces.degrade(hr)), hr)[0]), rel=1e-5)
    # a footage-grade strength: the LR of face i is that strength with seed i, recorded in the report
    code, out, err = run(["evaluate", d, "--weights", tiny_weights["score"], "--steps", "2", "--no-mean",
                          "--degrade", "moderate", "--json", tmp_path / "deg.json", "--quiet"], capsys)
    assert code == 0, err
    deg = json.loads((tmp_path / "deg.json").read_text())
    assert deg["degradation"]["strength"] == "moderate" and deg["degradation"]["h264_qp"] == 32
    assert "LR degradation: moderate" in out
    from dataclasses import replace as _replace
    from sdesr_gui.core.degradations import STRENGTHS, degrade as _degrade
    lr2 = _degrade(_faces.to_tensor(np.asarray(Image.open(d / "f2.png")))[0],
                   _replace(STRENGTHS["moderate"], seed=2))
    hr2 = _faces.to_tensor(np.asarray(Image.open(d / "f2.png")))
    assert deg["per_face"]["bicubic"]["psnr"][2] == pytest.approx(
        float(_metrics.psnr(_faces.upsample(lr2[None]), hr2)[0]), rel=1e-5)
    assert deg["per_face"]["bicubic"]["psnr"][2] < rep["per_face"]["bicubic"]["psnr"][2]
    code, _, err = run(["evaluate", tmp_path / "small.png", "--weights", tiny_weights["score"]], capsys)
    assert code == 2 and "128x128" in err
    # --cs adds the identity cosine (dlib) for every row; the HR's own bicubic keeps most of it
    code, out, err = run(["evaluate", d / "f0.png", "--weights", tiny_weights["score"], "--steps", "2", "--cs",
                          "--json", tmp_path / "cs.json", "--quiet"], capsys)
    assert code == 0, err
    rep = json.loads((tmp_path / "cs.json").read_text())
    assert set(rep["summary"]["bicubic"]) >= {"psnr", "cs"} and 0.5 < rep["per_face"]["bicubic"]["cs"][0] <= 1.0
    assert "cs" in rep["metric_legend"] and "CS" in out


def test_overwrite_with_fewer_samples_leaves_no_stale_outputs(tmp_path, inputs, tiny_weights, capsys):
    out = tmp_path / "o"
    base = ["enhance", inputs / "face.png", "--out", out, "--weights", tiny_weights["score"], "--steps", "1",
            "--quiet"]
    assert run(base + ["--samples", "3"], capsys)[0] == 0
    assert {"face_sample3.png", "face_std.npy", "face_uncertainty.png"} <= set(os.listdir(out))
    (out / "notes.txt").write_text("the analyst's own file")  # not ours: never touched
    assert run(base + ["--samples", "1", "--overwrite"], capsys)[0] == 0
    names = set(os.listdir(out))
    assert names == {"face_sample1.png", "face_mean.png", "face_bicubic.png", "face.json", "notes.txt"}
    rec = json.loads((out / "face.json").read_text())
    assert sorted(Path(o["path"]).name for o in rec["outputs"]) == ["face_bicubic.png", "face_mean.png",
                                                                   "face_sample1.png"]
