"""Samplers checked against exact maths: Gaussian data have a known score, steps are hand-computed."""

import inspect
import math

import pytest
import torch

from sdesr_gui.core import sampling as S
from sdesr_gui.core.sde import SubVPSDE, VESDE, VPSDE

MU, S0 = 0.4, 0.2  # target: every pixel ~ N(MU, S0^2) independently
SHAPE = (1, 64, 64)
K = 16


def gaussian_score(sde):
    """Exact score of p_t when x_0 ~ N(MU, S0^2): x_t ~ N(s MU, s^2 S0^2 + std^2)."""

    def score(x, t):
        s = S.bcast(sde.mean_coeff(t), x).to(x.dtype)
        std = S.bcast(sde.marginal_std(t), x).to(x.dtype)
        return -(x - s * MU) / (s**2 * S0**2 + std**2)

    return score


def assert_target(x, tol_mean=0.01, tol_std=0.05):
    assert torch.isfinite(x).all()
    assert float(x.mean()) == pytest.approx(MU, abs=tol_mean)
    assert float(x.std()) == pytest.approx(S0, rel=tol_std)


@pytest.mark.parametrize(
    "sde,predictor,corrector,n",
    [
        (VESDE(), "reverse_diffusion", "langevin", 400),
        (VESDE(), "euler_maruyama", "none", 1000),
        (VESDE(), "none", "langevin", 200),
        (VPSDE(), "reverse_diffusion", "langevin", 400),
        (VPSDE(), "euler_maruyama", "langevin", 400),
        (SubVPSDE(), "euler_maruyama", "none", 400),
    ],
    ids=lambda v: getattr(v, "name", str(v)),
)
def test_pc_sampler_recovers_gaussian(sde, predictor, corrector, n):
    torch.manual_seed(0)
    m = 0 if corrector == "none" else (1 if predictor != "none" else 5)  # annealed Langevin needs more
    res = S.pc_sample(gaussian_score(sde), sde, SHAPE, S.NoiseSource(range(K)), n_steps=n,
                      predictor=predictor, corrector=corrector, corrector_steps=m, snr=0.16)
    assert res.samples.shape == (K, *SHAPE)
    assert res.nfe == n * (m + (predictor != "none"))
    assert_target(res.samples)


@pytest.mark.parametrize("sde", [VESDE(), VPSDE(), SubVPSDE()], ids=lambda s: s.name)
@pytest.mark.parametrize("method", ["dpmpp_2m", "dpmpp_2m_sde"])
def test_fast_sampler_recovers_gaussian(sde, method):
    """40 steps of either one-evaluation method; the SDE method over-disperses a little more
    (std +3.4 to +5.3 % on this target, the ODE method +1.2 to +2.0 %)."""
    res = S.fast_sample(gaussian_score(sde), sde, SHAPE, S.NoiseSource(range(K)), n_steps=40, method=method)
    assert res.nfe == 40 <= S.FAST_MAX_NFE
    assert_target(res.samples, tol_std=0.05 if method == "dpmpp_2m" else 0.07)


