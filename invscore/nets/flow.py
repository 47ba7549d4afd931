"""A rectified-flow velocity network served as a VE denoiser, and the flow-matching loss that trains it.

Rectified flow (Liu et al. 2023, eq. 1) and flow matching on the optimal-transport path (Lipman et al. 2023,
eq. 20–23) interpolate ``x_t = (1 − t) x0 + t ε`` and regress ``v_θ(x_t, t)`` on ``ε − x0``. Since
``x_t − t·v = x0`` for the true conditional velocity, ``x̂0 = x_t − t·v_θ`` is the network's Tweedie estimate
E[x0 | x_t]. A VE query ``x = x0 + σ n`` is the flow state at ``t = σ/(1 + σ)`` scaled by ``1/(1 − t) = 1 + σ``,
so the same network is a denoiser ``D(x, σ)`` and every sampler and posterior method of invscore runs on it
unchanged (under ``sde='flow'`` the flow ODE itself, :class:`~invscore.sde_flow.FlowSDE`).
"""
from __future__ import annotations

import torch
from torch import nn

from ..utils import sigma_per_image

__all__ = ["FlowDenoiser", "flow_matching_loss"]


class FlowDenoiser(nn.Module):
    """D(x, σ) = x_t − t·v_θ(x_t, c(t)) with t = σ/(1+σ), x_t = x/(1+σ)  (see the module docstring).

    The velocity network gets ``c(t) = ¼ ln(t/(1 − t)) = ¼ ln σ``, EDM's noise input (Karras et al. 2022,
    Table 1), so it shares the UNet and its embedding with the score priors. x: (B, C, H, W) in VE
    coordinates; sigma: (B,) or a scalar.
    """

    def __init__(self, net: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)  # kept for cards and tools that read it; the flow path needs none

    def velocity(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v_θ(x_t, t) ≈ E[ε − x0 | x_t] on the straight path; t: (B,) in (0, 1)."""
        return self.net(xt, (torch.log(t) - torch.log1p(-t)) / 4).to(xt.dtype)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma = sigma_per_image(sigma, x)
        t = sigma / (1 + sigma)
        xt = x / (1 + sigma).view(-1, 1, 1, 1)
        return xt - t.view(-1, 1, 1, 1) * self.velocity(xt, t)


def flow_matching_loss(model: FlowDenoiser, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Conditional flow matching (Lipman et al. 2023, eq. 23; Liu et al. 2023, eq. 1):
    L = E ‖v_θ((1 − t) x0 + t ε, t) − (ε − x0)‖²  (mean over pixels and batch); t: (B,) in (0, 1)."""
    tt = t.view(-1, 1, 1, 1)
    xt = (1 - tt) * x0 + tt * noise
    return ((model.velocity(xt, t) - (noise - x0)) ** 2).mean()
