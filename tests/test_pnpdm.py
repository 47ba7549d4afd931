"""PnP-DM (Wu et al. 2024): the exact Gaussian likelihood step (SVD and CG paths, and Langevin for nonlinear A),
the prior step against the closed-form p(x | z) of a Gaussian prior, the whole split-Gibbs chain against the
exact marginal of its target and the posterior, the tiny and shipped priors, and the CLI. All in float64
where maths is checked; bars are 5 standard errors of the sample size unless said otherwise."""
import math

import pytest
import torch

import operators
from conftest import inpainting_problem, random_matrix
from invscore.conditional import METHODS, solve
from invscore.conditional.pnpdm import likelihood_step, prior_grid, prior_step, rho_schedule
from invscore.priors import Diffusion, Gaussian
from invscore.sde import VPSDE

F64 = dict(dtype=torch.float64)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one intra-op thread


def _assert_moments(x, mean, cov, what):
    """Sample mean within 5 s.e. and every covariance entry within 5 s.e. of its Gaussian sampling law."""
    n = x.shape[0]
    assert ((x.mean(0) - mean).abs() < 5 * (cov.diag() / n).sqrt()).all(), (what, x.mean(0), mean)
    tol = 5 * ((cov.diag()[:, None] * cov.diag()[None] + cov**2) / n).sqrt()
    emp = torch.cov(x.T)
    assert ((emp - cov).abs() < tol).all(), (what, emp, cov)
    return emp, tol


def test_likelihood_step_is_the_exact_gaussian_on_svd_and_cg_paths():
    """z ~ p(z | x, y) ∝ N(y; Az, σ²I) N(z; x, ρ²I) = N(m, C), C = (AᵀA/σ² + I/ρ²)⁻¹, m = C(Aᵀy/σ² + x/ρ²):
    perturbation-optimisation through the SVD closed form and through CG (a linear operator without an
    SVD) both reproduce m and C; C is far from the prior-only ρ²I and from the likelihood-only limit, so the
    bar sees a wrong covariance (checked: the noise-free proximal point has zero covariance)."""
    A, g = random_matrix(0, 4)
    n, sigma, rho = 20000, 0.3, 0.7
    x, y = torch.randn(1, 4, generator=g, **F64), torch.randn(1, 3, generator=g, **F64)
    C = torch.linalg.inv(A.T @ A / sigma**2 + torch.eye(4, **F64) / rho**2)
    m = C @ (A.T @ y[0] / sigma**2 + x[0] / rho**2)
    plain = operators.LinearFunctionOperator(lambda v: v @ A.T, input_shape=(4,), output_shape=(3,),
                                             adjoint=lambda w: w @ A)
    xs, ys = x.expand(n, -1), y.expand(n, -1)
    for op in (operators.DenseOperator(A), plain):
        z = likelihood_step(op, xs, ys, sigma, torch.tensor(rho, **F64), cg_iters=20,
                            generator=torch.Generator().manual_seed(1))
        emp, tol = _assert_moments(z, m, C, type(op).__name__)
        assert not ((emp - rho**2 * torch.eye(4, **F64)).abs() < tol).all()


def test_likelihood_step_through_a_nonlinear_operator_is_langevin_on_the_same_target():
    """A 'nonlinear' operator (no Aᵀ) gets Langevin steps with gradients through A: unadjusted Langevin with step
    η on the Gaussian target of precision P is exactly Gaussian-stationary with mean m and covariance
    (P − ηP²/2)⁻¹ (cf. tests/test_diffpir_daps.py); 400 steps are > 15 relaxation times of its slowest mode."""
    A, g = random_matrix(3, 4)
    n, sigma, rho, lr = 4000, 0.5, 0.8, 0.3
    x, y = torch.randn(1, 4, generator=g, **F64), torch.randn(1, 3, generator=g, **F64)
    P = A.T @ A / sigma**2 + torch.eye(4, **F64) / rho**2
    m = torch.linalg.solve(P, A.T @ y[0] / sigma**2 + x[0] / rho**2)
    eta = lr / (1 / sigma**2 + 1 / rho**2)  # the step's curvature guess ‖A‖ = 1 for an operator it cannot see
    assert 400 * eta * float(torch.linalg.eigvalsh(P)[0]) > 15
    bent = operators.FunctionOperator(lambda v: v @ A.T, input_shape=(4,), output_shape=(3,))
    z = likelihood_step(bent, x.expand(n, -1), y.expand(n, -1), sigma, torch.tensor(rho, **F64), langevin_steps=400,
                        lr=lr, generator=torch.Generator().manual_seed(2))
    _assert_moments(z, m, torch.linalg.inv(P - eta * P @ P / 2), "langevin")


