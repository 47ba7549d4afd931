"""The straight path of flow matching / rectified flow as a linear SDE, so flow priors use every sampler and
posterior method unchanged.

Rectified flow (Liu et al. 2023) and flow matching with the optimal-transport path (Lipman et al. 2023,
eq. 20–23; Stable Diffusion 3, Esser et al. 2024) interpolate ``x_t = (1 − t) x0 + t ε``: a linear
perturbation kernel with ``alpha = 1 − t`` and ``sigma = t``. As an SDE (Song et al. 2021, eq. 5) its
drift and diffusion are ``f = d log alpha/dt = −1/(1 − t)`` and ``g² = dσ²/dt − 2fσ² = 2t/(1 − t)``; its
probability-flow ODE ``dx/dt = f x − ½ g² ∇log p_t`` is exactly the flow ``dx/dt = v(x, t) = E[ε − x0 | x_t]``
(substitute the score ``((1 − t) x̂0 − x)/t²``), and DDIM on it is the flow's Euler step. A velocity network
is then a :class:`~invscore.priors.NetworkPrior` with ``parametrization='flow'``.
"""
from __future__ import annotations

import torch

from .sde import SDE

__all__ = ["FlowSDE"]


class FlowSDE(SDE):
    """``x_t = (1 − t) x0 + t ε`` on ``t ∈ [t_min, T]`` with ``T < 1`` (at t = 1 the signal is gone and
    σ/α is infinite); ``T = 0.999`` reaches σ/α = 999, beyond any trained denoiser's range."""

    def __init__(self, T: float = 0.999, t_min: float = 1e-4):
        if not 0 < t_min < T < 1:
            raise ValueError(f"FlowSDE needs 0 < t_min < T < 1, got t_min={t_min}, T={T}")
        self.T, self.t_min = float(T), float(t_min)
        self.prior_std = self.T  # x_T = (1 − T) x0 + T ε: the data's share (1 − T) is left out of p_T

    def log_alpha(self, t):
        return torch.log1p(-torch.as_tensor(t))

    def sigma(self, t):
        return torch.as_tensor(t).clone()

    def f(self, t):
        return -1 / (1 - torch.as_tensor(t))

    def g2(self, t):
        t = torch.as_tensor(t)
        return 2 * t / (1 - t)

    def ratio_to_t(self, r):
        r = torch.as_tensor(r)
        return r / (1 + r)