def test_sde_method_steps_by_hand_and_draws_fresh_noise_each_step():
    """SDE-DPM-Solver++(2M) with a denoiser that always answers c: x_next = q x + (1 - q) c +
    sigma_next sqrt(1 - q) z, q = (sigma_next / sigma)^2 (the multistep estimate of a constant
    is the constant); the last step returns the denoising.  The noise z comes from the run's
    seeded source after the start draw, so a seed reproduces the sample and another changes it."""
    sde, c = VESDE(), 0.3
    ones_score = lambda x, t: (c - x) / S.bcast(sde.marginal_std(t), x).to(x.dtype) ** 2  # D = c
    shape, seeds = (1, 4, 4), [5]
    sigmas = S.karras_sigmas(3, sde.sigma_min, sde.sigma_max)
    res = S.fast_sample(ones_score, sde, shape, S.NoiseSource(seeds), n_steps=3, method="dpmpp_2m_sde")
    src = S.NoiseSource(seeds)
    x = src.randn(shape) * float(sigmas[0])
    for i in range(2):
        q = (float(sigmas[i + 1]) / float(sigmas[i])) ** 2
        x = q * x + (1 - q) * c + float(sigmas[i + 1]) * math.sqrt(1 - q) * src.randn_like(x)
    assert res.nfe == 3
    assert torch.allclose(res.samples, torch.full_like(x, c))  # the last step: x = D
    # the step before the last, seen through the callback, matches the hand computation
    seen = []
    S.fast_sample(ones_score, sde, shape, S.NoiseSource(seeds), n_steps=3, method="dpmpp_2m_sde",
                  callback=seen.append)
    assert torch.allclose(seen[1].x, x, atol=1e-4)  # float32 rounding from sigma 348 down
    again = []
    S.fast_sample(ones_score, sde, shape, S.NoiseSource(seeds), n_steps=3, method="dpmpp_2m_sde",
                  callback=again.append)
    other = []
    S.fast_sample(ones_score, sde, shape, S.NoiseSource([6]), n_steps=3, method="dpmpp_2m_sde",
                  callback=other.append)
    assert torch.equal(again[1].x, seen[1].x) and not torch.allclose(other[1].x, seen[1].x)


def test_heun_sampler_recovers_gaussian():
    """Heun's method within 40 evaluations is less accurate on this wide sigma range (~9 %)."""
    sde = VESDE()
    res = S.fast_sample(gaussian_score(sde), sde, SHAPE, S.NoiseSource(range(K)), n_steps=20, method="heun")
    assert res.nfe == 39
    assert_target(res.samples, tol_std=0.12)
    # starting lower (a conditional model needs no sigma 348) is more accurate
    res = S.fast_sample(gaussian_score(sde), sde, SHAPE, S.NoiseSource(range(K)), n_steps=20,
                        method="heun", sigma_max=80.0)
    assert_target(res.samples, tol_std=0.06)


@pytest.mark.parametrize("method", S.FAST_METHODS)
def test_fast_sampler_with_churn_recovers_gaussian(method):
    sde = VESDE()
    kw = {"n_steps": 20, "sigma_max": 80.0} if method == "heun" else {"n_steps": 40}
    res = S.fast_sample(gaussian_score(sde), sde, SHAPE, S.NoiseSource(range(K)), churn=10,
                        method=method, **kw)
    # Heun's 20 steps overshoot the variance a little more with churn (measured ~11 %)
    assert_target(res.samples, tol_std={"dpmpp_2m": 0.03, "dpmpp_2m_sde": 0.07}.get(method, 0.13))


@pytest.mark.parametrize("sde", [VESDE(), VPSDE(), SubVPSDE()], ids=lambda s: s.name)
def test_fast_sampler_started_from_the_mean(sde):
    """x_init = the target's mean diffused to sigma0 (not pure noise at the top): the ODE of a
    Gaussian target scales x - MU by sqrt(S0^2 + sigma^2) / sqrt(S0^2 + sigma0^2), so the samples
    keep the mean and shrink their std from S0 to sigma0 S0 / sqrt(S0^2 + sigma0^2)."""
    for sigma0 in (0.2, 0.05):
        res = S.fast_sample(gaussian_score(sde), sde, SHAPE, S.NoiseSource(range(K)), n_steps=20,
                            sigma_max=sigma0, x_init=torch.full(SHAPE, MU))
        assert float(res.samples.mean()) == pytest.approx(MU, abs=0.005)
        assert float(res.samples.std()) == pytest.approx(sigma0 * S0 / math.hypot(S0, sigma0), rel=0.03)
    # from the top of the range the start hardly matters: the posterior again
    res = S.fast_sample(gaussian_score(sde), sde, SHAPE, S.NoiseSource(range(K)), n_steps=40,
                        x_init=torch.full(SHAPE, MU + 0.3))
    assert_target(res.samples)