def _gaussian_prior(seed=5, d=3):
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(d, d, generator=g, **F64)
    S = L @ L.T / d + 0.3 * torch.eye(d, **F64)
    return Gaussian(torch.randn(d, generator=g, **F64), S), S, g


def test_prior_step_samples_the_exact_denoising_posterior():
    """Gaussian prior N(μ, Σ), z = x + ρε: p(x | z) = N(C(Σ⁻¹μ + z/ρ²), C), C = (Σ⁻¹ + I/ρ²)⁻¹. The reverse
    diffusion from σ/α = ρ started at α z reaches it with enough steps (ancestral sampling's variance deficit is
    O(1/steps): measured 7 % at 100 steps, 2 % at 400, against a 5-s.e. bar of 11 %); with 4 steps it is the
    under-dispersed, nearly-MMSE sampler the method's docstring describes, and the bar says so."""
    prior, S, g = _gaussian_prior()
    rho, n = 0.6, 4000
    C = torch.linalg.inv(torch.linalg.inv(S) + torch.eye(3, **F64) / rho**2)
    z = torch.randn(1, 3, generator=g, **F64)
    m = C @ (torch.linalg.solve(S, prior.means[0]) + z[0] / rho**2)
    model = Diffusion(prior, VPSDE())
    grid = prior_grid(model.sde, [rho], 400)[0]
    assert float(model.sde.ratio(grid[0])) == pytest.approx(rho, rel=1e-9)
    before = model.nfe
    x = prior_step(model, z.expand(n, -1), grid, "ancestral", torch.Generator().manual_seed(3))
    assert model.nfe - before == 400
    _assert_moments(x, m, C, "prior step")
    few = prior_step(model, z.expand(n, -1), prior_grid(model.sde, [rho], 4)[0], "ancestral",
                     torch.Generator().manual_seed(3))
    assert (torch.cov(few.T).diag() < 0.5 * C.diag()).all()


def _gaussian_problem(seed=5, d=4, d_y=2, sigma_y=0.3):
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(d, d, generator=g, **F64)
    S = L @ L.T / d + 0.5 * torch.eye(d, **F64)
    prior = Gaussian(torch.zeros(d, **F64), S)
    A = torch.randn(d_y, d, generator=g, **F64)
    op = operators.DenseOperator(A, noise=operators.GaussianNoise(sigma_y))
    x = prior.sample(1, generator=g) + 2.0  # off the prior mean, so that y moves the posterior far from it
    return prior, S, A, op, x @ A.T + sigma_y * torch.randn(1, d_y, generator=g, **F64)


def test_gibbs_chain_at_fixed_rho_has_the_exact_marginal_of_its_target():
    """At a fixed ρ the split-Gibbs target's x-marginal is p(x) ∫ p(y | z) N(z; x, ρ²I) dz = p(x) N(y; Ax,
    σ²I + ρ²AAᵀ) (Wu et al. 2024, eq. 4), a Gaussian posterior in closed form: 1000 chains of 30 iterations
    with 100-step prior steps match its mean and covariance (measured from x = 0: mean off by 11, 5, 2.5 s.e.
    after 5, 10, 20 iterations, so the chain has converged); the exact posterior (ρ = 0) is outside the bar."""
    prior, S, A, op, y = _gaussian_problem()
    rho, sigma, n = 0.5, 0.3, 1000
    noise = sigma**2 * torch.eye(2, **F64) + rho**2 * A @ A.T
    K = S @ A.T @ torch.linalg.inv(A @ S @ A.T + noise)
    m, C = K @ y[0], S - K @ A @ S
    res = solve(prior, op, y.expand(n, -1).contiguous(), method="pnpdm", steps=30, prior_steps=100, rho0=rho,
                rho_min=rho, decay=1.0, generator=torch.Generator().manual_seed(4))
    assert res.nfe == 30 * 100
    emp, tol = _assert_moments(res.x, m, C, "gibbs")
    exact = prior.posterior(A, y[0], sigma)
    assert not (((res.x.mean(0) - exact[0]).abs() < 5 * (C.diag() / n).sqrt()).all()
                and ((emp - exact[1]).abs() < tol).all())


