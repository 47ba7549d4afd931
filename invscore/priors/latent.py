"""Latent diffusion priors (Rombach et al. 2022): a score prior on the latents z of an autoencoder, x = 𝒟(z).

The measurement acts on the decoded image, y = A(𝒟(z)) + n, so posterior sampling runs in latent space on the
operator A ∘ 𝒟 (:class:`LatentOperator`) and the result is decoded. ``solve`` does this whenever its prior is
a :class:`LatentPrior`; every method that takes a differentiable operator (DPS, DAPS, …) then works in latent
space, and PSLD (:mod:`invscore.conditional.psld`) adds its gluing term. Gradients of the data term pass
through the decoder: its forward and backward passes are counted (``autoencoder_nfe``, ``autoencoder_vjp``) because
on a real latent model they cost as much as the score network.
"""
from __future__ import annotations

import torch
from torch import nn

from operators import Operator

from .base import Prior, freeze

__all__ = ["LatentPrior", "LatentOperator", "load_latent_prior"]


class LatentPrior(Prior):
    """``denoise(z, σ)`` = E[z0 | z] of a latent score network; ``decode`` / ``encode`` the autoencoder's
    𝒟(z) and mean E(x). ``data_shape`` is the latent shape, ``pixel_shape`` the decoded image's."""

    def __init__(self, denoiser, autoencoder: nn.Module, latent_shape=None, pixel_shape=None, sigma_range=None):
        super().__init__()
        self.net, self.autoencoder = denoiser, freeze(autoencoder)
        if isinstance(denoiser, nn.Module):
            freeze(denoiser)
        self.data_shape = tuple(latent_shape if latent_shape is not None else getattr(denoiser, "data_shape"))
        self.pixel_shape = tuple(pixel_shape if pixel_shape is not None else
                                 (autoencoder.in_channels, *(autoencoder.factor * s for s in self.data_shape[1:])))
        sigma_range = sigma_range if sigma_range is not None else getattr(denoiser, "sigma_range", None)
        self.sigma_range = tuple(float(s) for s in sigma_range) if sigma_range is not None else None

    def denoise(self, z, sigma):
        return self.net(z, sigma)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x = 𝒟(z)."""
        return self.autoencoder.decode(z)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z = E(x), the posterior mean of q(z | x)."""
        return self.autoencoder.encode(x)[0]


class LatentOperator(Operator):
    """The operator A ∘ 𝒟 on latents: ``A(z) = pixel_op(𝒟(z))``, with ``pixel_op``'s noise model and output
    shape; counts the autoencoder's forward passes (``nfe``: decoder, and encoder where a method uses it) and
    backward passes through them (``vjp``), per batch."""

    def __init__(self, pixel_op: Operator, prior: LatentPrior):
        if not isinstance(pixel_op, Operator):
            raise TypeError(f"a latent prior needs an operators.Operator on images, got {type(pixel_op).__name__}")
        if tuple(pixel_op.input_shape) != tuple(prior.pixel_shape):
            raise ValueError(f"the operator takes {tuple(pixel_op.input_shape)} images but the latent prior decodes "
                             f"to {tuple(prior.pixel_shape)}; build the operator for the decoded image size")
        super().__init__(prior.data_shape, pixel_op.output_shape, pixel_op.noise)
        self.pixel_op, self.prior = pixel_op, prior
        self.nfe = self.vjp = 0

    def _count_vjp(self, grad):
        self.vjp += 1
        return grad

    def _counted(self, fn, v: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        out = fn(v)
        if out.requires_grad:
            out.register_hook(self._count_vjp)
        return out

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """𝒟(z), counted."""
        return self._counted(self.prior.decode, z)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E(x), counted."""
        return self._counted(self.prior.encode, x)

    def _A(self, z: torch.Tensor) -> torch.Tensor:
        return self.pixel_op._A(self.decode(z))


def load_latent_prior(denoiser: nn.Module, card: dict, device, where=None) -> LatentPrior:
    """The :class:`LatentPrior` of a latent denoiser whose card names its ``autoencoder``: a shipped name, or
    a path relative to the denoiser's checkpoint ``where``."""
    from pathlib import Path
    from ..checkpoint import load_autoencoder
    name = card.get("autoencoder")
    if not name:
        raise ValueError(f"latent prior {card.get('name')!r} does not name its autoencoder in its card "
                         "('autoencoder': a shipped name or a .safetensors path)")
    beside = Path(where).parent / name if where is not None else None
    ae = load_autoencoder(beside if beside is not None and beside.exists() else name, device=device)
    shape = (int(card["channels"]), int(card["image_size"]), int(card["image_size"]))
    pixel = tuple(card.get("pixel_shape") or (ae.card["channels"], ae.card["image_size"], ae.card["image_size"]))
    return LatentPrior(denoiser, ae, latent_shape=shape, pixel_shape=pixel)
