"""PnP-Flow (Martin et al. 2025): its time mapping against the exact E[X_data | X_s] of a Gaussian mixture on
FlowSDE (and the same step on VP/VE), the whole iteration against the exact law of its iterates for a
Gaussian prior and what that law converges to, the tiny prior, the CLI and bad options. float64 where maths
is checked; sampling bars are 5 standard errors."""
import pytest
import torch

import operators
from conftest import inpainting_problem
from invscore.conditional import METHODS, solve
from invscore.conditional.pnpflow import data_gradient, flow_denoise, flow_times
from invscore.priors import Diffusion, Gaussian
from invscore.sde import FlowSDE, VESDE, VPSDE
from invscore.testing import grid_mixture, mixture_posterior, random_weights

F64 = dict(dtype=torch.float64)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one intra-op thread


def test_flow_times_are_the_papers_grid_on_any_sde():
    """s_n = n/N (the official grid) and σ(t)/α(t) = (1 − s)/s; s = 0 (r = ∞) goes to the SDE's T. On FlowSDE
    t = 1 − s exactly (their data-at-1 time is invscore's noise-at-1 time reversed)."""
    s, t = flow_times(FlowSDE(), 8)
    assert torch.equal(s, torch.arange(8, **F64) / 8)
    torch.testing.assert_close(t[1:], 1 - s[1:], rtol=0, atol=1e-12)
    assert float(t[0]) == FlowSDE().T
    for sde in (VPSDE(), VESDE(sigma_max=80.0)):
        s, t = flow_times(sde, 8)
        torch.testing.assert_close(sde.ratio(t[1:]), (1 - s[1:]) / s[1:], rtol=1e-9, atol=0)
        assert float(t[0]) == sde.T


def test_denoiser_step_is_the_exact_posterior_mean_on_the_flow_path():
    """The interpolation + denoiser step at paper time s, z̃ = s z + (1 − s) ε, is E[X_data | X_s = z̃] (their
    Sec. 3): X_s is a linear Gaussian measurement of X_data (A = s I, noise std 1 − s), whose exact mixture
    posterior (Bishop 2006, eq. 2.116) gives the reference. Through FlowSDE, and the same numbers on VP and VE
    for the same z and ε (the step depends only on σ/α)."""
    prior = grid_mixture(2, weights=random_weights(25, torch.Generator().manual_seed(3)))
    g = torch.Generator().manual_seed(0)
    z = 6 * torch.randn(1, 2, generator=g, **F64)
    n = 10
    s, t = flow_times(FlowSDE(), n)
    eps = torch.randn(n, 1, 2, generator=g, **F64)
    outs = {}
    for sde in (FlowSDE(), VPSDE(), VESDE(sigma_max=80.0)):
        model = Diffusion(prior, sde)
        _, ts = flow_times(sde, n)
        outs[type(sde).__name__] = torch.cat([flow_denoise(model, z, ts[k], eps[k]) for k in range(1, n)])
        assert model.nfe == n - 1
    exact = []
    for k in range(1, n):
        xs = float(s[k]) * z[0] + (1 - float(s[k])) * eps[k, 0]
        post = mixture_posterior(prior, float(s[k]) * torch.eye(2, **F64), xs, 1 - float(s[k]))
        exact.append(torch.softmax(post.log_w, 0) @ post.means)
    exact = torch.stack(exact)
    for name, got in outs.items():
        torch.testing.assert_close(got, exact, rtol=0, atol=1e-8, msg=name)
    assert (exact[1:] - exact[:-1]).norm(dim=1).min() > 1e-3  # the reference moves with s: a wrong s shows


def _gaussian_problem(seed=5, d=4, d_y=2, sigma_y=1.0):
    """N(0, Σ) in 4-D, A with singular values in [0.5, 1] (γ‖A‖² ≤ 1: a stable step), x off the prior mean."""
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(d, d, generator=g, **F64)
    S = L @ L.T / d + 0.5 * torch.eye(d, **F64)
    U, _ = torch.linalg.qr(torch.randn(d_y, d_y, generator=g, **F64))
    V, _ = torch.linalg.qr(torch.randn(d, d, generator=g, **F64))
    A = U @ torch.diag(torch.linspace(0.5, 1.0, d_y, **F64)) @ V[:, :d_y].T
    prior = Gaussian(torch.zeros(d, **F64), S)
    x = prior.sample(1, generator=g) + 2.0
    op = operators.DenseOperator(A, noise=operators.GaussianNoise(sigma_y))
    return prior, S, A, op, x @ A.T + sigma_y * torch.randn(1, d_y, generator=g, **F64)


