"""scripts/average_weights.py: the weight average of two checkpoints (how the model card's stage 3 / stage 4 average was made)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdesr_gui.core.models import ScoreNetConfig, ScoreUNet, load_checkpoint, save_checkpoint
from sdesr_gui.core.models.checkpoint import file_sha256
from sdesr_gui.core.sde import VESDE

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import average_weights as aw  # noqa: E402

CFG = ScoreNetConfig(channels=(4, 4, 4, 4), blocks_per_level=1, attn_resolutions=(), emb_dim=8, attn_heads=1)


def _save(path: Path, seed: int, cfg: ScoreNetConfig = CFG, note: str = "a") -> Path:
    torch.manual_seed(seed)
    save_checkpoint(path, ScoreUNet(cfg), kind="score", config=cfg.to_dict(),
                    metadata={"sde": VESDE().to_dict(), "data_range": [0, 1], "scale_factor": 8,
                              "training_data": f"none ({note}: tests only)", "metrics": {"psnr": 30.0 + seed}})
    return path


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_the_average_is_the_weighted_mean_and_names_its_parents(tmp_path, alpha):
    a, b = _save(tmp_path / "a.safetensors", 1, note="a"), _save(tmp_path / "b.safetensors", 2, note="b")
    out = tmp_path / "ab.safetensors"
    aw.average(a, b, alpha, out)
    (ma, _), (mb, _), (m, meta) = load_checkpoint(a), load_checkpoint(b), load_checkpoint(out)
    sa, sb = ma.state_dict(), mb.state_dict()
    for k, v in m.state_dict().items():
        if v.is_floating_point():
            want = (1 - alpha) * sa[k].float() + alpha * sb[k].float()
            assert torch.allclose(v.float(), want, atol=2e-3 * (want.abs().max() + 1)), k  # stored as fp16
    assert meta["training_data"] == "none (b: tests only)"  # B's training record is kept
    assert "metrics" not in meta  # ... but not B's validation numbers, which describe B alone
    parents = meta["weight_average"]["of"]
    assert [p["sha256"] for p in parents] == [file_sha256(a), file_sha256(b)]
    assert [p["weight"] for p in parents] == [pytest.approx(1 - alpha), pytest.approx(alpha)]


def test_different_networks_are_refused_with_one_sentence_and_no_file(tmp_path):
    a = _save(tmp_path / "a.safetensors", 1)
    other = ScoreNetConfig(channels=(8, 8, 8, 8), blocks_per_level=1, attn_resolutions=(), emb_dim=8, attn_heads=1)
    b = _save(tmp_path / "b.safetensors", 2, cfg=other)
    out = tmp_path / "ab.safetensors"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "average_weights.py"), str(a), str(b), "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "not the same network" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_a_run_trained_with_dropout_averages_with_one_without(tmp_path):
    # dropout has no weights: the architectures match, and the average keeps B's config
    import dataclasses
    a = _save(tmp_path / "a.safetensors", 1)
    b = _save(tmp_path / "b.safetensors", 2, cfg=dataclasses.replace(CFG, dropout=0.1))
    out = tmp_path / "ab.safetensors"
    aw.average(a, b, 0.5, out)
    _, meta = load_checkpoint(out)
    assert meta["config"]["dropout"] == 0.1
