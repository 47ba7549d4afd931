"""DDRM (Kawar et al. 2022, eq. 7–8) on closed-form Gaussian problems: more steps must not move the samples
away from the exact posterior, and ``nu_max`` is checked."""
from __future__ import annotations

import math

import pytest
import torch

import operators
from invscore.conditional import solve
from invscore.priors import Gaussian

SIGMA_Y, B = 0.05, 4000


def _problem():
    """Prior N(0, diag(1, 0.01)); A = diag(1, 0.005), σ_y = 0.05: coordinate 2's ȳ has noise ν = 10, a
    hundred times the prior's sd 0.1, so y says almost nothing about it. Exact posterior per coordinate."""
    s = torch.tensor([1.0, 0.005], dtype=torch.float64)
    var0 = torch.tensor([1.0, 0.01], dtype=torch.float64)
    prior = Gaussian(torch.zeros(2, dtype=torch.float64), torch.diag(var0))
    op = operators.DenseOperator(torch.diag(s), noise=operators.GaussianNoise(SIGMA_Y))
    x = torch.tensor([[0.7, 0.05]], dtype=torch.float64)
    y = op.measure(x, generator=torch.Generator().manual_seed(0)).expand(B, -1).contiguous()
    post_var = 1 / (1 / var0 + s**2 / SIGMA_Y**2)
    post_mean = post_var * s * y[0] / SIGMA_Y**2
    return prior, op, y, post_mean, post_var


def _drift(steps, **options):
    """(sample mean − exact posterior mean) / posterior sd on the nearly unmeasured coordinate."""
    prior, op, y, m, v = _problem()
    res = solve(prior, op, y, method="ddrm", steps=steps, generator=torch.Generator().manual_seed(1), **options)
    assert torch.isfinite(res.x).all() and res.nfe == steps
    return float((res.x[:, 1].mean() - m[1]) / v[1].sqrt())


def test_more_steps_do_not_move_ddrm_along_the_measurement_noise():
    """Eq. 8's branch r_s < ν adds sqrt(1−η²) r_s (ȳ − z̄0)/ν at every step: the same vector, ≈ the noise n
    of ȳ where ν ≫ the prior's scale, and at small r the Tweedie estimate keeps what earlier steps added, so all
    samples of one y drift along n as the steps grow: −0.06, −0.13, −0.22, −0.39 posterior sd at 20, 50, 200,
    1000 steps with the old defaults (η = 0.85, nu_max = inf; ȳ/ν = −0.29 here). nu_max = 2 (the default)
    treats that coordinate as unmeasured (eq. 7): the drift stays within 0.02 sd at η = 0.85 and with the
    default η. The standard error of the mean is ≈ 0.008 sd."""
    for steps in (20, 200):
        assert abs(_drift(steps)) < 0.06 and abs(_drift(steps, eta=0.85)) < 0.06, steps
    assert _drift(200, eta=0.85, nu_max=math.inf) < -0.15  # the bar can fail: the paper's eq. 8 on every s > 0
    assert abs(_drift(200, eta=1.0, nu_max=math.inf)) < 0.06  # η = 1 has no ȳ term in that branch


def test_nu_max_keeps_well_measured_coordinates_and_is_checked():
    """Coordinate 1 (ν = 0.05 < nu_max) is still measured: the samples' mean is the exact posterior mean to
    within 4 standard errors plus 0.1 posterior sd (0.05); a non-positive nu_max is refused."""
    prior, op, y, m, v = _problem()
    res = solve(prior, op, y, method="ddrm", steps=50, generator=torch.Generator().manual_seed(1))
    sd = float(v[0].sqrt())
    assert abs(float(res.x[:, 0].mean() - m[0])) < 4 * sd / B**0.5 + 0.1 * sd
    with pytest.raises(ValueError, match="nu_max > 0"):
        solve(prior, op, y, method="ddrm", steps=2, nu_max=0.0)


def test_time_grid_starts_at_r_max():
    """``time_grid(r_max=r)`` starts where σ/α = r (VP and EDM, both spacings) and ends at t_min; an r_max
    above the SDE's range is clamped to T."""
    from invscore.samplers import time_grid
    from invscore.sde import make_sde
    for name in ("vp", "edm"):
        sde = make_sde(name)
        for kind in ("uniform", "edm"):
            ts = time_grid(sde, 7, kind, r_max=2.0)
            assert ts.shape == (8,) and float(sde.ratio(ts[0])) == pytest.approx(2.0, rel=1e-6)
            assert float(ts[-1]) == pytest.approx(sde.t_min) and bool((ts[1:] < ts[:-1]).all())
        assert float(time_grid(sde, 3, r_max=1e9)[0]) == pytest.approx(sde.T)


