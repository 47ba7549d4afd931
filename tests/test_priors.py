"""Priors: exact closed-form denoisers (Tweedie), parametrisation adapters that invert each other, frozen."""
import pytest
import torch
from torch import nn

from invscore.priors import (CallablePrior, DiagonalGaussian, Diffusion, Gaussian, GaussianMixture, NetworkPrior,
                             StationaryGaussian)
from invscore.sde import SubVPSDE, VESDE, VPSDE


def _tweedie_from_logp(prior, x, sigma):
    """E[x0 | x] = x + sigma² ∇ log p_sigma(x) (Tweedie / Miyasawa), by autograd of the exact log-density."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(prior.log_prob(x, sigma).sum(), x)
    return x.detach() + sigma**2 * grad


def test_mixture_denoiser_is_tweedie():
    from conftest import mixture_20d
    gm = mixture_20d()
    x = 3 * torch.randn(16, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for s in [0.05, 0.7, 4.0]:
        sig = torch.full((16,), s, dtype=torch.float64)
        torch.testing.assert_close(gm.denoise(x, sig), _tweedie_from_logp(gm, x, s), rtol=1e-5, atol=1e-6)


def _component_covs(gm):
    """C_k = Q_k diag(lam_k) Q_kᵀ, shape (K, d, d), from the mixture's stored eigendecomposition."""
    K, d = gm.means.shape
    if gm.Q is None:
        return torch.diag_embed(gm.lam)
    Q = gm.Q.expand(K, d, d)
    return Q @ torch.diag_embed(gm.lam) @ Q.transpose(1, 2)


def test_test_mixtures_have_their_weights_and_sample_their_moments(mixture):
    """The conftest mixtures the sampler tests take as ground truth: K components of dimension d, normalised
    weights as written there, and exact samples whose label frequencies, per-component means and covariances
    and overall mean match the closed form. Tolerances from n = 20000 draws (fixed seed): 4 standard errors
    for frequencies (sqrt(w(1−w)/n)) and means (sqrt(C_ii/n_k), overall sqrt(Σ_ii/n) with Σ the mixture's
    covariance Σ_k w_k (C_k + mu_k mu_kᵀ) − mu muᵀ), 5 for covariance entries (Gaussian:
    sqrt((C_ii C_jj + C_ij²)/n_k))."""
    gm = mixture
    K, d = gm.means.shape
    w = gm.log_w.exp()
    assert gm.dim == d and gm.data_shape == (d,) and gm.means.dtype == gm.lam.dtype == torch.float64
    torch.testing.assert_close(w, torch.tensor({2: [0.5, 0.3, 0.2], 20: [0.4, 0.3, 0.2, 0.1]}[d], dtype=torch.float64))
    covs = _component_covs(gm)
    if d == 2:  # isotropic variances 0.6, 0.3, 0.4
        torch.testing.assert_close(covs, torch.tensor([0.6, 0.3, 0.4], dtype=torch.float64)[:, None, None]
                                   * torch.eye(2, dtype=torch.float64))
    else:  # L Lᵀ/d + 0.2 I: full, and no eigenvalue below 0.2
        assert (torch.linalg.eigvalsh(covs) > 0.2 - 1e-12).all() and (covs - torch.diag_embed(
            torch.diagonal(covs, dim1=1, dim2=2))).abs().max() > 0.01
    n = 20000
    x, k = gm.sample(n, generator=torch.Generator().manual_seed(8), return_labels=True)
    assert x.shape == (n, d) and x.dtype == torch.float64 and k.shape == (n,)
    freq = torch.bincount(k, minlength=K).double() / n
    assert ((freq - w).abs() < 4 * (w * (1 - w) / n).sqrt()).all(), (freq, w)
    for j in range(K):
        xj, C = x[k == j], covs[j]
        nj = xj.shape[0]
        assert ((xj.mean(0) - gm.means[j]).abs() < 4 * (C.diag() / nj).sqrt()).all(), j
        tol = 5 * ((C.diag()[:, None] * C.diag()[None] + C**2) / nj).sqrt()
        assert ((torch.cov(xj.T) - C).abs() < tol).all(), j
    mu = w @ gm.means
    total = (w[:, None, None] * (covs + gm.means[:, :, None] * gm.means[:, None, :])).sum(0) - torch.outer(mu, mu)
    assert ((x.mean(0) - mu).abs() < 4 * (total.diag() / n).sqrt()).all()


