"""scripts/start_sigma_eval.py: the model card's table of samples started from the mean estimate."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from sdesr_gui.cli import main as sdesr
from sdesr_gui.core.enhance import Enhancer, SamplerSettings
from sdesr_gui.core.evaluation import evaluate
from test_training import _make_sources

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import start_sigma_eval  # noqa: E402
from model_card_eval import load, split_rows  # noqa: E402


def test_start_sigma_eval_reports_fidelity_and_spread(tmp_path, tiny_weights):
    _make_sources(tmp_path / "src", {"person0": 2, "person1": 2, "person2": 2})
    assert sdesr(["prepare", str(tmp_path / "src"), "--out", str(tmp_path / "data"), "--val-fraction", "0.4",
                  "--quiet"]) == 0
    out = tmp_path / "r.json"
    old = torch.get_num_threads()
    try:
        assert start_sigma_eval.main(["--dataset", str(tmp_path / "data"), "--weights", str(tiny_weights["score"]),
                                      "--faces", "2", "--sigmas", "none,0.02", "--steps", "3", "--out",
                                      str(out)]) == 0
    finally:
        torch.set_num_threads(old)
    rep = json.loads(out.read_text())
    assert set(rep["rows"]) == {"bicubic", "mean estimate", "start none", "start 0.02"}
    assert rep["faces"] == 2 and rep["steps"] == 3 and rep["degrade"] == "clean"
    for row in rep["rows"].values():
        for k in ("psnr", "ssim", "consistency", "cs"):
            assert all(math.isfinite(v) for v in row[k])
    assert rep["rows"]["bicubic"]["psnr"][1] == 0.0
    for name in ("start none", "start 0.02"):
        assert rep["rows"][name]["spread"] > 0 and rep["rows"][name]["rms_to_mean"] > 0
    # the same faces, LR and seeds as `sdesr evaluate` (face i, seed i): the same numbers
    enh = Enhancer.from_files(tiny_weights["score"])
    rows = split_rows(tmp_path / "data")[:2]
    res = evaluate(enh, load(tmp_path / "data", rows), {"fast": SamplerSettings(steps=3),
                                                        "near": SamplerSettings(steps=3, start_sigma=0.02)},
                   mean_estimate=True).summary()
    for ours, theirs in (("bicubic", "bicubic"), ("mean estimate", "mean estimate"), ("start none", "fast"),
                         ("start 0.02", "near")):
        for k in ("psnr", "ssim", "consistency"):
            assert rep["rows"][ours][k][0] == pytest.approx(res[theirs][k]["mean"], rel=1e-5)
