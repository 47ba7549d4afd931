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
