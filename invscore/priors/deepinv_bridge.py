"""An invscore prior as a deepinv (0.5) ``Denoiser``, so deepinv's samplers run on the same frozen prior.

Conventions bridged (``docs/CONVENTIONS.md`` vs ``deepinv/sampling/diffusion.py``): invscore's denoiser
D(x, σ) ≈ E[x0 | x0 + σz = x] works on data x in variance-exploding units (EDM, Karras et al. 2022,
eq. 2–3); deepinv's denoisers take images u ∈ [0, 1] with σ in u units (DDRM calls them from σ = 1 to 0,
DiffPIR at ``x/(2√ᾱ) + 1/2``, DPS through ``MinusOneOneDenoiserWrapper``). With x = c (2u − 1), so that
σ_x = 2c σ_u, the exact translation is

    D_u(u, σ_u) = (D(c (2u − 1), 2c σ_u) / c + 1) / 2,

c = 1 for images in [-1, 1]; the closed-form benchmarks use a larger c to fit their mixtures into [0, 1].
The operator side is ``operators.to_deepinv(op, unit_scale=c)`` and ``operators.to_unit_measurement``.
Importing this module imports deepinv (seconds); ``import invscore`` does not.
"""
from __future__ import annotations

import deepinv
import torch

from .base import as_prior

__all__ = ["UnitDenoiser"]


class UnitDenoiser(deepinv.models.Denoiser):
    """An invscore prior (or denoiser D(x, σ)) on x = c (2u − 1) as a deepinv denoiser on u ∈ [0, 1]:
    D_u(u, σ_u) = (D(c (2u − 1), 2c σ_u) / c + 1) / 2 (module docstring).

    ``scale`` is c. ``dtype``: the prior's working dtype (float32 for a network; deepinv's samplers may
    carry float64 states), None to keep the input's. ``sigma_min`` clamps 2c σ_u from below: deepinv's
    DDRM asks for σ = 0 at its last step, where a network's EDM preconditioning (c_noise = ¼ log σ) is
    undefined. Inputs are reshaped to the prior's ``data_shape`` and back. ``calls`` counts forward
    calls; each denoises the whole batch once, i.e. one NFE per image.
    """

    def __init__(self, prior, scale: float = 1.0, dtype: torch.dtype | None = None, sigma_min: float = 0.0):
        super().__init__()
        if not float(scale) > 0:
            raise ValueError(f"UnitDenoiser: scale must be > 0 (x = scale·(2u − 1)), got {scale}")
        self.prior = as_prior(prior)
        self.scale, self.work_dtype, self.sigma_min = float(scale), dtype, float(sigma_min)
        self.calls = 0

    def forward(self, x, sigma, *args, **kwargs):
        """D_u(u, σ_u) for u = ``x`` (B, ...) and σ_u a float or a (B,) tensor."""
        self.calls += 1
        B, c = x.shape[0], self.scale
        dtype = self.work_dtype or x.dtype
        shape = self.prior.data_shape
        u = x.reshape(B, *shape) if shape is not None else x
        s = torch.as_tensor(sigma, dtype=dtype, device=x.device).reshape(-1)
        s = s.expand(B) if s.numel() == 1 else s
        x0 = self.prior.denoise(c * (2 * u.to(dtype) - 1), (2 * c * s).clamp(min=self.sigma_min))
        return (x0 / (2 * c) + 0.5).reshape(x.shape).to(x.dtype)
