"""Tests for sdesr_gui.core.models: score U-Net, classifier, checkpoint I/O (CPU, fast)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
import torch

from sdesr_gui.core.models import (
    CHECKPOINT_FORMAT,
    AttributeClassifier,
    AttributeClassifierConfig,
    CheckpointError,
    ScoreNetConfig,
    ScoreUNet,
    file_sha256,
    import_torch_state,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter non-trivial values (fresh models have zero-init convs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model.eval()


def _inputs(b: int = 2, size: int = 128, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y_up = torch.rand(b, 3, size, size, generator=gen)
    x = y_up + 0.3 * torch.randn(b, 3, size, size, generator=gen)
    return x, y_up


@pytest.fixture()
def score_net() -> ScoreUNet:
    torch.manual_seed(0)
    return _randomise(ScoreUNet(ScoreNetConfig.tiny()))


# ----------------------------------------------------------------------------- configs
def test_configs_round_trip_through_json() -> None:
    for cfg in (ScoreNetConfig(), ScoreNetConfig.tiny()):
        d = json.loads(json.dumps(cfg.to_dict()))
        assert ScoreNetConfig.from_dict(d) == cfg
    for ccfg in (AttributeClassifierConfig(), AttributeClassifierConfig.tiny()):
        d = json.loads(json.dumps(ccfg.to_dict()))
        assert AttributeClassifierConfig.from_dict(d) == ccfg
    with pytest.raises(ValueError):
        ScoreNetConfig.from_dict({"bogus": 1})


# ----------------------------------------------------------------------------- score net
@pytest.mark.parametrize("size", [128, 64])
def test_score_net_shapes(score_net: ScoreUNet, size: int) -> None:
    x, y_up = _inputs(2, size)
    sigma = torch.tensor([0.5, 3.0])
    with torch.no_grad():
        d = score_net(x, sigma, y_up)
        raw = score_net.forward_raw(torch.cat([x, y_up], 1), torch.zeros(2))
        s = score_net.score(x, 1.0, y_up)  # scalar sigma is broadcast
    assert d.shape == x.shape and raw.shape == x.shape and s.shape == x.shape
    assert torch.isfinite(d).all()


def test_score_net_rejects_bad_sizes(score_net: ScoreUNet) -> None:
    with pytest.raises(ValueError):
        score_net.forward_raw(torch.zeros(1, 6, 63, 64), torch.zeros(1))
    with pytest.raises(ValueError):
        score_net(torch.zeros(1, 3, 64, 64), 1.0, torch.zeros(1, 3, 32, 32))


def test_attention_present_at_configured_level() -> None:
    from sdesr_gui.core.models import SelfAttention

    net = ScoreUNet(ScoreNetConfig.tiny())
    n_attn = sum(isinstance(m, SelfAttention) for m in net.modules())
    assert n_attn >= 2  # at least one encoder/decoder attention plus the middle one
    default = ScoreNetConfig()
    assert default.level_has_attention(default.num_levels - 1)  # 16x16 for 128 input


def test_preconditioning_with_zero_network_output(score_net: ScoreUNet) -> None:
    torch.nn.init.zeros_(score_net.conv_out.weight)
    torch.nn.init.zeros_(score_net.conv_out.bias)
    x, y_up = _inputs(2, 64)
    sigma = torch.tensor([0.05, 7.0])
    sd = score_net.sigma_data
    with torch.no_grad():
        d = score_net.denoise(x, sigma, y_up)
        s = sigma.reshape(-1, 1, 1, 1)
        c_skip = sd**2 / (s**2 + sd**2)
        expected = y_up + c_skip * (x - y_up)
        assert torch.equal(d, expected)

        tiny_sigma = torch.full((2,), 1e-4)
        d0 = score_net.denoise(x, tiny_sigma, y_up)
        torch.testing.assert_close(d0, x, atol=1e-5, rtol=0)


def test_fresh_model_output_is_skip_only() -> None:
    net = ScoreUNet(ScoreNetConfig.tiny()).eval()  # last conv zero-initialised
    x, y_up = _inputs(1, 64)
    sd = net.sigma_data
    with torch.no_grad():
        d = net(x, 2.0, y_up)
    assert torch.equal(d, y_up + (sd**2 / (4.0 + sd**2)) * (x - y_up))


def test_preconditioning_coefficients(score_net: ScoreUNet) -> None:
    sigma = torch.tensor([0.01, 0.2, 348.0])
    c_skip, c_out, c_in, c_noise = score_net.precondition(sigma)
    sd = score_net.sigma_data
    for i, s in enumerate(sigma.tolist()):
        assert c_skip[i].item() == pytest.approx(sd**2 / (s**2 + sd**2), rel=1e-5)
        assert c_out[i].item() == pytest.approx(s * sd / math.sqrt(s**2 + sd**2), rel=1e-5)
        assert c_in[i].item() == pytest.approx(1 / math.sqrt(s**2 + sd**2), rel=1e-5)
        assert c_noise[i].item() == pytest.approx(math.log(s) / 4, rel=1e-5, abs=1e-6)


def test_score_matches_denoiser(score_net: ScoreUNet) -> None:
    x, y_up = _inputs(2, 64)
    sigma = torch.tensor([0.3, 2.0])
    with torch.no_grad():
        d = score_net.denoise(x, sigma, y_up)
        s = score_net.score(x, sigma, y_up)
    torch.testing.assert_close(s, (d - x) / sigma.reshape(-1, 1, 1, 1) ** 2)


def test_fourier_buffers_are_deterministic() -> None:
    a = ScoreUNet(ScoreNetConfig.tiny())
    b = ScoreUNet(ScoreNetConfig.tiny())
    assert torch.equal(a.noise_embed.freqs, b.noise_embed.freqs)
    assert "noise_embed.freqs" in a.state_dict()
    assert not any(p is a.noise_embed.freqs for p in a.parameters())
    c1 = AttributeClassifier(AttributeClassifierConfig.tiny())
    c2 = AttributeClassifier(AttributeClassifierConfig.tiny())
    assert torch.equal(c1.noise_embed.freqs, c2.noise_embed.freqs)


def test_score_net_gradients_flow() -> None:
    net = _randomise(ScoreUNet(ScoreNetConfig.tiny())).train()
    x, y_up = _inputs(2, 64)
    loss = (net(x, torch.tensor([0.5, 1.0]), y_up) - y_up).pow(2).mean()
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


# ----------------------------------------------------------------------------- classifier
@pytest.mark.parametrize("size", [128, 64])
def test_classifier_shape_and_input_gradient(size: int) -> None:
    clf = _randomise(AttributeClassifier(AttributeClassifierConfig.tiny()))
    assert clf.attributes == ("male", "beard", "eyeglasses")
    x = torch.rand(2, 3, size, size, requires_grad=True)
    logits = clf(x, torch.tensor([0.1, 10.0]))
    assert logits.shape == (2, 3)
    (grad,) = torch.autograd.grad(logits[:, 0].sum(), x)
    assert grad.shape == x.shape and grad.abs().sum() > 0
    logp = clf.log_prob(x, 1.0, torch.tensor([1.0, 0.0, 1.0]))
    assert logp.shape == (2, 3) and (logp <= 0).all()


# ----------------------------------------------------------------------------- checkpoints
def _meta() -> dict:
    return {"sde": {"name": "ve", "sigma_min": 0.01, "sigma_max": 348.0}, "data_range": [0, 1],
            "scale_factor": 8, "training_data": "unit test", "metrics": {"psnr": 1.0}}


def test_checkpoint_round_trip_fp32(tmp_path: Path, score_net: ScoreUNet) -> None:
    path = tmp_path / "score.safetensors"
    save_checkpoint(path, score_net, kind="score", config=score_net.config.to_dict(), metadata=_meta())
    assert [p.name for p in tmp_path.iterdir()] == ["score.safetensors"]  # no temp file left

    meta = read_metadata(path)
    assert meta["format"] == CHECKPOINT_FORMAT and meta["kind"] == "score"
    assert meta["sde"]["sigma_max"] == 348.0 and meta["scale_factor"] == 8
    assert len(meta["tensor_sha256"]) == 64

    model, meta2 = load_checkpoint(path)
    assert isinstance(model, ScoreUNet) and not model.training
    assert model.meta == meta2 == meta
    assert model.config == score_net.config
    assert torch.equal(model.noise_embed.freqs, score_net.noise_embed.freqs)
    x, y_up = _inputs(1, 64)
    with torch.no_grad():
        assert torch.equal(model(x, 0.7, y_up), score_net(x, 0.7, y_up))
    assert len(file_sha256(path)) == 64


def test_checkpoint_round_trip_fp16(tmp_path: Path, score_net: ScoreUNet) -> None:
    path = tmp_path / "score16.safetensors"
    save_checkpoint(path, score_net, kind="score", config=score_net.config.to_dict(),
                    metadata=_meta(), dtype=torch.float16)
    model, meta = load_checkpoint(path)
    assert meta["stored_dtype"] == ["float16", "float32"]  # buffers stay fp32
    assert next(model.parameters()).dtype == torch.float32
    x, y_up = _inputs(1, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x, 0.7, y_up), score_net(x, 0.7, y_up), atol=1e-2, rtol=0)


def test_checkpoint_int8_weights_round_trip_and_are_traced(tmp_path: Path, score_net: ScoreUNet) -> None:
    from sdesr_gui.core.models.checkpoint import QUANT_SCALE_SUFFIX, convert_checkpoint

    src = tmp_path / "score16.safetensors"
    save_checkpoint(src, score_net, kind="score", config=score_net.config.to_dict(),
                    metadata=_meta(), dtype=torch.float16)
    dst = tmp_path / "score8.safetensors"
    meta = convert_checkpoint(src, dst, quantize="int8")
    assert meta["stored_dtype"] == ["float16", "float32", "int8"]
    n_weights = sum(1 for _, p in score_net.named_parameters() if p.ndim >= 2)
    assert meta["quantization"]["tensors"] == n_weights > 0
    assert meta["converted_from"]["sha256"] == file_sha256(src)
    assert meta["sde"] == _meta()["sde"]  # caller metadata carries over
    assert dst.stat().st_size < 0.7 * src.stat().st_size

    from safetensors import safe_open

    with safe_open(str(dst), framework="pt") as f:
        keys = set(f.keys())
        conv = next(k for k in keys if k.endswith(".weight") and f.get_tensor(k).ndim == 4)
        assert f.get_tensor(conv).dtype == torch.int8 and conv + QUANT_SCALE_SUFFIX in keys
    model, meta2 = load_checkpoint(dst)
    assert set(model.state_dict()) == set(score_net.state_dict())  # scales are not parameters
    for name, p in model.state_dict().items():  # at most half a step of each channel's scale
        ref = score_net.state_dict()[name]
        if ref.ndim >= 2:
            step = ref.abs().reshape(ref.shape[0], -1).amax(1) / 127
            err = (p - ref).abs().reshape(ref.shape[0], -1).amax(1)
            assert torch.all(err <= step * 0.5 + 1e-3 * ref.abs().max())
    x, y_up = _inputs(1, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x, 0.7, y_up), score_net(x, 0.7, y_up), atol=5e-2, rtol=0)
    with pytest.raises(ValueError, match="quantize"):
        save_checkpoint(tmp_path / "x.safetensors", score_net, quantize="int4")


def test_metadata_update_keeps_the_tensors_and_refuses_storage_keys(tmp_path: Path, score_net: ScoreUNet) -> None:
    from sdesr_gui.core.models.checkpoint import convert_checkpoint, file_sha256, update_metadata

    src, q = tmp_path / "a.safetensors", tmp_path / "q.safetensors"
    save_checkpoint(src, score_net, metadata={"name": "a"})
    convert_checkpoint(src, q, quantize="int8")
    before = load_checkpoint(q)[1]
    dst = tmp_path / "b.safetensors"
    meta = update_metadata(q, dst, {"uncertainty_scale": 1.2, "name": "b"})
    model, loaded = load_checkpoint(dst)  # the tensor hash is checked on load
    assert loaded["uncertainty_scale"] == 1.2 and loaded["name"] == "b" and meta == loaded
    assert loaded["tensor_sha256"] == before["tensor_sha256"] and loaded["quantization"] == before["quantization"]
    ref = load_checkpoint(q)[0].state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    digest = file_sha256(q)
    for key in ("tensor_sha256", "config", "quantization"):
        with pytest.raises(ValueError, match="cannot be updated"):
            update_metadata(q, q, {key: "x"})
    assert file_sha256(q) == digest  # nothing written


def test_int8_weight_without_its_scale_is_rejected(tmp_path: Path, score_net: ScoreUNet) -> None:
    from safetensors.torch import load_file, save_file

    from sdesr_gui.core.models.checkpoint import QUANT_SCALE_SUFFIX, tensor_sha256

    path = tmp_path / "q.safetensors"
    save_checkpoint(path, score_net, metadata=_meta(), quantize="int8")
    meta = read_metadata(path)
    tensors = load_file(str(path))
    drop = next(k for k in tensors if k.endswith(QUANT_SCALE_SUFFIX))
    del tensors[drop]
    meta["tensor_sha256"] = tensor_sha256(tensors)  # a consistent hash: only the scale is missing
    save_file(tensors, str(path), metadata={"sdesr": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="scale"):
        load_checkpoint(path)


def test_classifier_checkpoint_round_trip(tmp_path: Path) -> None:
    clf = _randomise(AttributeClassifier(AttributeClassifierConfig.tiny()))
    path = tmp_path / "clf.safetensors"
    save_checkpoint(path, clf, kind="classifier", config=clf.config.to_dict(), metadata={})
    model, meta = load_checkpoint(path)
    assert isinstance(model, AttributeClassifier) and meta["kind"] == "classifier"
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x, 0.5), clf(x, 0.5))


def test_tampered_tensor_is_rejected(tmp_path: Path, score_net: ScoreUNet) -> None:
    path = tmp_path / "score.safetensors"
    save_checkpoint(path, score_net, kind="score", config=score_net.config.to_dict(), metadata={})
    data = bytearray(path.read_bytes())
    header_len = struct.unpack("<Q", bytes(data[:8]))[0]
    assert len(data) > 8 + header_len
    data[-3] ^= 0x01  # flip one bit inside the tensor data
    path.write_bytes(bytes(data))
    read_metadata(path)  # the header is intact
    with pytest.raises(CheckpointError, match="hash"):
        load_checkpoint(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_metadata(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError):
        file_sha256(tmp_path / "nope.safetensors")


def test_not_a_safetensors_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"this is not a safetensors file at all")
    for fn in (load_checkpoint, read_metadata):
        with pytest.raises(CheckpointError, match="not a readable safetensors file"):
            fn(path)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError):
        load_checkpoint(empty)


def test_file_without_metadata(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(CheckpointError, match="no sdesr-gui metadata"):
        load_checkpoint(path)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(other), metadata={"sdesr": "{not json"})
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_metadata(other)


def test_wrong_format_and_unknown_kind(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "fmt.safetensors"
    meta = {"format": "other/9", "kind": "score", "config": {}, "tensor_sha256": "0" * 64}
    save_file({"w": torch.zeros(3)}, str(path), metadata={"sdesr": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="format"):
        load_checkpoint(path)
    meta.update(format=CHECKPOINT_FORMAT, kind="vae")
    save_file({"w": torch.zeros(3)}, str(path), metadata={"sdesr": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="unknown model kind"):
        load_checkpoint(path)


def test_truncated_file(tmp_path: Path, score_net: ScoreUNet) -> None:
    path = tmp_path / "score.safetensors"
    save_checkpoint(path, score_net, kind="score", config=score_net.config.to_dict(), metadata={})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_import_torch_state(tmp_path: Path, score_net: ScoreUNet) -> None:
    path = tmp_path / "foreign.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in score_net.state_dict().items()},
                "epoch": 3}, path)
    state = import_torch_state(path)
    assert set(state) == set(score_net.state_dict())
    net = ScoreUNet(score_net.config)
    net.load_state_dict(state)

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        import_torch_state(bad)


# ----------------------------------------------------------------------------- full-resolution head
def _patch_cfg(full: int) -> ScoreNetConfig:
    return ScoreNetConfig(channels=(16, 24), blocks_per_level=1, attn_resolutions=(8,), emb_dim=16,
                          attn_heads=1, patch=4, full_res_channels=full)


def test_full_res_head_starts_as_identity_on_a_trained_patch_net() -> None:
    """A new (zero-initialised) head leaves the patch U-Net's denoiser unchanged, and its
    parameters are the only ones the patch net lacks: the warm start the v2 run relied on."""
    torch.manual_seed(0)
    base = _randomise(ScoreUNet(_patch_cfg(0)))
    headed = ScoreUNet(_patch_cfg(8)).eval()
    missing, unexpected = headed.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and {k.split(".")[0] for k in missing} == {"full_proj", "full_mix", "full_out"}
    x, y_up = _inputs(2, 64)
    with torch.no_grad():
        torch.testing.assert_close(headed(x, 0.05, y_up), base(x, 0.05, y_up))
    # once the head has weights it changes the output at full resolution, per pixel
    _randomise(headed, seed=3)
    with torch.no_grad():
        d = headed(x, 0.05, y_up)
    assert d.shape == x.shape and torch.isfinite(d).all()
    x2 = x.clone()
    x2[:, :, 0, 0] += 0.5  # one pixel: the output moves at that pixel (not only patch-wise)
    with torch.no_grad():
        d2 = headed(x2, 0.05, y_up)
    assert (d2 - d)[:, :, 0, 0].abs().max() > 0


def test_full_res_head_needs_a_patch_net() -> None:
    with pytest.raises(ValueError, match="patch"):
        ScoreNetConfig(channels=(8, 16), full_res_channels=8)
    assert ScoreNetConfig.from_dict({k: v for k, v in ScoreNetConfig.v2().to_dict().items()
                                     if k != "full_res_channels"}).full_res_channels == 0
