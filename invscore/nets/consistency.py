"""Consistency models (Song, Dhariwal, Chen & Sutskever 2023): a network f(x, σ) that maps every point of a
probability-flow ODE trajectory to the trajectory's origin, so one evaluation is a sample and one evaluation
is an x̂0 estimate inside an inverse-problem step.

The parametrisation (Song et al. 2023, eq. 3 and App. C) enforces the boundary condition f(x, σ_min) = x:
``f(x, σ) = c_skip(σ)·x + c_out(σ)·F_θ(c_in(σ)·x, c_noise(σ))`` with
``c_skip = σd² / ((σ − σ_min)² + σd²)``, ``c_out = (σ − σ_min)·σd / √(σ² + σd²)``, EDM's ``c_in`` and ``c_noise``.
Served through the denoiser interface ``D(x, σ)``, so every sampler and posterior method runs on it; unlike a
denoiser its output is the ODE's endpoint, not E[x0 | x] (a sample of the data, not a posterior mean).
"""
from __future__ import annotations

import torch
from torch import nn

from ..utils import sigma_per_image

__all__ = ["ConsistencyDenoiser", "consistency_coefficients"]


def consistency_coefficients(sigma: torch.Tensor, sigma_data: float, sigma_min: float):
    """(c_skip, c_out, c_in, c_noise) of Song et al. 2023, App. C (EDM's c_in, c_noise = ¼ ln σ)."""
    s2 = sigma ** 2 + sigma_data ** 2
    c_skip = sigma_data ** 2 / ((sigma - sigma_min) ** 2 + sigma_data ** 2)
    c_out = (sigma - sigma_min) * sigma_data / s2.sqrt()
    return c_skip, c_out, 1.0 / s2.sqrt(), sigma.log() / 4


class ConsistencyDenoiser(nn.Module):
    """f(x, σ) of the module docstring around a UNet F_θ(x_in, c_noise); x: (B, C, H, W), sigma: (B,) or scalar."""

    def __init__(self, net: nn.Module, sigma_data: float = 0.5, sigma_min: float = 0.002):
        super().__init__()
        self.net = net
        self.sigma_data, self.sigma_min = float(sigma_data), float(sigma_min)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma = sigma_per_image(sigma, x)
        c_skip, c_out, c_in, c_noise = consistency_coefficients(sigma, self.sigma_data, self.sigma_min)
        v = lambda c: c.view(-1, 1, 1, 1)  # noqa: E731
        return v(c_skip) * x + v(c_out) * self.net(v(c_in) * x, c_noise).to(x.dtype)