def test_fast_sampler_refuses_more_than_40_evaluations():
    with pytest.raises(ValueError, match="at most 40 network evaluations"):
        S.fast_sample(gaussian_score(VESDE()), VESDE(), SHAPE, S.NoiseSource([0]), n_steps=41)
    with pytest.raises(ValueError, match="1 to 20 steps"):
        S.fast_sample(gaussian_score(VESDE()), VESDE(), SHAPE, S.NoiseSource([0]), n_steps=21, method="heun")


def test_langevin_step_size_follows_r_formula():
    score = torch.full((2, 4), 2.0)  # ||score|| = 4
    z = torch.ones(2, 4)  # ||z|| = 2
    z[1] *= 3  # ||z|| = 6 for the second sample: sizes are per sample
    eps = S.langevin_step_size(score, z, 0.16, torch.tensor([1.0, 0.5]))
    assert eps[0].item() == pytest.approx(2 * 1.0 * (0.16 * 2 / 4) ** 2)
    assert eps[1].item() == pytest.approx(2 * 0.5 * (0.16 * 6 / 4) ** 2)


def test_hand_computed_steps():
    torch.manual_seed(1)
    x, score, z = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    t = torch.tensor([0.6, 0.6], dtype=torch.float32)
    tn = torch.tensor([0.55, 0.55], dtype=torch.float32)
    # reverse diffusion, VE: x' = x + (sigma_t^2 - sigma_next^2) s, + sqrt(.) z
    ve = VESDE()
    sig, sign = 0.01 * 34800**0.6, 0.01 * 34800**0.55
    new, mean = S.reverse_diffusion_step(ve, x, t, tn, score, z)
    assert torch.allclose(mean, x + (sig**2 - sign**2) * score, rtol=1e-5, atol=1e-4)
    assert torch.allclose(new, mean + math.sqrt(sig**2 - sign**2) * z, rtol=1e-5, atol=1e-4)
    # reverse diffusion, VP (ancestral DDPM form): x' = (2 - sqrt(1 - b)) x + b s, b = beta(t) dt
    vp = VPSDE()
    b = (0.1 + 0.6 * 19.9) * 0.05
    new, mean = S.reverse_diffusion_step(vp, x, t, tn, score, z)
    assert torch.allclose(mean, (2 - math.sqrt(1 - b)) * x + b * score, atol=1e-5)
    assert torch.allclose(new, mean + math.sqrt(b) * z, atol=1e-5)
    # Euler-Maruyama, VE: g^2 = sigma^2 2 log(smax/smin)
    g2 = sig**2 * 2 * math.log(34800)
    new, mean = S.euler_maruyama_step(ve, x, t, tn, score, z)
    assert torch.allclose(mean, x + g2 * 0.05 * score, rtol=1e-5, atol=1e-3)
    assert torch.allclose(new, mean + math.sqrt(g2 * 0.05) * z, rtol=1e-5, atol=1e-3)
    # Euler-Maruyama, VP: x' = x - (-beta/2 x - beta s) dt
    beta = 0.1 + 0.6 * 19.9
    new, mean = S.euler_maruyama_step(vp, x, t, tn, score, z)
    assert torch.allclose(mean, x + (0.5 * beta * x + beta * score) * 0.05, atol=1e-5)
    # Langevin: x' = x + eps s + sqrt(2 eps) z with eps from the r formula
    new, mean = S.langevin_step(x, score, z, 0.16, torch.ones(2))
    for i in range(2):
        e = 2 * (0.16 * z[i].norm() / score[i].norm()) ** 2
        assert torch.allclose(mean[i], x[i] + e * score[i], atol=1e-6)
        assert torch.allclose(new[i], mean[i] + torch.sqrt(2 * e) * z[i], atol=1e-6)


