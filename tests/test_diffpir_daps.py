"""DiffPIR (Zhu et al. 2023) and DAPS (Zhang et al. 2025): their inner steps against closed forms in float64,
their samples against a closed-form Gaussian posterior, the shipped prior on centre inpainting, and the CLI."""
import math

import pytest
import torch
from conftest import random_matrix

import operators
from invscore.conditional import METHODS, solve
from invscore.conditional.daps import langevin_posterior, likelihood_curvature
from invscore.conditional.diffpir import data_prox
from invscore.priors import Gaussian

F64 = dict(dtype=torch.float64)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one intra-op thread


def test_diffpir_data_step_svd_cg_gradient_and_dense_agree():
    """argmin ‖y − Ax‖² + ρ‖x − x̂0‖² = (AᵀA + ρI)⁻¹(Aᵀy + ρx̂0): the SVD closed form, CG on a linear operator
    without an SVD and gradient steps on a 'nonlinear' one all equal the dense solve, per image ρ."""
    A, g = random_matrix(0, 6)
    B, d = 3, A.shape[1]
    x0, y = torch.randn(B, d, generator=g, **F64), torch.randn(B, A.shape[0], generator=g, **F64)
    rho = torch.tensor([0.05, 1.0, 20.0], **F64)
    dense = torch.stack([torch.linalg.solve(A.T @ A + r * torch.eye(d, **F64), A.T @ yy + r * xx)
                         for r, xx, yy in zip(rho, x0, y)])
    svd = data_prox(operators.DenseOperator(A), x0, y, rho)
    cg = data_prox(operators.LinearFunctionOperator(lambda x: x @ A.T, input_shape=(d,), output_shape=(3,),
                                                    adjoint=lambda v: v @ A),
                   x0, y, rho, cg_iters=20)
    grad = data_prox(operators.FunctionOperator(lambda x: x @ A.T, input_shape=(d,), output_shape=(3,)), x0, y, rho,
                     cg_iters=3000, grad_step=0.9)
    for got in (svd, cg, grad):
        torch.testing.assert_close(got, dense, rtol=1e-8, atol=1e-9)
    assert not torch.allclose(svd, x0) and not torch.allclose(svd, torch.linalg.pinv(A) @ y[0])


def test_diffpir_data_step_in_complex_fft_coordinates():
    """The FFT blur's SVD has complex coordinates; the closed form still matches CG on the same operator."""
    op = operators.make("blur_gaussian_fft", img_size=(1, 8, 8), sigma=1.0).to(torch.float64)
    g = torch.Generator().manual_seed(1)
    x0, y = torch.randn(2, 1, 8, 8, generator=g, **F64), torch.randn(2, 1, 8, 8, generator=g, **F64)
    rho = torch.tensor([0.1, 2.0], **F64)
    plain = operators.LinearFunctionOperator(op.A, input_shape=(1, 8, 8), output_shape=(1, 8, 8), adjoint=op.A_T)
    torch.testing.assert_close(data_prox(op, x0, y, rho), data_prox(plain, x0, y, rho, cg_iters=64),
                               rtol=1e-7, atol=1e-8)


