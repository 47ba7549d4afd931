"""Distances between sample sets, used to test samplers against exact samples."""
from __future__ import annotations

import torch

__all__ = ["sliced_wasserstein"]


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
