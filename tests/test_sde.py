"""Forward SDEs: marginals against empirical forward noising, reverse-SDE identities, discretisations."""
import math

import pytest
import torch

from invscore.sde import EDMSDE, FlowSDE, SubVPSDE, VESDE, VPSDE, make_sde

SDES = [VPSDE(), SubVPSDE(), VESDE(sigma_min=0.01, sigma_max=50.0), EDMSDE(), FlowSDE()]
IDS = ["vp", "subvp", "ve", "edm", "flow"]


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginals_match_simulated_forward_sde(sde):
    """Simulate dx = f x dt + g dw with fine Euler–Maruyama steps; mean and std match marginal_prob."""
    g = torch.Generator().manual_seed(0)
    n, steps, t_end = 20000, 2000, 0.6
    x0 = torch.full((n, 1), 1.5, dtype=torch.float64)
    x = x0.clone()
    ts = torch.linspace(0, t_end, steps + 1, dtype=torch.float64)
    for i in range(steps):
        t, dt = ts[i], ts[i + 1] - ts[i]
        drift, diff = sde.sde(x, t)
        x = x + drift * dt + diff * dt.sqrt() * torch.randn(x.shape, generator=g, dtype=x.dtype)
    mean, std = sde.marginal_prob(x0, ts[-1])
    # initial condition at t=0 for VE is x0 exactly; its marginal std sigma(t) includes sigma(0) = sigma_min
    std_target = std if not isinstance(sde, VESDE) else torch.sqrt(std**2 - sde.sigma(torch.tensor(0.0)) ** 2)
    se = float(std_target) / math.sqrt(n)
    assert abs(float(x.mean()) - float(mean[0, 0])) < 4 * se + 1e-3
    assert abs(float(x.std()) / float(std_target) - 1) < 4 / math.sqrt(2 * n) + 2e-3


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_g2_is_consistent_with_alpha_and_sigma(sde):
    """g² = d sigma²/dt − 2 f sigma² and f = d log alpha/dt (float64 finite differences)."""
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    dsig2 = (sde.sigma(t + h) ** 2 - sde.sigma(t - h) ** 2) / (2 * h)
    dloga = (sde.log_alpha(t + h) - sde.log_alpha(t - h)) / (2 * h)
    torch.testing.assert_close(sde.f(t), dloga, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(sde.g2(t), dsig2 - 2 * sde.f(t) * sde.sigma(t) ** 2, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_ratio_inverts(sde):
    t = torch.linspace(sde.t_min, sde.T, 50, dtype=torch.float64)
    torch.testing.assert_close(sde.ratio_to_t(sde.ratio(t)), t, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_discretize_is_the_exact_transition(sde):
    """One step of the Markov chain from t−dt to t reproduces the kernel composition alpha/sigma."""
    t, dt = torch.tensor(0.5, dtype=torch.float64), torch.tensor(0.01, dtype=torch.float64)
    x = torch.ones(1, 1, dtype=torch.float64)
    f, G = sde.discretize(x, t, dt)
    a = sde.alpha(t) / sde.alpha(t - dt)
    torch.testing.assert_close((x + f)[0, 0], a)
    torch.testing.assert_close(a**2 * sde.sigma(t - dt) ** 2 + G**2, sde.sigma(t) ** 2)


def test_vp_discretization_is_ddpm():
    """VP with N steps gives DDPM's beta_i ≈ (beta_min + i/N (beta_max − beta_min))/N (Song et al. eq. 32)."""
    sde, N = VPSDE(), 1000
    t = torch.tensor(0.5, dtype=torch.float64)
    f, G = sde.discretize(torch.ones(1, 1, dtype=torch.float64), t, torch.tensor(1 / N, dtype=torch.float64))
    assert abs(float(G**2) - float(sde.beta(t)) / N) < 1e-4


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_prior_sampling_and_logp(sde):
    g = torch.Generator().manual_seed(0)
    z = sde.prior_sampling((4000, 3), generator=g, dtype=torch.float64)
    assert abs(float(z.std()) / sde.prior_std - 1) < 0.03
    ref = torch.distributions.Normal(0.0, sde.prior_std).log_prob(z).sum(1)
    torch.testing.assert_close(sde.prior_logp(z), ref)
    # p_T is close to the forward marginal of bounded data at T
    assert float(sde.alpha(torch.tensor(sde.T))) < 0.01 or isinstance(sde, VESDE)


def test_reverse_and_probability_flow():
    """Reverse drift f − g² s and PF drift f − ½ g² s (Song et al. eqs. 6 and 13)."""
    sde = VPSDE()
    x, t = torch.randn(5, 2, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    score = lambda x, t: -x  # noqa: E731
    f, g = sde.sde(x, t)
    d_rev, g_rev = sde.reverse(score).sde(x, t)
    d_pf, g_pf = sde.reverse(score, probability_flow=True).sde(x, t)
    torch.testing.assert_close(d_rev, f + g**2 * x)
    torch.testing.assert_close(d_pf, f + 0.5 * g**2 * x)
    assert float(g_pf) == 0 and float(g_rev) == float(g)
    # the discrete reverse-diffusion step (eq. 46): mean x − f_i + G_i² s, noise G_i
    dt = torch.tensor(0.01, dtype=torch.float64)
    f_i, G_i = sde.discretize(x, t, dt)
    m, G = sde.reverse(score).step(x, t, dt)
    torch.testing.assert_close(m, x - f_i - G_i**2 * x)
    assert float(G) == float(G_i)


def test_edm_sde_is_sigma_equals_t():
    """Karras et al. 2022: σ(t) = t, s(t) = 1, so the PF velocity is (x − D(x; t))/t (eq. 4)."""
    sde, t = make_sde("edm"), torch.tensor(3.0, dtype=torch.float64)
    x = torch.randn(4, 2, dtype=torch.float64)
    assert (sde.T, sde.t_min, sde.prior_std) == (80.0, 0.002, 80.0)
    assert float(sde.sigma(t)) == float(sde.ratio(t)) == 3.0 and float(sde.ratio_to_t(t)) == 3.0
    x0 = 0.5 * x  # any denoiser output D(x; t)
    v, _ = sde.reverse(lambda x, t: (x0 - x) / t**2, probability_flow=True).sde(x, t)
    torch.testing.assert_close(v, (x - x0) / t)


def test_make_sde_and_bad_parameters():
    assert isinstance(make_sde("sub-VP"), SubVPSDE)
    with pytest.raises(ValueError, match="unknown SDE"):
        make_sde("nope")
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        VESDE(sigma_min=5, sigma_max=1)
    with pytest.raises(ValueError, match="outside the SDE's range"):
        VPSDE().check_t(torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_discrete_vp_keeps_the_sde_promises(kind):
    """DiscreteVPSDE (a DDPM table as VP) passes the generic checks above: simulated marginals, the exact
    transition, ratio inversion, prior; its f, g² are checked inside steps in tests/test_discrete.py (they jump
    at the knots, so the central differences above would straddle them)."""
    from invscore.sde import DiscreteVPSDE
    sde = DiscreteVPSDE.schedule(kind)
    test_marginals_match_simulated_forward_sde(sde)
    test_ratio_inverts(sde)
    test_discretize_is_the_exact_transition(sde)
    test_prior_sampling_and_logp(sde)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    torch.testing.assert_close(sde.alpha(t) ** 2 + sde.sigma(t) ** 2, torch.ones_like(t))