def test_daps_langevin_chain_has_the_analytic_stationary_moments():
    """With x̂0 fixed, DAPS's chain targets N(x0; x̂0, r²I)·N(y; Ax0, τ²I), a Gaussian of precision
    P = I/r² + AᵀA/τ² and mean μ = P⁻¹(x̂0/r² + Aᵀy/τ²). Unadjusted Langevin with step η is then exactly
    Gaussian-stationary: mean μ, covariance (P − ηP²/2)⁻¹ (solve C = (I − ηP)C(I − ηP) + 2ηI); at ηλ_max = 0.5
    that is up to 33 % above P⁻¹, so the bar below separates it from the target. 15 relaxation times of the
    slowest direction remove the start (e^-15). Bars: 4 standard errors of n chains (mean), 5 of the sample
    covariance entries."""
    A, g = random_matrix(2, 3, 2)
    op = operators.DenseOperator(A)
    n, r, tau = 4000, 0.8, 1.0
    x0hat = torch.randn(1, 3, generator=g, **F64).expand(n, -1)
    y = torch.randn(1, 2, generator=g, **F64).expand(n, -1)
    P = torch.eye(3, **F64) / r**2 + A.T @ A / tau**2
    mean = torch.linalg.solve(P, x0hat[0] / r**2 + A.T @ y[0] / tau**2)
    lam = torch.linalg.eigvalsh(P)
    eta = 0.5 / float(lam[-1])
    cov = torch.linalg.inv(P - eta * P @ P / 2)
    steps = math.ceil(15 / (eta * float(lam[0])))
    x = langevin_posterior(op, y, x0hat, torch.tensor(r, **F64), tau, steps, torch.tensor(eta, **F64), g)
    se = (cov.diag() / n).sqrt()
    assert ((x.mean(0) - mean).abs() < 4 * se).all(), (x.mean(0), mean)
    tol = 5 * ((cov.diag()[:, None] * cov.diag()[None] + cov**2) / n).sqrt()
    emp = torch.cov(x.T)
    assert ((emp - cov).abs() < tol).all(), (emp, cov)
    assert not ((emp - torch.linalg.inv(P)).abs() < tol).all()  # the bar sees ULA's O(η) bias
    assert float(likelihood_curvature(op, x)) == pytest.approx(float(torch.linalg.matrix_norm(A, 2)) ** 2)


def test_daps_chain_through_a_nonlinear_operator_uses_autograd_through_a():
    """A 'nonlinear' operator (no Aᵀ) gets its data gradient by autograd through A only: with the same draws
    the chain equals the linear one to round-off."""
    A, g = random_matrix(4, 3, 2)
    x0hat, y = torch.randn(5, 3, generator=g, **F64), torch.randn(5, 2, generator=g, **F64)
    r, eta = torch.tensor(0.7, **F64), torch.tensor(0.05, **F64)
    run = lambda op: langevin_posterior(op, y, x0hat, r, 0.4, 30, eta, torch.Generator().manual_seed(9))  # noqa: E731
    bent = operators.FunctionOperator(lambda x: x @ A.T, input_shape=(3,), output_shape=(2,))
    torch.testing.assert_close(run(bent), run(operators.DenseOperator(A)), rtol=1e-10, atol=1e-12)


def test_daps_curvature_by_power_iteration_for_a_plain_linear_operator():
    A, _ = random_matrix(3, 6)
    plain = operators.LinearFunctionOperator(lambda x: x @ A.T, input_shape=(6,), output_shape=(3,),
                                            adjoint=lambda v: v @ A)
    est = likelihood_curvature(plain, torch.zeros(1, 6, **F64), iters=200, generator=torch.Generator().manual_seed(0))
    assert float(est) == pytest.approx(1.4**2, rel=1e-6)


def _gaussian_problem(seed=5, d=4, d_y=2, sigma_y=0.3):
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(d, d, generator=g, **F64)
    prior = Gaussian(torch.zeros(d, **F64), L @ L.T / d + 0.5 * torch.eye(d, **F64))
    A = torch.randn(d_y, d, generator=g, **F64)
    op = operators.DenseOperator(A, noise=operators.GaussianNoise(sigma_y))
    x = prior.sample(1, generator=g) + 2.0  # off the prior mean, so that y moves the posterior far from it
    y = x @ A.T + sigma_y * torch.randn(1, d_y, generator=g, **F64)
    return prior, A, op, y