def test_pc_sampler_one_step_by_hand():
    """N=1, M=1 on the VE SDE: prior draw, one Langevin step at t=T, one predictor step to sigma 0."""
    sde = VESDE()
    score = gaussian_score(sde)
    res = S.pc_sample(score, sde, (1, 2, 2), S.NoiseSource([7]), n_steps=1, corrector_steps=1, snr=0.2)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 1, 2, 2, generator=g) * 348.0
    t = torch.ones(1)
    s = score(x, t)
    z = torch.randn(1, 1, 2, 2, generator=g)
    e = 2 * (0.2 * z.norm() / s.norm()) ** 2
    x = x + e * s + torch.sqrt(2 * e) * z
    x_mean = x + 348.0**2 * score(x, t)  # to noise level 0, noise-free mean returned
    assert torch.allclose(res.samples, x_mean, rtol=1e-4, atol=1e-3)
    assert res.nfe == 2


def test_sample_k_reproduces_alone_and_seeds_differ():
    sde = VESDE()
    sc = gaussian_score(sde)
    both = S.pc_sample(sc, sde, SHAPE, S.NoiseSource([11, 12]), n_steps=30, corrector_steps=1).samples
    alone = S.pc_sample(sc, sde, SHAPE, S.NoiseSource([12]), n_steps=30, corrector_steps=1).samples
    assert torch.allclose(both[1], alone[0], atol=1e-5)
    assert not torch.allclose(both[0], both[1])
    again = S.fast_sample(sc, sde, SHAPE, S.NoiseSource([3, 4]), n_steps=5, churn=5).samples
    assert torch.equal(again, S.fast_sample(sc, sde, SHAPE, S.NoiseSource([3, 4]), n_steps=5, churn=5).samples)
    assert not torch.equal(again[0], again[1])


class LinearClassifier(torch.nn.Module):
    """logit_a = w_a . x_hat + b_a: grad_x log sigmoid(+-logit) = +-(1 - sigmoid(+-logit)) w."""

    attributes = ("male", "beard", "eyeglasses")

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(3, 4, generator=g) * 0.1
        self.b = torch.tensor([0.2, -0.3, 0.1])
        self.calls = 0

    def forward(self, x, sigma):
        self.calls += 1
        return x.reshape(x.shape[0], -1) @ self.w.T + self.b


def test_guidance_adds_h_times_classifier_gradient():
    sde = VESDE()
    base = gaussian_score(sde)
    clf = LinearClassifier()
    x = torch.randn(2, 1, 2, 2)
    t = torch.full((2,), 0.3)
    guided = S.guided_score_fn(base, clf, sde, {"male": 1, "beard": 0, "eyeglasses": None}, h=500.0)
    got = guided(x, t)
    logits = x.reshape(2, -1) @ clf.w.T + clf.b
    grad = (1 - torch.sigmoid(logits[:, 0:1])) * clf.w[0] - (1 - torch.sigmoid(-logits[:, 1:2])) * clf.w[1]
    assert torch.allclose(got, base(x, t) + 500.0 * grad.reshape(2, 1, 2, 2), atol=1e-4)
    # unknown attributes add nothing, h=0 adds nothing
    assert S.guided_score_fn(base, clf, sde, {"male": None}, h=500.0) is base
    assert S.guided_score_fn(base, clf, sde, {"male": 1}, h=0.0) is base
    with pytest.raises(ValueError, match="no attribute"):
        S.guided_score_fn(base, clf, sde, {"hat": 1}, h=1.0)


