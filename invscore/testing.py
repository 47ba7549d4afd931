"""Closed-form posterior fixtures for testing samplers (library code, used by tests and benchmarks).

A Gaussian-mixture prior and a linear Gaussian measurement y = A x + σ_y n have a Gaussian-mixture
posterior (Bishop 2006, eq. 2.116–2.117), per component k with covariance C_k:

    Σ'_k = (C_k⁻¹ + AᵀA/σ_y²)⁻¹,   μ'_k = Σ'_k (C_k⁻¹ μ_k + Aᵀy/σ_y²),   w'_k ∝ w_k N(y; A μ_k, A C_k Aᵀ + σ_y² I).

:func:`mixture_problem` builds the setting of Cardoso et al. 2024 (MCGdiff, Sec. 5.1): 25 unit-covariance
components with means (8i, 8j), i, j ∈ {−2..2}, tiled over d/2 coordinate pairs, and a random A with
d_y rows and singular values in [0, 1]. Its weights are equal by default; ``weights="random"`` draws them
as MCGdiff's released code does (``scripts/viz_gaussian.py``: w_k ∝ z_k², z_k ~ N(0, 1) i.i.d., i.e. a
Dirichlet(½, …, ½) draw), so that fresh problem draws do not all share one symmetric prior.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .priors import GaussianMixture
from .priors.gaussian import linear_gaussian_update

__all__ = ["MixtureProblem", "mixture_problem", "grid_mixture", "random_weights", "mixture_posterior",
           "posterior_references"]


def random_weights(k: int, generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
    """MCGdiff's mixture weights (Cardoso et al. 2024, Sec. 5.1; their code draws ``randn(K) ** 2`` and
    normalises): w_k = z_k² / Σ_j z_j², z ~ N(0, I_K), a Dirichlet(½, …, ½) draw on the simplex."""
    z = torch.randn(k, generator=generator, dtype=dtype)
    return z**2 / (z**2).sum()


def grid_mixture(d: int, spacing: float = 8.0, dtype=torch.float64, weights=None) -> GaussianMixture:
    """25 unit-covariance components at (8i, 8j), i, j ∈ {−2..2}, tiled over d/2 pairs (MCGdiff, Sec. 5.1).

    ``weights``: ``None`` (equal, the default) or 25 non-negative numbers (normalised by the mixture), e.g.
    :func:`random_weights`."""
    if d % 2:
        raise ValueError(f"d must be even (pairs of coordinates), got {d}")
    g = torch.arange(-2, 3, dtype=dtype) * spacing
    pairs = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(25, 2)
    if weights is None:
        weights = torch.ones(25, dtype=dtype)
    weights = torch.as_tensor(weights, dtype=dtype)
    if weights.shape != (25,):
        raise ValueError(f"weights must have 25 entries (one per grid component), got shape {tuple(weights.shape)}; "
                         "pass None for equal weights or invscore.testing.random_weights(25, generator)")
    return GaussianMixture(weights, pairs.repeat(1, d // 2))


def mixture_posterior(prior: GaussianMixture, A: torch.Tensor, y: torch.Tensor, sigma_y: float) -> GaussianMixture:
    """Exact posterior of a unit- or shared-covariance mixture under ``y = A x + σ_y n`` (one y, shape (d_y,))."""
    if prior.Q is not None and prior.Q.ndim == 3:
        raise ValueError("mixture_posterior supports identity, isotropic or shared covariances")
    d = prior.dim
    eye = torch.eye(d, dtype=A.dtype, device=A.device)
    Q = prior.Q if prior.Q is not None else eye
    lam = prior.lam
    if not torch.allclose(lam, lam[:1].expand_as(lam)):
        raise ValueError("mixture_posterior needs one covariance shared by all components")
    means, cov, log_evidence = linear_gaussian_update((Q * lam[0]) @ Q.T, prior.means, A, y, sigma_y)
    return GaussianMixture(torch.softmax(prior.log_w + log_evidence, 0), means, cov)


@dataclass
class MixtureProblem:
    """A prior, an operator (``operators.DenseOperator`` with Gaussian noise), x, y and the exact posterior."""

    prior: GaussianMixture
    operator: object
    A: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    posterior: GaussianMixture

    @property
    def sigma_y(self) -> float:
        """The measurement noise, read from its one home: the operator's noise model."""
        return self.operator.sigma_y


def mixture_problem(d: int, d_y: int, seed: int = 0, sigma_y: float | None = None,
                    weights: str = "equal") -> MixtureProblem:
    """The MCGdiff-style fixture: random A = U diag(s) Vᵀ (Haar U, V; s ~ U[0, 1]), σ_y ~ U[0.1, 1] unless
    given, x from the prior and y = A x + σ_y n (one measurement).

    ``weights``: ``"equal"`` (the default) or ``"random"`` (MCGdiff's draw, :func:`random_weights`, from the
    same seed after A and σ_y, so both variants of one seed share A and σ_y)."""
    from operators import DenseOperator, GaussianNoise
    if weights not in ("equal", "random"):
        raise ValueError(f"weights must be 'equal' or 'random' (MCGdiff's draw), got {weights!r}")
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(d_y, d_y, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    s = torch.rand(d_y, generator=g, dtype=torch.float64)
    A = U @ torch.diag(s) @ V[:, :d_y].T
    sig = float(0.1 + 0.9 * torch.rand((), generator=g, dtype=torch.float64)) if sigma_y is None else float(sigma_y)
    # drawn after A and σ_y so that the equal-weight stream, and every existing fixture, is unchanged
    prior = grid_mixture(d, weights=random_weights(25, g) if weights == "random" else None)
    x = prior.sample(1, generator=g)
    y = x @ A.T + sig * torch.randn(1, d_y, generator=g, dtype=torch.float64)
    op = DenseOperator(A, noise=GaussianNoise(sig))
    return MixtureProblem(prior, op, A, x, y, mixture_posterior(prior, A, y[0], sig))


def posterior_references(problem: MixtureProblem, n: int, steps: int, seed: int = 0, n_proj: int = 200):
    """The yardsticks of a posterior-sampling comparison on ``problem``: ``n`` exact posterior samples,
    fixed slicing directions, the *floor* (mean sliced W2 between two independent exact sets of size n,
    over 4 pairs) and the *oracle* (sliced W2 of the ancestral sampler with ``steps`` steps driven by the
    exact posterior's own denoiser: the best a sampler started from N(0, I) can do)."""
    from .priors import Diffusion
    from .samplers import sample_pc, time_grid
    from .sde import VPSDE
    from .stats import sliced_wasserstein
    g = torch.Generator().manual_seed(seed)
    exact = problem.posterior.sample(n, g)
    dirs = torch.randn(problem.prior.dim, n_proj, generator=g, dtype=torch.float64)
    dirs /= dirs.norm(dim=0)
    floor = sum(float(sliced_wasserstein(exact, problem.posterior.sample(n, g), directions=dirs))
                for _ in range(4)) / 4
    sde = VPSDE()
    x = sde.prior_sampling((n, problem.prior.dim), generator=g, dtype=torch.float64)
    oracle_x = sample_pc(Diffusion(problem.posterior, sde), x, time_grid(sde, steps, dtype=torch.float64),
                         predictor="ancestral", generator=g).x
    return exact, dirs, floor, float(sliced_wasserstein(oracle_x, exact, directions=dirs))