def test_default_pnpdm_centres_on_the_exact_gaussian_posterior():
    """The pattern of tests/test_diffpir_daps.py: with its defaults (ρ annealed to ρ_min) the sample mean is
    within 25 % of the prior mean's distance to the exact posterior mean (ignoring y scores 100 %) and fits y
    4 times better along the measured directions than the prior mean does. Measured (400 samples, s.e. ~3 % of
    the gap): 13 % and 16 % of the gap with seeds 1 and 2, residual 0.055 of the prior mean's; PnP-DM's
    target keeps a bias at ρ_min > 0 (see the fixed-ρ test), so the bar is not exactness."""
    prior, _, A, op, y = _gaussian_problem()
    mean, _ = prior.posterior(A, y[0], 0.3)
    res = solve(prior, op, y.expand(400, -1).contiguous(), method="pnpdm", generator=torch.Generator().manual_seed(1))
    assert res.x.dtype == torch.float64 and torch.isfinite(res.x).all()
    assert res.nfe == METHODS["pnpdm"]().nfe()
    gap = float((prior.means[0] - mean).norm())
    assert float((res.x.mean(0) - mean).norm()) < 0.25 * gap
    assert float((res.x.mean(0) @ A.T - y[0]).norm()) < 0.25 * float((prior.means[0] @ A.T - y[0]).norm())


def test_rho_schedule_is_geometric_and_floored():
    """ρ_k = max(ρ_0 decay^k, ρ_min) (the official sampler's rule); decay=None reaches ρ_min half-way."""
    assert rho_schedule(4, 10.0, 0.3, 0.9) == pytest.approx([10.0, 9.0, 8.1, 7.29])
    auto = rho_schedule(25, 10.0, 0.3, None)
    assert auto[0] == 10.0 and auto[12] == pytest.approx(0.3) and auto[-1] == pytest.approx(0.3)
    assert all(a > b for a, b in zip(auto[:12], auto[1:13]))


def test_tiny_prior_runs_fits_y_and_counts_its_nfe(prior):
    """The untrained tiny UNet checkpoint on 32×32 centre inpainting, and the closed-form 8×8 inpainting
    problem: finite samples, counted NFE = declared, and the measured pixels fit y far better than the
    all-zero start does (a sampler that ignored y would not move them)."""
    from invscore.checkpoint import load_denoiser
    from invscore.data import test_images
    from invscore.priors import CallablePrior
    x = test_images("fashion_mnist", 2) * 2 - 1
    tiny = CallablePrior(load_denoiser(prior), data_shape=(1, 32, 32))
    op32 = operators.make("inpaint_center", img_size=(1, 32, 32), noise=0.05)
    for p, op, y in ((tiny, op32, op32.measure(x, torch.Generator().manual_seed(0))), inpainting_problem()):
        res = solve(p, op, y, method="pnpdm", steps=6, prior_steps=2, generator=torch.Generator().manual_seed(1))
        assert torch.isfinite(res.x).all() and res.nfe == 6 * 2 == METHODS["pnpdm"](prior_steps=2).nfe(6)
        assert res.vjp == 0
        resid = float((op(res.x) - y).pow(2).mean().sqrt())
        assert resid < 0.5 * float(y.pow(2).mean().sqrt()), resid


def test_cli_runs_pnpdm(tmp_path, monkeypatch):
    import json
    from invscore.cli import main
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main(["inpaint", "--mask", "center", "--out", str(out), "--n", "2", "--quiet", "threads=1",
                 "method=pnpdm", "steps=3", "method.options.prior_steps=2"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["method"] == "pnpdm" and s["nfe"] == 3 * 2


def test_bad_options_speak():
    prior, _, A, op, y = _gaussian_problem()
    with pytest.raises(ValueError, match="prior_steps >= 1"):
        solve(prior, op, y, method="pnpdm", prior_steps=0)
    with pytest.raises(ValueError, match="0 < rho_min <= rho0"):
        solve(prior, op, y, method="pnpdm", rho_min=20.0)
    with pytest.raises(ValueError, match="predictor in"):
        solve(prior, op, y, method="pnpdm", predictor="heun")
    with pytest.raises(ValueError, match="every rho in"):
        solve(prior, op, y, method="pnpdm", rho0=1e4)
    assert math.isfinite(float(solve(prior, op, y, method="pnpdm", steps=2, prior_steps=1).x.sum()))
