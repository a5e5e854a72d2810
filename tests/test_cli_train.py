"""`sdesr prepare` and `sdesr train score|attributes|export` end to end on generated faces."""

from __future__ import annotations

import json

import pytest
import torch

from sdesr_gui.cli import main
from sdesr_gui.core.models import load_checkpoint
from sdesr_gui.core.training import load_train_state
from test_training import _make_sources


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_train")
    _make_sources(root / "src", {"person0": 2, "person4": 2, "person1": 2})
    (root / "attr.csv").write_text(
        "file,p_male,p_eyeglasses,p_beard\n"
        "person0_0.jpg,0.9,0.8,0.1\nperson0_1.jpg,0.9,0.1,0.2\n"
        "person4_0.jpg,0.1,0.1,0.9\nperson1_0.jpg,0.2,0.9,0.1\nperson1_1.jpg,0.8,0.1,0.6\n")
    rc = main(["prepare", str(root / "src"), "--out", str(root / "data"), "--attributes",
               str(root / "attr.csv"), "--val-fraction", "0.3", "--quiet"])
    assert rc == 0
    return root


def test_prepare_writes_manifest_and_refuses_output_inside_source(prepared, capsys):
    manifest = (prepared / "data" / "manifest.csv").read_text().splitlines()
    assert len(manifest) == 7 and manifest[0].startswith("file,identity,split")
    rc = main(["prepare", str(prepared / "src"), "--out", str(prepared / "src" / "data")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "inside the input folder" in err and "Traceback" not in err
    assert not (prepared / "src" / "data").exists()
    assert main(["prepare", str(prepared / "missing"), "--out", str(prepared / "x")]) == 2


def test_train_score_resumes_with_only_the_step_count_and_exports(prepared, tmp_path, capsys):
    data, run = prepared / "data", tmp_path / "run"
    common = ["--run", str(run), "--batch", "2", "--val-every", "0", "--quiet", "--device", "cpu"]
    assert main(["train", "score", str(data), "--steps", "2", "--sigma-data", "0.1", "--shift", "3",
                 "--scale-jitter", "0.08", "--color-jitter", "0.1",
                 "--dropout", "0.1", "--uniform-frac", "0.5", "--channels", "8,16,16", "--crop", "32", *common]) == 0
    first = load_train_state(run)[0]
    assert first["step"] == 2 and first["config"]["shift"] == 3 and first["config"]["net"]["dropout"] == 0.1
    assert first["config"]["uniform_frac"] == 0.5
    assert first["config"]["scale_jitter"] == 0.08 and first["config"]["color_jitter"] == 0.1
    # resuming needs no repeat of the architecture settings ...
    assert main(["train", "score", str(data), "--steps", "3", "--run", str(run), "--quiet"]) == 0
    state = load_train_state(run)[0]
    assert state["step"] == 3 and state["config"]["net"]["sigma_data"] == 0.1
    # ... but a conflicting one is refused in one sentence
    capsys.readouterr()
    assert main(["train", "score", str(data), "--steps", "4", "--run", str(run), "--crop", "64"]) == 2
    assert "different settings" in capsys.readouterr().err
    out = tmp_path / "score.safetensors"
    assert main(["train", "export", "--run", str(run), "--out", str(out)]) == 0
    model, meta = load_checkpoint(out)
    assert meta["kind"] == "score"
    assert meta["training"]["steps"] == 3 and meta["training"]["shift"] == 3  # the augmentation is on record
    assert meta["training"]["uniform_frac"] == 0.5
    assert meta["training"]["scale_jitter"] == 0.08 and meta["training"]["color_jitter"] == 0.1
    assert main(["train", "export", "--run", str(run), "--out", str(out)]) == 2  # no silent overwrite
    out8 = tmp_path / "score8.safetensors"
    assert main(["train", "export", "--run", str(run), "--out", str(out8), "--int8",
                 "--footage-threshold", "3.5"]) == 0
    model8, meta8 = load_checkpoint(out8)
    assert "int8" in meta8["stored_dtype"] and meta8["quantization"]["tensors"] > 0
    assert meta8["training"]["steps"] == 3 and meta8["footage_threshold"] == 3.5


def test_train_attributes_and_bad_dataset(prepared, tmp_path, capsys):
    run = tmp_path / "attr"
    assert main(["train", "attributes", str(prepared / "data"), "--run", str(run), "--steps", "2",
                 "--batch", "2", "--val-every", "0", "--quiet", "--device", "cpu"]) == 0
    out = tmp_path / "attr.safetensors"
    assert main(["train", "export", "--run", str(run), "--out", str(out), "--default-h", "300"]) == 0
    _, meta = load_checkpoint(out)
    assert meta["kind"] == "classifier"
    assert meta["default_h"] == 300
    capsys.readouterr()
    assert main(["train", "score", str(tmp_path), "--run", str(tmp_path / "r2")]) == 2
    assert "not a prepared dataset" in capsys.readouterr().err
    for bad, word in ((["--dropout", "1.5"], "dropout"), (["--shift", "-2"], "shift"),
                      (["--uniform-frac", "1.5"], "uniform_frac"), (["--scale-jitter", "0.5"], "scale_jitter"),
                      (["--color-jitter", "-0.1"], "color_jitter")):
        assert main(["train", "score", str(prepared / "data"), "--run", str(tmp_path / "r2"), *bad]) == 2
        err = capsys.readouterr().err
        assert word in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r2").exists()
