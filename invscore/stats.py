"""Distances between sample sets, used to test samplers against exact samples."""
from __future__ import annotations

import torch

__all__ = ["sliced_wasserstein", "frechet_distance"]


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_proj: int = 256, generator=None, p: int = 2,
                       directions: torch.Tensor | None = None) -> torch.Tensor:
    """Sliced p-Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015):
    ``SW_p = (E_θ W_p^p(θᵀx, θᵀy))^{1/p}`` over directions θ uniform on the sphere; each 1-D W_p is
    the mean of ``|sorted(θᵀx) − sorted(θᵀy)|^p``. ``x`` and ``y`` are ``(N, ...)`` with the same N.
    Pass ``directions`` (``(d, n_proj)``, unit columns) to compare several sets on the same slices."""
    x, y = x.flatten(1), y.flatten(1)
    if x.shape != y.shape:
        raise ValueError(f"sample sets must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if directions is None:
        directions = torch.randn(x.shape[1], n_proj, generator=generator, dtype=x.dtype,
                                 device=generator.device if generator is not None else x.device).to(x.device)
        directions = directions / directions.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ directions, dim=0)
    py, _ = torch.sort(y @ directions, dim=0)
    return ((px - py).abs() ** p).mean() ** (1 / p)


def frechet_distance(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, eq. 6; FID's formula):
    ``‖μ1 − μ2‖² + Tr(C1 + C2 − 2 (C1^{1/2} C2 C1^{1/2})^{1/2})``, from ``(N, d)`` features (any N ≥ 2 each);
    the matrix square roots by symmetric eigendecomposition (float64)."""
    f1, f2 = f1.flatten(1).double(), f2.flatten(1).double()
    if f1.shape[1] != f2.shape[1] or min(len(f1), len(f2)) < 2:
        raise ValueError(f"need two sets of at least 2 features of one size, got {tuple(f1.shape)} and {tuple(f2.shape)}")
    m1, m2 = f1.mean(0), f2.mean(0)
    c1, c2 = torch.cov(f1.T).reshape(f1.shape[1], -1), torch.cov(f2.T).reshape(f2.shape[1], -1)

    def sqrtm(c):
        w, q = torch.linalg.eigh((c + c.T) / 2)
        return (q * w.clamp_min(0).sqrt()) @ q.T

    r = sqrtm(c1)
    cross = torch.linalg.eigvalsh(r @ c2 @ r).clamp_min(0).sqrt().sum()
    return ((m1 - m2) ** 2).sum() + torch.trace(c1) + torch.trace(c2) - 2 * cross
