"""The mixture fixture with MCGdiff's random weights: the draw, and the exact posterior against brute force."""
import pytest
import torch

from invscore.testing import grid_mixture, mixture_posterior, mixture_problem, random_weights


def test_equal_weights_stay_the_default():
    """The default fixture is unchanged by the option: equal weights, and the same A, σ_y and y as asking
    for ``weights='equal'``; the random variant of a seed shares A and σ_y but not the weights."""
    assert torch.allclose(grid_mixture(8).log_w.exp(), torch.full((25,), 1 / 25, dtype=torch.float64))
    a, b, r = mixture_problem(8, 2, seed=10), mixture_problem(8, 2, seed=10, weights="equal"), \
        mixture_problem(8, 2, seed=10, weights="random")
    assert torch.equal(a.A, b.A) and torch.equal(a.y, b.y) and a.sigma_y == b.sigma_y
    assert torch.equal(a.A, r.A) and a.sigma_y == r.sigma_y
    w = r.prior.log_w.exp()
    assert abs(float(w.sum()) - 1) < 1e-12 and float(w.max() / w.min()) > 10
    again = mixture_problem(8, 2, seed=10, weights="random")
    assert torch.equal(again.prior.log_w, r.prior.log_w) and torch.equal(again.y, r.y)


def test_random_weights_are_a_dirichlet_half_draw():
    """w ∝ z², z ~ N(0, I): each weight is Beta(½, 12) with mean 1/25 and variance (1/25)(24/25)/(25/2 + 1)."""
    g = torch.Generator().manual_seed(0)
    w = torch.stack([random_weights(25, g) for _ in range(4000)])
    assert torch.allclose(w.sum(1), torch.ones(4000, dtype=torch.float64))
    var = (1 / 25) * (24 / 25) / 13.5
    se_mean = (var / w.numel()) ** 0.5
    assert abs(float(w.mean()) - 1 / 25) < 5 * se_mean
    assert abs(float(w.var()) / var - 1) < 0.05


def _brute_force(prior, A, y, sigma_y, half=24.0):
    """Posterior component weights, mean and covariance by summing prior × likelihood on a 2-D grid. The
    grid reaches 8 standard deviations beyond the outermost means (±16); its step is half the narrowest
    width of any integrand w_k N(x; μ_k, I) N(y; Ax, σ_y² I), 1/sqrt(1 + s_max²/σ_y²): by Poisson summation a
    Riemann sum of a Gaussian with step h ≤ σ/2 errs by ~exp(−2π²σ²/h²) < 1e-30, relatively."""
    s_max = float(torch.linalg.svdvals(A)[0])
    h = 0.5 / (1 + s_max**2 / sigma_y**2) ** 0.5
    t = torch.arange(-half, half + h / 2, h, dtype=torch.float64)
    X = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    loglik = -0.5 * ((X @ A.T - y) ** 2).sum(1) / sigma_y**2
    total, per_k = torch.zeros(X.shape[0], dtype=torch.float64), []
    for k in range(25):  # one component at a time keeps memory at one grid: w_k N(x; μ_k, I) p(y | x)
        c = (prior.log_w[k] - 0.5 * ((X - prior.means[k]) ** 2).sum(1) + loglik).exp()
        per_k.append(c.sum())
        total += c
    mass = torch.stack(per_k)
    z = total.sum()
    mean = (total[:, None] * X).sum(0) / z
    cov = ((total[:, None] * (X - mean)).T @ (X - mean)) / z
    return mass / z, mean, cov


@pytest.mark.parametrize("seed,d_y", [(3, 1), (4, 2)])
def test_posterior_with_random_weights_matches_brute_force_bayes(seed, d_y):
    """d = 2: the closed-form posterior's component weights w'_k ∝ w_k N(y; Aμ_k, AAᵀ + σ_y²I), its mean and
    covariance equal a direct numerical integration of w_k N(x; μ_k, I) N(y; Ax, σ_y²I) over a fine grid."""
    p = mixture_problem(2, d_y, seed=seed, weights="random")
    post = p.posterior
    w_bf, mean_bf, cov_bf = _brute_force(p.prior, p.A, p.y[0], p.sigma_y)
    w = post.log_w.exp()
    assert float((w - w_bf).abs().max()) < 1e-9, (w, w_bf)
    mean = (w[:, None] * post.means).sum(0)
    cov_within = (post.Q * post.lam[0]) @ post.Q.T
    spread = post.means - mean
    cov = cov_within + (w[:, None] * spread).T @ spread
    torch.testing.assert_close(mean, mean_bf, rtol=0, atol=1e-8)
    torch.testing.assert_close(cov, cov_bf, rtol=0, atol=1e-7)


def test_unequal_weights_reweight_the_posterior_by_the_prior_weights():
    """Bayes: for the same A, y and σ_y, log w'_k(random) − log w'_k(equal) = log w_k + a constant."""
    r = mixture_problem(8, 2, seed=7, weights="random")
    eq = mixture_posterior(grid_mixture(8), r.A, r.y[0], r.sigma_y)
    diff = r.posterior.log_w - eq.log_w - r.prior.log_w
    assert float(diff.max() - diff.min()) < 1e-9
    torch.testing.assert_close(r.posterior.means, eq.means)


def test_bad_weight_options_are_refused():
    with pytest.raises(ValueError, match="'equal' or 'random'"):
        mixture_problem(8, 2, weights="uniform")
    with pytest.raises(ValueError, match="25 entries"):
        grid_mixture(8, weights=torch.ones(24))