def test_guidance_interval_guides_only_at_high_noise():
    """sigma_min: the guidance term is h * grad where sigma(t) >= sigma_min and exactly 0 below
    (without calling the classifier), per batch element."""
    sde = VESDE()
    base = gaussian_score(sde)
    clf = LinearClassifier()
    full = S.guided_score_fn(base, clf, sde, {"male": 1}, h=100.0)
    windowed = S.guided_score_fn(base, clf, sde, {"male": 1}, h=100.0, sigma_min=0.5)
    x = torch.randn(2, 1, 2, 2)
    t_hi = sde.t_from_sigma(torch.tensor([2.0, 2.0]))
    t_lo = sde.t_from_sigma(torch.tensor([0.1, 0.1]))
    assert torch.allclose(windowed(x, t_hi), full(x, t_hi))
    calls = clf.calls
    assert torch.equal(windowed(x, t_lo), base(x, t_lo)) and clf.calls == calls
    mixed = sde.t_from_sigma(torch.tensor([2.0, 0.1]))
    got = windowed(x, mixed)
    assert torch.allclose(got[0], full(x, mixed)[0]) and torch.equal(got[1], base(x, mixed)[1])


def test_guidance_cap_limits_each_samples_push_to_a_share_of_the_models_score():
    """max_ratio: per sample, ||guided - base|| <= max_ratio * ||base||, direction kept; a sample
    whose guidance is already below the cap is unchanged; 0 = no cap."""
    sde = VESDE()
    base = gaussian_score(sde)
    clf = LinearClassifier()
    x = torch.randn(3, 1, 2, 2)
    t = sde.t_from_sigma(torch.tensor([0.3, 0.3, 0.3]))
    free = S.guided_score_fn(base, clf, sde, {"male": 1}, h=1e4)
    b, g = base(x, t), free(x, t) - base(x, t)
    ratio = (g.flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1))
    assert (ratio > 0.5).all()  # strong enough for the cap to bite
    capped = S.guided_score_fn(base, clf, sde, {"male": 1}, h=1e4, max_ratio=0.5)
    gc = capped(x, t) - b
    assert torch.allclose(gc.flatten(1).norm(dim=1), 0.5 * b.flatten(1).norm(dim=1), rtol=1e-4)
    cos = torch.nn.functional.cosine_similarity(gc.flatten(1), g.flatten(1))
    assert torch.allclose(cos, torch.ones(3), atol=1e-5)
    loose = S.guided_score_fn(base, clf, sde, {"male": 1}, h=1e4, max_ratio=float(ratio.max()) * 2)
    assert torch.allclose(loose(x, t), free(x, t))  # under the cap: untouched
    assert torch.allclose(S.guided_score_fn(base, clf, sde, {"male": 1}, h=1e4, max_ratio=0.0)(x, t), free(x, t))
    base_part, guided = capped.split(x, t)  # split gives the capped score too
    assert torch.allclose(guided, capped(x, t)) and torch.equal(base_part, b)
    assert capped.evaluations == 9 and capped.capped == 9  # 3 calls of 3 samples, every one capped
    assert loose.evaluations == 3 and loose.capped == 0
    with pytest.raises(ValueError, match="cap"):
        S.guided_score_fn(base, clf, sde, {"male": 1}, h=1.0, max_ratio=-1.0)


def test_guidance_used_in_predictor_and_corrector():
    sde = VESDE()
    clf = LinearClassifier()
    guided = S.guided_score_fn(gaussian_score(sde), clf, sde, {"male": 1}, h=1.0)
    res = S.pc_sample(guided, sde, (1, 2, 2), S.NoiseSource([0]), n_steps=5, corrector_steps=2)
    assert clf.calls == res.nfe == 15  # every score evaluation (2 corrector + 1 predictor per step)


