"""core.enhance: sampling under each SDE with both samplers, the mean estimate, the SDE guard.

The score model is a tiny random network (pixel-unshuffled, no attention: fast on a CPU), so
the pictures are noise; these tests check finiteness, determinism and the run record.
"""

import dataclasses

import numpy as np
import pytest
import torch

from sdesr_gui.core import faces
from sdesr_gui.core import sampling as S
from sdesr_gui.core.enhance import MEAN_ESTIMATE_WHAT, Enhancer, SamplerSettings
from sdesr_gui.core.models import ScoreNetConfig, ScoreUNet
from sdesr_gui.core.sde import DEFAULT_SDE, SDES, SubVPSDE, VESDE, VPSDE, make_sde


@pytest.fixture(scope="module")
def enhancer():
    torch.manual_seed(0)
    cfg = dataclasses.replace(ScoreNetConfig.tiny(), attn_resolutions=(), patch=4)
    model = ScoreUNet(cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # fresh models have zero-init convs: make the network do something
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return Enhancer(model, VESDE(), model_info={"name": "tiny"})


def lr_face(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return faces.quantize(torch.rand(1, 3, 16, 16, generator=g))


def test_sde_table():
    assert list(SDES) == ["ve", "vp", "subvp"] and DEFAULT_SDE == "ve"
    assert (SDES["ve"], SDES["vp"], SDES["subvp"]) == (VESDE, VPSDE, SubVPSDE)
    for name, cls in SDES.items():
        assert cls.name == name and cls.label and cls.summary.endswith(".")
        assert type(make_sde(name)) is cls
    # the PC step limit: VP / sub-VP need every beta(t) dt < 1, VE has none
    assert VESDE().pc_min_steps() == 1
    assert VPSDE().pc_min_steps() == SubVPSDE().pc_min_steps() == 21
    vp = VPSDE()
    for n, ok in ((20, False), (21, True)):
        dt = (vp.T - vp.eps) / (n - 1)
        assert (float(vp.beta(torch.tensor(vp.T))) * dt < 1) == ok


def test_validate_refuses_pc_under_vp_with_too_few_steps():
    with pytest.raises(ValueError) as err:
        SamplerSettings(sampler="pc", sde="vp", steps=10).validate()
    msg = str(err.value)
    assert "VP" in msg and "at least 21 steps" in msg and msg.endswith(".") and msg.count(". ") == 0
    with pytest.raises(ValueError, match="at least 21 steps"):
        SamplerSettings(sampler="pc", sde="subvp", steps=20).validate()
    SamplerSettings(sampler="pc", sde="vp", steps=21).validate()
    SamplerSettings(sampler="pc", sde="ve", steps=10).validate()  # VE has no such limit
    SamplerSettings(sampler="fast", sde="vp", steps=10).validate()  # nor the fast sampler
    with pytest.raises(ValueError, match="Unknown SDE 'edm'; choose one of ve, vp, subvp."):
        SamplerSettings(sde="edm").validate()
    # the sampler itself refuses too (it would return all-NaN samples)
    with pytest.raises(ValueError, match="at least 21 steps"):
        S.pc_sample(lambda x, t: -x, VPSDE(), (1, 2, 2), S.NoiseSource([0]), n_steps=10)


@pytest.mark.parametrize("sde", list(SDES))
@pytest.mark.parametrize("sampler", ["fast", "pc"])
def test_samples_are_finite_under_each_sde(enhancer, sde, sampler):
    kw = {"steps": 3} if sampler == "fast" else {"steps": 21, "corrector_steps": 1}
    s = SamplerSettings(sampler=sampler, sde=sde, samples=2, seed=5, **kw)
    res = enhancer.run(lr_face(), s)
    assert res.samples.shape == (2, 3, 128, 128) and torch.isfinite(res.samples).all()
    assert 0 <= float(res.samples.min()) and float(res.samples.max()) <= 1
    assert res.settings["sde"] == sde and res.settings["sde_params"]["type"] == sde
    assert res.nfe == (3 if sampler == "fast" else 42)
    if sde == "ve":  # the model's own SDE and sigma range
        assert res.settings["sde_params"] == enhancer.sde.to_dict()
    else:
        assert res.settings["sde_params"] == make_sde(sde).to_dict()


def test_mean_estimate_is_the_denoiser_at_sigma_max(enhancer):
    lr = lr_face(2)
    mean = enhancer.mean_estimate(lr)
    assert mean.shape == (1, 3, 128, 128) and mean.device.type == "cpu"
    assert torch.equal(mean, enhancer.mean_estimate(lr))  # deterministic
    # by hand: the denoiser at the trained VE sigma_max, fixed seeded noise; the default averages
    # it with the estimate of the mirrored input (noise field mirrored too), flipped back
    y_up = faces.upsample(lr, faces.FRAME_SIZE)
    z = torch.randn(3, 128, 128, generator=torch.Generator().manual_seed(S.MEAN_ESTIMATE_SEED))
    x = y_up + 348.0 * z
    with torch.no_grad():
        d = enhancer.model.denoise(x, 348.0, y_up)
        dm = enhancer.model.denoise(x.flip(-1), 348.0, y_up.flip(-1)).flip(-1)
    one = enhancer.mean_estimate(lr, mirror=False)
    assert torch.allclose(one, d.clamp(0, 1), atol=1e-6)
    assert torch.allclose(mean, (0.5 * (d + dm)).clamp(0, 1), atol=1e-5)
    assert not torch.allclose(mean, one, atol=1e-4)  # the tiny network is not mirror-symmetric
    assert not torch.allclose(mean, y_up.clamp(0, 1), atol=1e-3)  # the network did contribute

    # every run returns it, whatever the sampler and SDE, and says what it is
    for s in (SamplerSettings(steps=2, seed=1), SamplerSettings(sampler="fast", sde="vp", steps=2, seed=9)):
        res = enhancer.run(lr, s)
        assert torch.equal(res.mean, mean)
        assert res.settings["mean_estimate"] == {"what": MEAN_ESTIMATE_WHAT, "sigma": 348.0,
                                                 "noise_seed": S.MEAN_ESTIMATE_SEED, "mirror": True,
                                                 "evaluations": 2}
        assert "not a sample" in res.settings["mean_estimate"]["what"]
        assert "mirror image" in res.settings["mean_estimate"]["what"]
    res = enhancer.run(lr, SamplerSettings(steps=2, mean_mirror=False))
    assert torch.equal(res.mean, one)
    assert res.settings["mean_estimate"]["evaluations"] == 1
    assert "one network evaluation" in res.settings["mean_estimate"]["what"]


def test_mirror_averaged_sampling_is_recorded_and_changes_the_samples(enhancer):
    """--mirror: every denoiser call is the average over the left-right flip (mirror_denoise,
    checked below); the run is recorded, deterministic, and differs from the plain sampler."""
    lr = lr_face(3)
    plain = enhancer.run(lr, SamplerSettings(steps=3, seed=4))
    mir = enhancer.run(lr, SamplerSettings(steps=3, seed=4, mirror=True))
    again = enhancer.run(lr, SamplerSettings(steps=3, seed=4, mirror=True))
    assert torch.equal(mir.samples, again.samples)
    assert not torch.allclose(mir.samples, plain.samples, atol=1e-4)
    assert mir.settings["mirror"] is True and plain.settings["mirror"] is False
    assert mir.nfe == plain.nfe  # evaluations of the sampler's schedule; each is twice the work


def test_samples_started_from_the_mean_estimate(enhancer):
    """start_sigma: the fast sampler starts from the mean estimate diffused to that level, so its
    samples stay nearer the mean estimate than posterior samples do, and the lower the level the
    nearer; run() and run_many() agree, the record says so, PC and bad levels are refused."""
    lr = lr_face(4)

    def rms_to_mean(res):
        return float((res.samples - res.mean).pow(2).mean().sqrt())

    post = enhancer.run(lr, SamplerSettings(steps=6, samples=3, seed=2))
    near = [enhancer.run(lr, SamplerSettings(steps=6, samples=3, seed=2, start_sigma=s)) for s in (0.1, 0.02)]
    assert post.settings["start_sigma"] is None
    assert [r.settings["start_sigma"] for r in near] == [0.1, 0.02]
    assert rms_to_mean(post) > rms_to_mean(near[0]) > rms_to_mean(near[1])
    assert all(torch.equal(r.mean, post.mean) for r in near)  # the same estimate, computed first
    assert not torch.allclose(near[1].samples[0], near[1].samples[1], atol=1e-4)  # still samples
    # run_many (evaluations, batches of faces) gives face i with seed + i the same sample
    many = enhancer.run_many(torch.cat([lr_face(5), lr]), SamplerSettings(steps=6, seed=1, start_sigma=0.02))
    assert torch.allclose(many[1], near[1].samples[0], atol=1e-5)
    # refusals, one sentence each
    with pytest.raises(ValueError, match="^Starting from the mean estimate is offered for the fast sampler only.$"):
        SamplerSettings(sampler="pc", start_sigma=0.5).validate()
    with pytest.raises(ValueError, match="^The start noise level must be above 0.$"):
        SamplerSettings(start_sigma=0.0).validate()
    for bad in (400.0, 0.005):
        with pytest.raises(ValueError, match="^The start noise level must be above 0.01 and at most 348, the VE SDE's range.$"):
            enhancer.run(lr, SamplerSettings(steps=2, start_sigma=bad))
    assert "start_sigma" not in SamplerSettings(sampler="pc").to_dict()


def test_mirror_denoise_is_the_flip_average():
    from sdesr_gui.core.sampling import mirror_denoise

    class Lopsided(torch.nn.Module):  # a "denoiser" that favours the left: D(x) = x * ramp
        def denoise(self, x, sigma, y):
            ramp = torch.linspace(0, 1, x.shape[-1])
            sig = sigma if torch.is_tensor(sigma) and sigma.ndim else torch.full((x.shape[0],), float(sigma))
            return x * ramp + y + sig.view(-1, 1, 1, 1)

    m = Lopsided()
    x, y = torch.randn(2, 3, 4, 6), torch.randn(2, 3, 4, 6)
    sig = torch.tensor([0.5, 2.0])
    assert torch.equal(mirror_denoise(m, x, sig, y), m.denoise(x, sig, y))
    avg = mirror_denoise(m, x, sig, y, mirror=True)
    ramp = torch.linspace(0, 1, 6)
    want = x * 0.5 * (ramp + ramp.flip(0)) + y + sig.view(-1, 1, 1, 1)  # the ramp averaged with its mirror
    assert torch.allclose(avg, want, atol=1e-6)
    assert torch.allclose(mirror_denoise(m, x, 1.5, y, mirror=True), x * 0.5 + y + 1.5, atol=1e-6)


def test_pick_score_model_by_face_size_and_file(tmp_path, monkeypatch, tiny_weights):
    import shutil

    from sdesr_gui.core.enhance import AUTO_MODEL, pick_score_model
    from sdesr_gui.core.errors import InputError

    wdir = tmp_path / "w"
    wdir.mkdir()
    shutil.copy(tiny_weights["score"], wdir / "sdesr_ve_8x.safetensors")
    monkeypatch.setenv("SDESR_WEIGHTS_DIR", str(wdir))
    # only the 8x model installed: a tiny face falls back to it, and the reason says so
    p = pick_score_model(AUTO_MODEL, (16, 16, 3), face_px=9.0)
    assert p.scale == 8 and "not installed" in p.why and p.automatic
    with pytest.raises(InputError, match="No 16x model"):
        pick_score_model(AUTO_MODEL, (8, 8, 3))  # an 8x8 LR has no 8x reading
    shutil.copy(tiny_weights["score16"], wdir / "sdesr_ve_16x.safetensors")
    p = pick_score_model(None, (16, 16, 3), face_px=9.0)
    assert p.scale == 16 and p.weights.name == "sdesr_ve_16x.safetensors" and "9 px" in p.why
    assert pick_score_model(AUTO_MODEL, (16, 16, 3), face_px=30.0).scale == 8
    assert pick_score_model(AUTO_MODEL, (16, 16, 3)).scale == 8
    assert pick_score_model(AUTO_MODEL, (8, 8, 3)).scale == 16
    chosen = pick_score_model(tiny_weights["score16"], (16, 16, 3), face_px=40.0)
    assert chosen.scale == 16 and not chosen.automatic  # a chosen file is used as it is
    with pytest.raises(InputError):
        pick_score_model(tmp_path / "missing.safetensors", (16, 16, 3))


def test_a_selection_at_16x_reads_8x8_from_its_crop(astronaut_face):
    from sdesr_gui.core import faces, selection
    from sdesr_gui.core.errors import InputError

    sel = selection.whole_image(astronaut_face)
    s16 = selection.at_scale(sel, 16, "asked")
    assert s16.lr.shape == (8, 8, 3) and s16.scale == 16 and s16.details["scale_why"] == "asked"
    assert np.array_equal(s16.lr, faces.lr_from_frame(astronaut_face, 8))
    assert selection.at_scale(s16, 8).lr.shape == (16, 16, 3)  # from the crop again
    lr16 = selection.whole_image(sel.lr)
    assert lr16.kind == "lr" and selection.at_scale(lr16, 16).lr.shape == (8, 8, 3)
    lr8 = selection.whole_image(s16.lr)
    assert lr8.kind == "lr" and lr8.scale == 16 and "16× model" in lr8.note
    with pytest.raises(InputError, match="too few pixels"):
        selection.at_scale(lr8, 8)


def test_a_model_refuses_an_lr_of_the_other_scale(tiny_weights):
    """A 16x16 LR given to the 16x model (or 8x8 to the 8x one) is refused in one sentence, never
    super-resolved from the wrong degradation; the model's own size runs."""
    from sdesr_gui.core.errors import InputError

    e16 = Enhancer.from_files(tiny_weights["score16"])
    e8 = Enhancer.from_files(tiny_weights["score"])
    lr16 = torch.rand(2, 3, 16, 16)
    lr8 = torch.rand(2, 3, 8, 8)
    st = SamplerSettings(steps=2)
    for enh, wrong, right in ((e16, lr16, lr8), (e8, lr8, lr16)):
        for call in (lambda x: enh.mean_estimate(x), lambda x: enh.run_many(x, st),
                     lambda x: enh.run(x[:1], st)):
            with pytest.raises(InputError, match=rf"{enh.lr_size}x{enh.lr_size} LR faces; it was given a "
                                                 rf"{wrong.shape[-1]}x{wrong.shape[-1]} one"):
                call(wrong)
            assert call(right) is not None
    with pytest.raises(InputError, match="LR faces"):
        e8.mean_estimate(torch.rand(3, 16, 16))  # no batch dimension
