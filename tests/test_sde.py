"""The SDEs' formulas: the papers' parameters, marginals consistent with drift/diffusion, inverses."""

import math

import pytest
import torch

from sdesr_gui.core.sde import SubVPSDE, VESDE, VPSDE, make_sde

ALL = [VESDE(), VPSDE(), SubVPSDE()]


def test_paper_parameters():
    ve = VESDE()
    assert ve.smin == 0.01 and ve.smax == 348.0
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    assert torch.allclose(ve.sigma(t), torch.tensor([0.01, 348.0], dtype=torch.float64))
    vp = VPSDE()
    assert (vp.beta_0, vp.beta_1) == (0.1, 20.0)
    assert torch.allclose(vp.beta(t), torch.tensor([0.1, 20.0], dtype=torch.float64))


@pytest.mark.parametrize("sde", ALL, ids=lambda s: s.name)
def test_variance_ode_matches_drift_and_diffusion(sde):
    """For dx = a(t) x dt + g(t) dw the conditional variance obeys dv/dt = 2 a v + g^2,
    and the mean coefficient ds/dt = a s.  Check the closed-form marginals against that."""
    h = 1e-5
    x = torch.ones(1, 1, dtype=torch.float64)
    for tv in [0.05, 0.3, 0.7, 0.95]:
        t = torch.tensor([tv], dtype=torch.float64)
        drift, g = sde.sde(x, t)
        a = float(drift.flatten()[0])  # drift of x = 1 is a(t)
        v = lambda tt: float(sde.marginal_std(torch.tensor([tt], dtype=torch.float64))[0]) ** 2
        s = lambda tt: float(sde.mean_coeff(torch.tensor([tt], dtype=torch.float64))[0])
        dv = (v(tv + h) - v(tv - h)) / (2 * h)
        ds = (s(tv + h) - s(tv - h)) / (2 * h)
        assert ds == pytest.approx(a * s(tv), rel=1e-5, abs=1e-9)
        if sde.name == "ve":  # score_sde's VE marginal std is sigma(t) itself (sigma_min at t=0)
            assert dv == pytest.approx(float(g[0]) ** 2, rel=1e-5)
        else:
            assert dv == pytest.approx(2 * a * v(tv) + float(g[0]) ** 2, rel=1e-5)


@pytest.mark.parametrize("sde", ALL, ids=lambda s: s.name)
def test_t_from_sigma_inverts_sigma_eff(sde):
    t = torch.linspace(sde.eps, 1.0, 50, dtype=torch.float64)
    back = sde.t_from_sigma(sde.sigma_eff(t))
    assert torch.allclose(back, t, atol=1e-9, rtol=1e-7)
    assert sde.sigma_max > 100 and sde.sigma_min < 0.02


def test_vp_closed_forms():
    vp, svp = VPSDE(), SubVPSDE()
    t = torch.tensor([0.5], dtype=torch.float64)
    integral = 0.1 * 0.5 + 0.5 * (20 - 0.1) * 0.25  # int_0^0.5 beta
    s = math.exp(-0.5 * integral)
    assert float(vp.mean_coeff(t)) == pytest.approx(s)
    assert float(vp.marginal_std(t)) == pytest.approx(math.sqrt(1 - s * s))
    assert float(svp.marginal_std(t)) == pytest.approx(1 - s * s)
    assert vp.prior_std() == 1.0 and VESDE().prior_std() == 348.0


def test_ve_discretisation_is_smld():
    ve = VESDE()
    x = torch.zeros(2, 3)
    t = torch.tensor([0.5, 0.5], dtype=torch.float64)
    tn = torch.tensor([0.4, 0.0], dtype=torch.float64)
    f, g = ve.discretize(x, t, tn)
    assert torch.all(f == 0)
    s5, s4 = 0.01 * 34800**0.5, 0.01 * 34800**0.4
    assert float(g[0]) == pytest.approx(math.sqrt(s5**2 - s4**2))
    assert float(g[1]) == pytest.approx(s5)  # last step: to noise level 0


def test_make_sde_round_trip_and_errors():
    for s in ALL:
        again = make_sde(s.to_dict())
        assert type(again) is type(s) and again.to_dict() == s.to_dict()
    with pytest.raises(ValueError, match="Unknown SDE"):
        make_sde("edm")
