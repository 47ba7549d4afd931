"""frechet_distance against the closed form for Gaussians with commuting covariances."""
import pytest
import torch

from invscore.stats import frechet_distance


def test_frechet_distance_matches_the_closed_form_on_exact_moments():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    a, b = torch.tensor([1.0, 2.0, 0.5, 3.0, 0.1], dtype=torch.float64), torch.tensor([2.0, 0.5, 0.5, 1.0, 4.0],
                                                                                        dtype=torch.float64)
    mu = torch.randn(5, generator=g, dtype=torch.float64)

    def with_moments(mean, var, n=400):
        """Samples whose empirical mean is ``mean`` and covariance q·diag(var)·qᵀ exactly (whitened draws)."""
        z = torch.randn(n, 5, generator=g, dtype=torch.float64)
        z = z - z.mean(0)
        z = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T
        return mean + (z * var.sqrt()) @ q.T

    expect = (mu ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum()
    torch.testing.assert_close(frechet_distance(with_moments(mu, a), with_moments(torch.zeros(5, dtype=torch.float64), b)),
                               expect, rtol=1e-8, atol=1e-8)
    x = with_moments(mu, a)
    assert abs(float(frechet_distance(x, x))) < 1e-8


def test_frechet_distance_refuses_mismatched_features():
    with pytest.raises(ValueError, match="two sets of at least 2 features"):
        frechet_distance(torch.randn(10, 3), torch.randn(10, 4))
