"""core.evaluation: paired differences from bicubic, and the footage mode that measures what the
app delivers (each face to the model it would pick for its LR, each face keeping its seed).

Two tiny random networks with different weights stand in for the clean-trained and the footage
model, so which one took a face shows in its output."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cli_util import run
from sdesr_gui.core import evaluation
from sdesr_gui.core.enhance import Enhancer, SamplerSettings
from sdesr_gui.core.models import ScoreNetConfig, ScoreUNet
from sdesr_gui.core.sde import VESDE


def _tiny(seed: int, **info) -> Enhancer:
    cfg = dataclasses.replace(ScoreNetConfig.tiny(), attn_resolutions=(), patch=4)
    model = ScoreUNet(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # fresh models have zero-init convs: make the network do something
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return Enhancer(model, VESDE(), model_info={"name": f"tiny{seed}", **info})


@pytest.fixture(scope="module")
def hr_faces():
    rng = np.random.default_rng(5)
    base = rng.integers(40, 220, (128, 128, 3), dtype=np.uint8)
    return [np.roll(base, 9 * i, axis=1) for i in range(3)]


def test_paired_difference_by_hand():
    d = evaluation.paired_difference([1.0, 2.0, 3.0, float("nan")], [0.0, 0.0, 1.0, 5.0])
    assert d["n"] == 3 and d["mean"] == pytest.approx(5 / 3)
    assert d["se"] == pytest.approx(np.std([1, 2, 2], ddof=1) / np.sqrt(3))
    one = evaluation.paired_difference([2.0], [1.0])
    assert one["mean"] == 1.0 and np.isnan(one["se"])
    assert "-" in evaluation.format_differences({"x": {"psnr": one}})  # one face: no s.e. shown


def test_differences_are_against_bicubic_face_by_face(hr_faces):
    res = evaluation.evaluate(_tiny(0), hr_faces, {}, mean_estimate=True, batch=2)
    diffs = res.differences()
    assert list(diffs) == [evaluation.MEAN_ROW]
    want = np.array(res.per_face[evaluation.MEAN_ROW]["psnr"]) - np.array(res.per_face["bicubic"]["psnr"])
    assert diffs[evaluation.MEAN_ROW]["psnr"]["mean"] == pytest.approx(want.mean())
    assert diffs[evaluation.MEAN_ROW]["psnr"]["n"] == 3
    table = evaluation.format_differences(diffs)
    assert "minus bicubic" in table and "PSNR [dB] ↑" in table and f"{want.mean():+8.3f}" in table


@pytest.mark.parametrize("threshold", [0.0, 1e9, "median"])
def test_footage_mode_routes_each_face_and_keeps_its_seed(hr_faces, threshold):
    clean, foot = _tiny(0), _tiny(1, footage_threshold=0.0)
    if threshold == "median":  # some faces each way: split the faces at their median residual
        from sdesr_gui.core import degradations, faces

        lrs, _ = degradations.degraded_set(torch.cat([faces.to_tensor(im) for im in hr_faces]), ["moderate"])["moderate"]
        r = [foot.lr_residual(lrs[i:i + 1]) for i in range(len(hr_faces))]
        threshold = float(np.median(r))
    foot.model_info["footage_threshold"] = threshold
    st = SamplerSettings(steps=3, seed=7)
    res = evaluation.evaluate(clean, hr_faces, {"fast": st}, mean_estimate=True, batch=2,
                              degradation="moderate", footage=foot, footage_mode="auto")
    took = [c["model"] for c in res.choices]
    assert len(took) == 3 and all(c["threshold"] == threshold for c in res.choices)
    if threshold == 0.0:
        assert took == ["footage"] * 3
    elif threshold == 1e9:
        assert took == ["clean"] * 3
    else:
        assert set(took) == {"clean", "footage"}
    # each face's outputs are those of the model that took it, run alone with the face's own seed
    for i, im in enumerate(hr_faces):
        enh = foot if took[i] == "footage" else clean
        alone = evaluation.evaluate(enh, [hr_faces[j] for j in range(i + 1)], {"fast": st}, mean_estimate=True,
                                    batch=1, degradation="moderate")
        for row in ("fast", evaluation.MEAN_ROW):
            assert res.per_face[row]["psnr"][i] == pytest.approx(alone.per_face[row]["psnr"][i], abs=1e-4), (row, i)
    on = evaluation.evaluate(clean, hr_faces[:1], {}, mean_estimate=True, degradation="moderate",
                             footage=_tiny(1, footage_threshold=1e9), footage_mode="on")
    assert [c["model"] for c in on.choices] == ["footage"]
    with pytest.raises(ValueError):
        evaluation.evaluate(clean, hr_faces[:1], {}, footage=foot, footage_mode="off")


def test_evaluate_cli_footage_auto_records_the_choice(tmp_path, astronaut_face, tiny_weights, capsys, monkeypatch):
    import shutil

    wdir = tmp_path / "installed"
    wdir.mkdir()
    shutil.copy(tiny_weights["score"], wdir / "sdesr_ve_8x.safetensors")
    shutil.copy(tiny_weights["footage_always"], wdir / "sdesr_ve_8x_footage.safetensors")
    monkeypatch.setenv("SDESR_WEIGHTS_DIR", str(wdir))
    d = tmp_path / "hr"
    d.mkdir()
    for i in range(2):
        Image.fromarray(np.roll(astronaut_face, i * 5, axis=1)).save(d / f"f{i}.png")
    code, out, err = run(["evaluate", d, "--no-samples", "--footage", "auto", "--degrade", "mild",
                          "--json", tmp_path / "r.json", "--quiet"], capsys)
    assert code == 0, err
    rep = json.loads((tmp_path / "r.json").read_text())
    ch = rep["model_choice"]
    assert ch["mode"] == "auto" and ch["faces_to_footage_model"] == 2 and len(ch["per_face"]) == 2
    assert rep["vs_bicubic"][evaluation.MEAN_ROW]["psnr"]["n"] == 2
    assert "the footage model took 2 of 2 faces" in out and "minus bicubic" in out
    # the 16x model has no footage twin: one sentence, exit 2, no report
    code, _, err = run(["evaluate", d, "--no-samples", "--footage", "auto", "--weights", tiny_weights["score16"],
                        "--json", tmp_path / "r16.json"], capsys)
    assert code == 2 and "8x model" in err and not (tmp_path / "r16.json").exists()
    (wdir / "sdesr_ve_8x_footage.safetensors").unlink()
    code, _, err = run(["evaluate", d, "--no-samples", "--footage", "on"], capsys)
    assert code == 2 and "footage model" in err