def test_callback_and_cancel():
    sde = VESDE()
    seen = []
    S.pc_sample(gaussian_score(sde), sde, SHAPE, S.NoiseSource([0]), n_steps=10, corrector_steps=1,
                callback=seen.append)
    assert [i.step for i in seen] == list(range(1, 11)) and seen[-1].total == 10
    assert seen[-1].denoised.shape == (1, *SHAPE) and seen[0].sigma == pytest.approx(348.0)
    # the Tweedie estimate at the end is close to the data mean region
    assert abs(float(seen[-1].denoised.mean()) - MU) < 0.2
    calls = []

    def cancel_after_3():
        return len(calls) >= 3

    for fn, kw in [(S.pc_sample, {"n_steps": 10}), (S.fast_sample, {"n_steps": 10})]:
        calls.clear()
        with pytest.raises(S.SamplingCancelled):
            fn(gaussian_score(sde), sde, SHAPE, S.NoiseSource([0]), callback=calls.append,
               cancel=cancel_after_3, **kw)
        assert len(calls) == 3  # stopped before the 4th step


class RecordingScore:
    """Wraps a guided score and records every evaluation (x, t, guided score)."""

    def __init__(self, inner):
        self.inner, self.evals = inner, []

    def split(self, x, t):
        own, sc = self.inner.split(x, t)
        self.evals.append((x.clone(), t.clone(), sc))
        return own, sc

    def __call__(self, x, t):
        return self.split(x, t)[1]


@pytest.mark.parametrize("sampler", ["pc", "pc_corrector_only", "pc_m1", "dpmpp_2m", "dpmpp_2m_sde", "heun"])
def test_preview_is_the_models_own_estimate_not_the_guided_one(sampler):
    """The live 'denoised' tile shows the network's own D(x, sigma) given the LR, not Tweedie's
    x + sigma^2 (score + guidance), which a huge guidance term blows up at high noise."""
    from sdesr_gui.core.models import AttributeClassifier, AttributeClassifierConfig, ScoreNetConfig, ScoreUNet

    torch.manual_seed(0)
    model = ScoreUNet(ScoreNetConfig.tiny()).eval()
    clf = AttributeClassifier(AttributeClassifierConfig.tiny()).eval()
    y_up = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    sde = VESDE()
    guided = S.guided_score_fn(S.model_score_fn(model, sde, y_up), clf, sde, {"male": 1, "beard": 0}, h=1e6)
    assert isinstance(guided, S.GuidedScore)
    rec = RecordingScore(guided)
    seen = []  # (report, the evaluation just before it)

    def callback(info):
        seen.append((info, rec.evals[-1]))

    shape, noise = (3, 32, 32), S.NoiseSource([3])
    with torch.no_grad():
        if sampler.startswith("pc"):
            pred, corr, m = {"pc": ("reverse_diffusion", "none", 0), "pc_corrector_only": ("none", "langevin", 1),
                             "pc_m1": ("reverse_diffusion", "langevin", 1)}[sampler]
            S.pc_sample(rec, sde, shape, noise, n_steps=4, predictor=pred, corrector=corr, corrector_steps=m,
                        callback=callback)
        else:
            S.fast_sample(rec, sde, shape, noise, n_steps=4, method=sampler, callback=callback)
    assert len(seen) == 4
    for k, (info, (x, t, sc)) in enumerate(seen):
        sigma = sde.marginal_std(t)
        with torch.no_grad():
            plain = model.denoise(x, sigma, y_up.expand_as(x))
        tol = 1e-5 * (1.0 + float(x.abs().max()))  # float32 rounding of x + sigma^2 (D - x) / sigma^2
        assert float((info.denoised - plain).abs().max()) < tol, (sampler, k)
    # at the top of the noise range (the prior draw, the first evaluation of a predictor-only PC
    # or a DPM-Solver++ run) the guided estimate is nowhere near an image; the preview is
    if sampler not in ("pc", "dpmpp_2m"):
        return
    info, (x, t, sc) = seen[0]
    assert float(sde.marginal_std(t)[0]) == pytest.approx(348.0, rel=1e-3)
    gap = float((S.tweedie(sde, x, t, sc) - info.denoised).abs().max())
    assert gap > 100.0 * (1.0 + float(info.denoised.abs().max())), gap
    # without guidance the preview is the same estimate the sampler steps with (nothing changed)
    plain_seen = []
    base = S.model_score_fn(model, sde, y_up)
    with torch.no_grad():
        S.fast_sample(base, sde, shape, S.NoiseSource([3]), n_steps=2, callback=plain_seen.append)
    assert torch.equal(plain_seen[-1].denoised, plain_seen[-1].x)  # last step: x = D