def test_mixture_log_prob_is_a_density_and_denoiser_a_monte_carlo_tweedie_mean():
    """mixture_2d: exp(log_prob(·, σ)) integrates to 1 for σ = 0 and 1 (a Riemann sum with step 0.05 on a box
    reaching 7 std beyond every component: exact to ~1e-12 for Gaussians this smooth; the autograd Tweedie
    test is blind to a constant in log p), and denoise(x, σ) equals the Monte-Carlo posterior mean
    E[x0 | x0 + σz = x] ≈ Σ_i w_i x0_i / Σ_i w_i, w_i = N(x; x0_i, σ² I), over n = 100000 exact prior
    samples, within 5 of that self-normalised estimate's standard errors sqrt(Var_w[x0] / ESS)."""
    from conftest import mixture_2d
    gm = mixture_2d()
    h = 0.05
    a = torch.arange(-12, 12, h, dtype=torch.float64)
    b = torch.arange(-9, 12, h, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(a, b, indexing="ij"), -1).reshape(-1, 2)
    for s in (0.0, 1.0):
        assert abs(float(gm.log_prob(grid, s).exp().sum()) * h * h - 1) < 1e-8, s
    x0 = gm.sample(100_000, generator=torch.Generator().manual_seed(21))
    pts = torch.tensor([[-3.0, 0.5], [0.0, 0.0], [1.5, 1.5], [4.0, -1.0], [0.0, 5.0]], dtype=torch.float64)
    for s in (0.5, 1.0, 3.0):
        wts = torch.softmax(-0.5 * ((pts[:, None] - x0[None]) ** 2).sum(-1) / s**2, dim=1)  # (5, n)
        est = wts @ x0
        se = ((wts @ x0**2 - est**2) * (wts**2).sum(1, keepdim=True)).sqrt()  # sqrt(Var_w / ESS)
        exact = gm.denoise(pts, torch.full((5,), s, dtype=torch.float64))
        assert ((est - exact).abs() < 5 * se).all(), (s, est, exact, se)
        # and it has teeth: the posterior mean is far (> 10 tolerances) from the input at some point
        assert (exact - pts).norm(dim=1).max() > 10 * se.max()


def test_isotropic_shared_and_full_covariances_agree():
    g = torch.Generator().manual_seed(1)
    means = torch.randn(3, 5, generator=g, dtype=torch.float64)
    var = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    iso = GaussianMixture(torch.ones(3), means, var)
    full = GaussianMixture(torch.ones(3), means, var[:, None, None] * torch.eye(5, dtype=torch.float64))
    shared = GaussianMixture(torch.ones(3), means, 0.7 * torch.eye(5, dtype=torch.float64))
    iso_shared = GaussianMixture(torch.ones(3), means, torch.full((3,), 0.7, dtype=torch.float64))
    x, s = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.full((7,), 0.3, dtype=torch.float64)
    torch.testing.assert_close(iso.denoise(x, s), full.denoise(x, s))
    torch.testing.assert_close(shared.denoise(x, s), iso_shared.denoise(x, s))
    torch.testing.assert_close(iso.log_prob(x), full.log_prob(x))