def _exact_law(S, A, y, sde, steps, lr, alpha, samples):
    """Mean and covariance of PnP-Flow's iterate for the prior N(0, Σ): the denoiser D(u, r) = W_r u,
    W_r = Σ(Σ + r²I)⁻¹, is linear, so x' = W_r(B x + γAᵀy) + r W_r ε̄ with B = I − γAᵀA and ε̄ the mean of
    ``samples`` draws: m' = W_r(B m + γAᵀy), C' = W_r B C Bᵀ W_r + (r²/K) W_r², from x = 0; γ = lr (1 − s)^α/‖A‖²."""
    s, t = flow_times(sde, steps)
    r, eye = sde.ratio(t), torch.eye(S.shape[0], **F64)
    m, C = torch.zeros(S.shape[0], **F64), torch.zeros_like(S)
    for k in range(steps):
        gamma = lr * (1 - float(s[k])) ** alpha / float(torch.linalg.matrix_norm(A, 2)) ** 2
        B, W = eye - gamma * A.T @ A, S @ torch.linalg.inv(S + r[k] ** 2 * eye)
        m, C = W @ (B @ m + gamma * A.T @ y), W @ B @ C @ B.T @ W + r[k] ** 2 / samples * W @ W
    return m, C


def test_step_is_relative_to_the_operator_norm():
    """γ_n is divided by ‖A‖², so scaling A and y by c (as ×4 average pooling scales a pixel mask by 1/16 in
    ‖A‖²) leaves every iterate unchanged; without it the data step would shrink by c²."""
    prior, S, A, op, y = _gaussian_problem()
    c = 0.25
    small = operators.DenseOperator(c * A, noise=operators.GaussianNoise(c))
    kw = dict(method="pnpflow", steps=8, samples=1)
    a = solve(prior, op, y, generator=torch.Generator().manual_seed(3), **kw).x
    b = solve(prior, small, c * y, generator=torch.Generator().manual_seed(3), **kw).x
    torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_iterates_have_the_exact_gaussian_law():
    """2000 chains of 12 steps with 2 noise draws each, on the default VP SDE: the output's mean and every
    covariance entry match the exact law of the linear recursion (5 s.e. of their sampling laws). The bar sees
    a wrong averaging count: with 1 draw the exact covariance is 1.8 × larger in trace."""
    prior, S, A, op, y = _gaussian_problem()
    n, steps, lr, alpha = 2000, 12, 0.8, 0.5
    res = solve(prior, op, y.expand(n, -1).contiguous(), method="pnpflow", steps=steps, lr=lr, alpha=alpha,
                samples=2, generator=torch.Generator().manual_seed(1))
    assert res.nfe == steps * 2 and res.vjp == 0 and res.x.dtype == torch.float64
    m, C = _exact_law(S, A, y[0], VPSDE(), steps, lr, alpha, 2)
    assert ((res.x.mean(0) - m).abs() < 5 * (C.diag() / n).sqrt()).all(), (res.x.mean(0), m)
    tol = 5 * ((C.diag()[:, None] * C.diag()[None] + C**2) / n).sqrt()
    assert ((torch.cov(res.x.T) - C).abs() < tol).all(), (torch.cov(res.x.T), C)
    _, C1 = _exact_law(S, A, y[0], VPSDE(), steps, lr, alpha, 1)
    assert float(C1.trace()) > 1.5 * float(C.trace())