def test_pc_argument_errors():
    sde = VESDE()
    with pytest.raises(ValueError):
        S.pc_sample(gaussian_score(sde), sde, SHAPE, S.NoiseSource([0]), predictor="ode")
    with pytest.raises(ValueError):
        S.pc_sample(gaussian_score(sde), sde, SHAPE, S.NoiseSource([0]), predictor="none", corrector="none")


def test_karras_sigmas():
    s = S.karras_sigmas(5, 0.01, 348.0, 7.0)
    assert s[0].item() == pytest.approx(348.0) and s[4].item() == pytest.approx(0.01) and s[5] == 0
    assert torch.all(s[:-1][1:] < s[:-1][:-1])


# ------------------------------------------------------------------------------------------
# the registries: name -> function tables drive validation and the step limit
# ------------------------------------------------------------------------------------------
def one_sentence(msg: str) -> bool:
    return msg.endswith(".") and "\n" not in msg and ". " not in msg


def test_registries_name_the_samplers():
    assert list(S.PREDICTORS) == ["reverse_diffusion", "euler_maruyama", "none"]
    assert list(S.CORRECTORS) == ["langevin", "none"]
    assert list(S.FAST_METHODS) == ["dpmpp_2m", "dpmpp_2m_sde", "heun"]
    assert S.PREDICTORS["none"] is None and S.CORRECTORS["none"] is None
    assert S.PREDICTORS["reverse_diffusion"] is S.reverse_diffusion_step
    assert S.FAST_METHODS["heun"] is S.sample_heun and S.FAST_METHODS["dpmpp_2m_sde"] is S.sample_dpmpp_2m_sde
    assert {m: f.evals_per_step for m, f in S.FAST_METHODS.items()} == {"dpmpp_2m": 1, "dpmpp_2m_sde": 1, "heun": 2}


def test_unknown_names_are_refused_in_one_sentence():
    from sdesr_gui.core.enhance import SamplerSettings

    sde, sc = VESDE(), gaussian_score(VESDE())
    calls = [
        (lambda: S.pc_sample(sc, sde, SHAPE, S.NoiseSource([0]), predictor="ode"), S.PREDICTORS),
        (lambda: S.pc_sample(sc, sde, SHAPE, S.NoiseSource([0]), corrector="hmc"), S.CORRECTORS),
        (lambda: S.fast_sample(sc, sde, SHAPE, S.NoiseSource([0]), method="euler"), S.FAST_METHODS),
        (lambda: SamplerSettings(sampler="pc", predictor="ode").validate(), S.PREDICTORS),
        (lambda: SamplerSettings(sampler="pc", corrector="hmc").validate(), S.CORRECTORS),
        (lambda: SamplerSettings(fast_method="euler").validate(), S.FAST_METHODS),
        (lambda: SamplerSettings(sampler="ddim").validate(), ("fast", "pc")),
    ]
    for call, table in calls:
        with pytest.raises(ValueError) as err:
            call()
        msg = str(err.value)
        assert msg.startswith("Unknown ") and one_sentence(msg), msg
        assert msg.endswith(", ".join(table) + "."), msg  # the names come from the table


def test_fast_nfe_matches_evaluations_per_step():
    sde = VESDE()
    for method in S.FAST_METHODS:
        limit = S.fast_max_steps(method)
        assert S.fast_nfe(method, limit) <= S.FAST_MAX_NFE < S.fast_nfe(method, limit + 1)
        for n in (1, 2, 5):
            res = S.fast_sample(gaussian_score(sde), sde, (1, 2, 2), S.NoiseSource([0]), n_steps=n, method=method)
            assert res.nfe == S.fast_nfe(method, n), (method, n)
    assert [S.fast_max_steps(m) for m in ("dpmpp_2m", "dpmpp_2m_sde", "heun")] == [40, 40, 20]