@pytest.mark.parametrize("method, kw", [("diffpir", {"steps": 50}), ("daps", {"steps": 30, "langevin_steps": 50})])
def test_samples_centre_on_the_exact_gaussian_posterior(method, kw):
    """Gaussian prior, y = Ax + 0.3 n: the sample mean is within 25 % of the prior mean's distance to the
    exact posterior mean (a sampler that ignores y scores 100 %), and along the measured directions the mean
    fits y 4 times better than the prior mean does. Both methods are approximate, so the bar is not
    exactness: measured (seed 1, 400 samples, standard error ~3 % of the gap) DiffPIR 20 %, DAPS 16 %,
    ΠGDM 6 %, while DPS at its default 100 steps scores 30 % and would fail it."""
    prior, A, op, y = _gaussian_problem()
    mean, cov = prior.posterior(A, y[0], 0.3)
    n = 400
    res = solve(prior, op, y.expand(n, -1).contiguous(), method=method, generator=torch.Generator().manual_seed(1),
                **kw)
    assert res.x.dtype == torch.float64 and torch.isfinite(res.x).all()
    gap = float((prior.means[0] - mean).norm())
    err = float((res.x.mean(0) - mean).norm())
    assert err < 0.25 * gap, (method, err, gap)
    assert float((res.x.mean(0) @ A.T - y[0]).norm()) < 0.25 * float((prior.means[0] @ A.T - y[0]).norm())


@pytest.fixture(scope="module")
def shipped_inpainting():
    from invscore.checkpoint import load_denoiser
    from invscore.data import test_images
    from invscore.priors import CallablePrior
    x = test_images("fashion_mnist", 4) * 2 - 1
    prior = CallablePrior(load_denoiser("fashion_mnist"), data_shape=tuple(x.shape[1:]))
    op = operators.make("inpaint_center", img_size=tuple(x.shape[1:]), noise=0.05)
    return prior, op, x, op.measure(x, torch.Generator().manual_seed(0))


def _psnr(a, b):
    mse = ((a.clamp(-1, 1) - b) / 2).pow(2).flatten(1).mean(1)
    return (-10 * torch.log10(mse)).mean()


@pytest.mark.parametrize("method, kw", [("diffpir", {"steps": 20}),
                                        ("daps", {"steps": 10, "langevin_steps": 30})])
def test_shipped_prior_centre_inpainting(shipped_inpainting, method, kw):
    """Four held-out images, the 16×16 centre box missing, σ_y = 0.05: the samples are finite, fit the
    measured pixels to the noise level (rms residual < 2σ_y; a prior sample scores ~0.5) and beat the
    zero-filled A⁺y in PSNR (the centre holes cost A⁺y ~15 dB, see the report)."""
    prior, op, x, y = shipped_inpainting
    res = solve(prior, op, y, method=method, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.isfinite(res.x).all() and res.nfe == kw["steps"] * METHODS[method](**{
        k: v for k, v in kw.items() if k != "steps"}).cost().nfe
    assert float((op(res.x) - y).pow(2).mean().sqrt()) < 2 * 0.05
    assert _psnr(res.x, x) > _psnr(op.A_pinv(y), x) + 1.0


@pytest.mark.parametrize("method", ["diffpir", "daps"])
def test_cli_runs_the_method(method, tmp_path, monkeypatch):
    import json
    from invscore.cli import main
    monkeypatch.chdir(tmp_path)
    extra = ["method.options.langevin_steps=5"] if method == "daps" else []
    out = tmp_path / "run"
    assert main(["inpaint", "--out", str(out), "--steps", "2", "--n", "2", "--quiet", "threads=1",
                 f"method={method}", *extra]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["method"] == method and s["nfe"] == 2 * METHODS[method]().cost().nfe


def test_bad_options_speak():
    prior, A, op, y = _gaussian_problem()
    with pytest.raises(ValueError, match="0 <= zeta <= 1"):
        solve(prior, op, y, method="diffpir", zeta=1.5)
    with pytest.raises(ValueError, match="ode_steps >= 1"):
        solve(prior, op, y, method="daps", ode_steps=0)
    with pytest.raises(ValueError, match="tau > 0"):
        solve(prior, op, y, method="daps", tau=-1.0)