def test_pnpflow_converges_to_the_noise_free_map_not_the_sigma_y_posterior():
    """What PnP-Flow estimates: at a fixed s its mean iteration's fixed point is the MAP under the noise level
    r²/γ, which vanishes as s → 1, so the output's mean tends to the noise-free MAP argmin (x − μ)ᵀΣ⁻¹(x − μ)
    s.t. Ax = y, whatever σ_y. The exact mean's distance to it, as a fraction of the prior mean's, falls with
    the steps (default α = 0.01: 0.15, 0.041, 0.014 at 20, 100, 400 steps; α = 0.5: 0.28, 0.096, 0.037).
    400 chains of 100 steps with the default options (s.e. of the mean 0.007 of the gap): the sample mean is
    within 0.1 of the gap from the noise-free MAP (exact law: 0.041) and more than 0.35 from the σ_y = 1
    posterior mean (exact law: 0.46), which is 0.48 from it; the σ_y the method is told changes nothing."""
    prior, S, A, op, y = _gaussian_problem()
    free = prior.posterior(A, y[0], 1e-6)[0]
    gap = float((prior.means[0] - free).norm())
    o = METHODS["pnpflow"].defaults
    for alpha, bar in ((o["alpha"], 0.02), (0.5, 0.05)):
        dist = [float((_exact_law(S, A, y[0], VPSDE(), k, o["lr"], alpha, o["samples"])[0] - free).norm()) / gap
                for k in (20, 100, 400)]
        assert dist[0] > dist[1] > dist[2] and dist[2] < bar, (alpha, dist)
    res = solve(prior, op, y.expand(400, -1).contiguous(), method="pnpflow", steps=100,
                generator=torch.Generator().manual_seed(2))
    assert res.nfe == METHODS["pnpflow"]().nfe(100)
    post = prior.posterior(A, y[0], op.sigma_y)[0]
    got, off = (float((res.x.mean(0) - ref).norm()) / gap for ref in (free, post))
    assert got < 0.1 and off > 0.35, (got, off)
    # σ_y cancels in the paper's step (γ_n = σ_y² γ (1 − s)^α on ‖Ax − y‖²/(2σ_y²)): the assumed σ_y changes nothing
    same = [solve(prior, op, y, method="pnpflow", steps=5, sigma_y=s, generator=torch.Generator().manual_seed(3)).x
            for s in (None, 0.05)]
    assert torch.equal(*same)


def test_data_gradient_through_a_nonlinear_operator_is_the_adjoint_one():
    """∇½‖A(x) − y‖² by autograd through a 'nonlinear' operator (no Aᵀ) equals Aᵀ(Ax − y)."""
    prior, S, A, op, y = _gaussian_problem()
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), **F64)
    bent = operators.FunctionOperator(lambda v: v @ A.T, input_shape=(4,), output_shape=(2,))
    torch.testing.assert_close(data_gradient(bent, x, y), data_gradient(op, x, y), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(data_gradient(op, x, y), (x @ A.T - y) @ A, rtol=1e-12, atol=1e-12)


def test_tiny_prior_runs_fits_y_and_counts_its_nfe(prior):
    """The untrained tiny UNet checkpoint on 32×32 centre inpainting, and the closed-form 8×8 inpainting
    problem: finite, float32 in float32 out, counted NFE = declared, no backward pass, and the measured pixels
    fit y far better than the all-zero start does."""
    from invscore.checkpoint import load_denoiser
    from invscore.data import test_images
    from invscore.priors import CallablePrior
    x = test_images("fashion_mnist", 2) * 2 - 1
    tiny = CallablePrior(load_denoiser(prior), data_shape=(1, 32, 32))
    op32 = operators.make("inpaint_center", img_size=(1, 32, 32), noise=0.05)
    for p, op, y in ((tiny, op32, op32.measure(x, torch.Generator().manual_seed(0))), inpainting_problem()):
        res = solve(p, op, y, method="pnpflow", steps=12, samples=2, generator=torch.Generator().manual_seed(1))
        assert torch.isfinite(res.x).all() and res.x.dtype == torch.float32
        assert res.nfe == 12 * 2 == METHODS["pnpflow"](samples=2).nfe(12) and res.vjp == 0
        resid = float((op(res.x) - y).pow(2).mean().sqrt())
        assert resid < 0.5 * float(y.pow(2).mean().sqrt()), resid


def test_cli_runs_pnpflow(tmp_path, monkeypatch):
    import json
    from invscore.cli import main
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main(["inpaint", "--mask", "center", "--out", str(out), "--n", "2", "--quiet", "threads=1",
                 "method=pnpflow", "steps=3"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["method"] == "pnpflow" and s["nfe"] == 3 * METHODS["pnpflow"].defaults["samples"]


@pytest.mark.parametrize("options, match", [({"samples": 0}, "samples to be an integer >= 1"),
                                            ({"samples": 2.5}, "samples to be an integer >= 1"),
                                            ({"lr": -1.0}, "lr > 0 and finite"),
                                            ({"lr": "fast"}, "lr > 0 and finite"),
                                            ({"alpha": -0.5}, "alpha >= 0"),
                                            ({"gamma": 1.0}, "does not take")])
def test_bad_options_speak(options, match):
    prior, _, _, op, y = _gaussian_problem()
    with pytest.raises(ValueError, match=match) as err:
        solve(prior, op, y, method="pnpflow", **options)
    assert "\n" not in str(err.value)