def test_step_limit_follows_evaluations_per_step(monkeypatch):
    """A method with 3 evaluations per step gets (40 - 1) // 3 + 1 = 14 steps everywhere."""
    from sdesr_gui.core.enhance import SamplerSettings

    def triple(run, x):  # an Euler step that evaluates the denoiser three times (for counting)
        def update(x, den, sig_hat, sig_next):
            run.denoise(x, sig_hat), run.denoise(x, sig_hat)
            return den + (sig_next / sig_hat) * (x - den)

        return run.loop(x, update)

    triple.evals_per_step, triple.label = 3, "triple Euler"
    monkeypatch.setitem(S.FAST_METHODS, "triple", triple)
    assert S.fast_max_steps("triple") == 14
    sde = VESDE()
    res = S.fast_sample(gaussian_score(sde), sde, (1, 2, 2), S.NoiseSource([0]), n_steps=14, method="triple")
    assert res.nfe == 40 == S.fast_nfe("triple", 14)
    with pytest.raises(ValueError, match="1 to 14 steps"):
        S.fast_sample(gaussian_score(sde), sde, (1, 2, 2), S.NoiseSource([0]), n_steps=15, method="triple")
    SamplerSettings(fast_method="triple", steps=14).validate()
    with pytest.raises(ValueError, match="at most 14 steps") as err:
        SamplerSettings(fast_method="triple", steps=15).validate()
    assert one_sentence(str(err.value))


def test_presets_table():
    from sdesr_gui.core import enhance, presets

    fast, pc = presets.SAMPLER_PRESETS["fast"], presets.SAMPLER_PRESETS["pc"]
    assert list(presets.SAMPLER_PRESETS) == ["fast", "pc"]
    assert fast.fast_method == "dpmpp_2m" and fast.steps == fast.max_steps == S.fast_max_steps("dpmpp_2m")
    assert fast.evaluations() == 40 == S.FAST_MAX_NFE
    # the SDE-SR paper's evaluation: N = 2000, M = 2, r = 0.16, reverse diffusion + Langevin
    assert (pc.predictor, pc.corrector, pc.steps, pc.corrector_steps, pc.snr) == \
        ("reverse_diffusion", "langevin", 2000, 2, 0.16)
    assert pc.evaluations() == 6000
    assert enhance.DEFAULT_STEPS == {"fast": 40, "pc": 2000} == presets.DEFAULT_STEPS
    # SamplerSettings' defaults are the presets'
    s = enhance.SamplerSettings()
    assert s.sampler == presets.DEFAULT_SAMPLER and s.n_steps() == fast.steps and s.fast_method == fast.fast_method
    s = enhance.SamplerSettings(sampler="pc")
    assert (s.n_steps(), s.corrector_steps, s.snr, s.predictor, s.corrector) == \
        (pc.steps, pc.corrector_steps, pc.snr, pc.predictor, pc.corrector)
    for p in presets.SAMPLER_PRESETS.values():
        enhance.SamplerSettings(sampler=p.key, steps=p.max_steps).validate()
    # the samplers' own keyword defaults are the presets' too
    pc_kw = inspect.signature(S.pc_sample).parameters
    assert [pc_kw[k].default for k in ("n_steps", "predictor", "corrector", "corrector_steps", "snr")] == \
        [pc.steps, pc.predictor, pc.corrector, pc.corrector_steps, pc.snr]
    fast_kw = inspect.signature(S.fast_sample).parameters
    assert [fast_kw[k].default for k in ("n_steps", "method", "churn")] == [fast.steps, fast.fast_method, fast.churn]