def test_ddrm_initial_state_is_the_papers():
    """DDRM's start at r_T (Kawar et al. 2022, eq. 7–8 at T) on a diagonal problem with ν = 1.5, 0.05 and 10
    (≥ nu_max: unmeasured): at r_T = 2 the measured coordinates have mean ȳ and variance r_T² − ν² (1.75 for
    ν = 1.5), the unmeasured one mean 0 and variance r_T²; at r_T = 1.2 the ν = 1.5 coordinate is noisier than
    the state and starts unmeasured too. Means within 4 standard errors, variances within 4·sqrt(2/B) relative."""
    from invscore.conditional.measurement import DDRMCorrection
    from invscore.priors.base import Diffusion
    from invscore.sde import make_sde
    s = torch.tensor([SIGMA_Y / 1.5, 1.0, 0.005], dtype=torch.float64)
    op = operators.DenseOperator(torch.diag(s), noise=operators.GaussianNoise(SIGMA_Y))
    y = op.measure(torch.tensor([[0.3, 0.7, 0.05]], dtype=torch.float64),
                   generator=torch.Generator().manual_seed(0)).expand(B, -1).contiguous()
    ybar = (y[0] / s).tolist()
    model = Diffusion(Gaussian(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64)), make_sde("vp"))
    term = DDRMCorrection(op, y, SIGMA_Y)
    for r, want in ((2.0, [(ybar[0], 4.0 - 1.5**2), (ybar[1], 4.0 - SIGMA_Y**2), (0.0, 4.0)]),
                    (1.2, [(0.0, 1.44), (ybar[1], 1.44 - SIGMA_Y**2), (0.0, 1.44)])):
        t = model.sde.time_to_ratio_grid(torch.tensor(r, dtype=torch.float64))
        x = term.initial(torch.zeros_like(y), t, model, torch.Generator().manual_seed(3)) / model.sde.alpha(t)
        for i, (mean, var) in enumerate(want):
            assert abs(float(x[:, i].mean()) - mean) < 4 * math.sqrt(var / B), (r, i)
            assert float(x[:, i].var()) == pytest.approx(var, rel=4 * math.sqrt(2 / B)), (r, i)


def test_ddrm_r_max_is_checked_and_sets_the_first_time():
    """r_max must be a finite positive number or None; solve's grid starts where σ/α = r_max × data_scale
    (2 by default) or, with None, at the SDE's T (the grid before r_max existed); a start below the SDE's
    smallest ratio is refused with a message naming r_max."""
    from invscore import VPSDE
    from invscore.samplers import time_grid
    prior, op, y, m, v = _problem()
    sde = VPSDE()
    for bad in (0.0, -1.0, "2", True, math.inf):
        with pytest.raises(ValueError, match="r_max"):
            solve(prior, op, y[:4], method="ddrm", steps=2, r_max=bad)
    with pytest.raises(ValueError, match="r_max"):
        time_grid(sde, 3, r_max=1e-9)
    for r_max, ts in ((2.0, time_grid(sde, 3, r_max=2.0 * prior.data_scale)), (None, time_grid(sde, 3))):
        seen = []  # the callback reports the time each step reached: ts[1], ts[2], ...
        solve(prior, op, y[:4], method="ddrm", steps=3, r_max=r_max, callback=lambda st: seen.append(st["t"]))
        assert float(seen[0].reshape(-1)[0]) == pytest.approx(float(ts[1])), r_max
    assert float(time_grid(sde, 3, r_max=2.0)[1]) < 0.9 * float(time_grid(sde, 3)[1])  # the two differ
    res = solve(prior, op, y, method="ddrm", steps=50, r_max=None, generator=torch.Generator().manual_seed(1))
    sd = float(v[0].sqrt())
    assert abs(float(res.x[:, 0].mean() - m[0])) < 4 * sd / B**0.5 + 0.1 * sd


def test_data_scale_sets_ddrm_start_for_analytic_priors():
    """``Prior.data_scale`` = sqrt(max_i E[x_i²]): exact for the mixture grid ((8i, 8j), unit covariance:
    sqrt(2·64 + 1)), a rotated-covariance Gaussian, a diagonal one and a stationary one (against 10⁵ samples, within 1 %);
    images default to 1. DDRM starts at r_max × data_scale."""
    from invscore.conditional import get_method
    from invscore.priors import CallablePrior, DiagonalGaussian, StationaryGaussian
    from invscore.testing import grid_mixture
    mix = grid_mixture(8)
    assert mix.data_scale == pytest.approx(math.sqrt(129.0))
    C = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    for prior in (mix, Gaussian(torch.tensor([1.0, 0.0], dtype=torch.float64), C),
                  DiagonalGaussian(torch.tensor([0.5, -2.0], dtype=torch.float64), torch.tensor([0.3, 0.1])),
                  StationaryGaussian.radial((2, 4, 4), amplitude=2.0, corner=0.3, mean=0.5)):
        x = prior.sample(100_000, generator=g)
        assert prior.data_scale == pytest.approx(float((x**2).mean(0).max().sqrt()), rel=0.01)
    assert CallablePrior(lambda x, s: x).data_scale == 1.0
    assert get_method("ddrm").start_ratio(mix) == pytest.approx(2 * math.sqrt(129.0))
    assert get_method("ddrm", r_max=None).start_ratio(mix) is None