def test_gaussian_denoiser_closed_form_and_samples():
    g = torch.Generator().manual_seed(2)
    L = torch.randn(4, 4, generator=g, dtype=torch.float64)
    C, mu = L @ L.T + 0.1 * torch.eye(4, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    prior = Gaussian(mu, C)
    x, s = torch.randn(3, 4, generator=g, dtype=torch.float64), 0.8
    expected = mu + (x - mu) @ torch.linalg.solve(C + s**2 * torch.eye(4, dtype=torch.float64), C)
    torch.testing.assert_close(prior.denoise(x, torch.full((3,), s, dtype=torch.float64)), expected)
    samples = prior.sample(40000, generator=g)
    torch.testing.assert_close(torch.cov(samples.T), C, atol=0.08 * float(C.diag().max()), rtol=0.0)


def test_stationary_gaussian_equals_its_full_covariance():
    """The Fourier-diagonal prior equals N(mu, C) with C = Fᴴ diag(P) F built explicitly."""
    prior = StationaryGaussian.radial((1, 6, 6), corner=0.2, exponent=2.0)
    n = 36
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, 6, 6)
    # C column by column: C e_i = F^-1 [P · F e_i]
    C = torch.fft.ifft2(prior.P * torch.fft.fft2(eye, norm="ortho"), norm="ortho").real.reshape(n, n)
    full = Gaussian(torch.zeros(n, dtype=torch.float64), C)
    x = torch.randn(5, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    s = torch.full((5,), 0.4, dtype=torch.float64)
    torch.testing.assert_close(prior.denoise(x, s).reshape(5, n), full.denoise(x.reshape(5, n), s))
    torch.testing.assert_close(prior.log_prob(x, 0.4), full.log_prob(x.reshape(5, n), 0.4))
    # exact samples mu + F⁻¹[sqrt(P) F z] have covariance C: mean within 4 standard errors sqrt(C_ii/m), entries
    # within 5, sqrt((C_ii C_jj + C_ij²)/m), for m = 4000 Gaussian draws (fixed seed)
    m = 4000
    xs = prior.sample(m, generator=torch.Generator().manual_seed(4))
    assert xs.shape == (m, 1, 6, 6) and xs.dtype == torch.float64
    xs = xs.reshape(m, n)
    assert (xs.mean(0).abs() < 4 * (C.diag() / m).sqrt()).all()
    tol = 5 * ((C.diag()[:, None] * C.diag()[None] + C**2) / m).sqrt()
    assert ((torch.cov(xs.T) - C).abs() < tol).all()


def test_diagonal_gaussian():
    prior = DiagonalGaussian(torch.zeros(2, 3, dtype=torch.float64), torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(prior.denoise(x, torch.full((4,), 1.0, dtype=torch.float64)),
                               x * torch.tensor([0.5, 2 / 3, 0.8], dtype=torch.float64))
    torch.testing.assert_close(_tweedie_from_logp(prior, x, 1.0), prior.denoise(x, torch.ones(4, dtype=torch.float64)))


class _ExactNet(nn.Module):
    """A 'network' that outputs the exact eps/x0/v/score of a mixture under a native SDE — to check that
    each adapter inverts its parametrisation back to the same denoiser."""

    def __init__(self, prior, sde, kind, time_input):
        super().__init__()
        self.prior, self.sde, self.kind, self.time_input = prior, sde, kind, time_input
        self.lin = nn.Linear(1, 1)  # a parameter, to check freezing

    def forward(self, xt, c):
        t = c if self.time_input == "t" else c / 999
        a, s = self.sde.alpha(t)[:, None], self.sde.sigma(t)[:, None]
        x0 = self.prior.denoise(xt / a, (s / a)[:, 0])
        eps = (xt - a * x0) / s
        return {"x0": x0, "eps": eps, "v": a * eps - s * x0, "score": -eps / s}[self.kind]


@pytest.mark.parametrize("kind", ["x0", "eps", "v", "score"])
@pytest.mark.parametrize("time_input", ["t", "ddpm"])
def test_parametrisation_adapters_invert(kind, time_input):
    from conftest import mixture_2d
    gm, sde = mixture_2d(), VPSDE()
    net = _ExactNet(gm, sde, kind, time_input)
    prior = NetworkPrior(net, sde, parametrization=kind, time_input=time_input, num_steps=1000)
    x = 2 * torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    for s in [0.02, 0.5, 5.0]:
        sig = torch.full((6,), s, dtype=torch.float64)
        torch.testing.assert_close(prior.denoise(x, sig), gm.denoise(x, sig), rtol=1e-6, atol=1e-8)
    assert not any(p.requires_grad for p in prior.parameters())


def test_v_parametrisation_needs_vp():
    """'v' is refused for every SDE with alpha² + sigma² != 1 (VE, and sub-VP, whose sigma = 1 − alpha² is
    smaller than VP's) and accepted for VP whatever its beta range; unknown names are refused."""
    for sde in (VESDE(), SubVPSDE()):
        with pytest.raises(ValueError, match="variance-preserving"):
            NetworkPrior(nn.Identity(), sde, parametrization="v")
    for sde in (VPSDE(), VPSDE(beta_min=0.5, beta_max=5.0)):
        assert NetworkPrior(nn.Identity(), sde, parametrization="v").parametrization == "v"
    with pytest.raises(ValueError, match="unknown parametrization"):
        NetworkPrior(nn.Identity(), VPSDE(), parametrization="nope")


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
def test_diffusion_score_eps_x0_consistent(sde):
    """score = ∇ log p_t exactly: p_t(x) = alpha^-d p_r(x / alpha) with r = sigma/alpha."""
    from conftest import mixture_2d
    gm = mixture_2d()
    model = Diffusion(gm, sde)
    t = torch.tensor(0.4, dtype=torch.float64)
    x = torch.randn(5, 2, dtype=torch.float64).requires_grad_(True)
    a, r = sde.alpha(t), sde.ratio(t)
    (grad,) = torch.autograd.grad(gm.log_prob(x / a, r).sum(), x)
    torch.testing.assert_close(model.score(x.detach(), t), grad)
    torch.testing.assert_close(model.eps(x.detach(), t), -sde.sigma(t) * grad)
    assert model.nfe == 2


def test_frozen_prior_keeps_eval_and_passes_input_gradients():
    class Denoiser(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))

        def forward(self, x, sigma):
            return self.body(x)

    net = Denoiser()
    prior = CallablePrior(lambda x, s: net(x, s))
    prior2 = CallablePrior(net)
    prior2.train()
    assert not prior2.training and not net.training
    assert not any(p.requires_grad for p in net.parameters())
    before = [p.clone() for p in net.parameters()]
    lin = net.body[0]
    x = torch.randn(3, 2, requires_grad=True, generator=torch.Generator().manual_seed(0))
    out = prior2(x, torch.ones(3))
    # dropout (p = 0.5) is off: the output is the linear layer's, exactly, for both wrappers
    torch.testing.assert_close(out, x @ lin.weight.T + lin.bias, rtol=0, atol=0)
    torch.testing.assert_close(prior(x, torch.ones(3)), out, rtol=0, atol=0)
    out.sum().backward()
    # the input gets d/dx Σ(Wx + b) = 1ᵀW in every row; the parameters get nothing and are unchanged
    torch.testing.assert_close(x.grad, lin.weight.sum(0).expand(3, 2))
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_check_input_messages():
    prior = GaussianMixture(torch.ones(2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"expected \(B, 3\), got \(4, 5\)"):
        prior.check_input(torch.zeros(4, 5))
    with pytest.raises(TypeError, match="floating-point"):
        prior.check_input(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="weights must be"):
        GaussianMixture(torch.tensor([-1.0, 1.0]), torch.zeros(2, 3))


def test_gaussian_posterior_with_isotropic_covariance():
    """Regression: an isotropic covariance (no eigenbasis stored) has a posterior too."""
    prior = Gaussian(torch.zeros(3, dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64))
    A = torch.eye(2, 3, dtype=torch.float64)
    mean, cov = prior.posterior(A, torch.ones(2, dtype=torch.float64), 1.0)
    torch.testing.assert_close(mean, torch.tensor([2 / 3, 2 / 3, 0.0], dtype=torch.float64))
    torch.testing.assert_close(cov.diag(), torch.tensor([2 / 3, 2 / 3, 2.0], dtype=torch.float64))


@pytest.mark.parametrize("kind", ["x0", "eps", "v", "score"])
@pytest.mark.parametrize("time_input", ["step", "step_nearest"])
def test_parametrisation_adapters_invert_on_a_discrete_schedule(kind, time_input):
    """The exact network of mixture_2d conditioned on the DDPM step (t = (i+1)/N): 'step' is exact at any sigma,
    'step_nearest' at sigmas of trained steps; both refuse a continuous SDE."""
    from conftest import mixture_2d
    from invscore.sde import DiscreteVPSDE

    class StepNet(_ExactNet):
        def forward(self, xt, c):
            return super().forward(xt, self.sde.step_to_t(c))

    gm, sde = mixture_2d(), DiscreteVPSDE.schedule("linear")
    net = StepNet(gm, sde, kind, "t")
    prior = NetworkPrior(net, sde, parametrization=kind, time_input=time_input)
    x = 2 * torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    steps = [3.0, 200.0, 900.0] if time_input == "step_nearest" else [3.4, 200.0, 900.7]
    for i in steps:
        sig = sde.ratio(sde.step_to_t(torch.full((6,), i, dtype=torch.float64)))
        torch.testing.assert_close(prior.denoise(x, sig), gm.denoise(x, sig), rtol=1e-6, atol=1e-8)
    assert not any(p.requires_grad for p in prior.parameters())
    with pytest.raises(ValueError, match="discrete-schedule SDE"):
        NetworkPrior(net, VPSDE(), parametrization=kind, time_input=time_input)
