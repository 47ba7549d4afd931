"""A small KL-regularised autoencoder: the first stage of latent diffusion (Rombach et al. 2022, sec. 3.1).

The encoder maps an image x ∈ [-1, 1]^{C×S×S} to a diagonal Gaussian q(z | x) = N(μ(x), diag e^{ℓ(x)}) on
a latent of ``latent_channels × S/f × S/f`` (f = 2^{levels−1}); the decoder maps z back to the image. Latents
are served scaled, z = s·μ, with s chosen after training so that the training latents have standard
deviation σ_data = 0.5 (the role of Stable Diffusion's 0.18215), so a latent score prior trains and samples
with the same EDM settings as a pixel prior.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from ..sde import randn_like
from .unet import _groups


class _Res(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x)))))) / √2, with a 1×1 skip when the width changes."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(_groups(cin), cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
                                  nn.GroupNorm(_groups(cout), cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        return (self.skip(x) + self.body(x)) / math.sqrt(2.0)


class Autoencoder(nn.Module):
    """Encoder E and decoder 𝒟 of a KL autoencoder (Kingma & Welling 2014; LDM's "KL-f" first stage).

    ``encode(x)`` → (μ, log σ²) of q(z | x) in served (scaled) units; ``decode(z)`` → 𝒟(z) in [-1, 1] units
    (not clamped: the measurement operators act on it and gradients flow through it).
    """

    def __init__(self, in_channels: int = 1, latent_channels: int = 4, channels: Sequence[int] = (32, 64, 64)):
        super().__init__()
        channels = list(channels)
        self.in_channels, self.latent_channels = int(in_channels), int(latent_channels)
        self.factor = 2 ** (len(channels) - 1)
        enc: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, padding=1)]
        ch = channels[0]
        for i, width in enumerate(channels):
            enc.append(_Res(ch, width))
            ch = width
            if i < len(channels) - 1:
                enc.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        enc += [_Res(ch, ch), nn.GroupNorm(_groups(ch), ch), nn.SiLU(), nn.Conv2d(ch, 2 * latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(latent_channels, ch, 3, padding=1), _Res(ch, ch)]
        for i, width in reversed(list(enumerate(channels))):
            dec.append(_Res(ch, width))
            ch = width
            if i > 0:
                dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)]
        dec += [nn.GroupNorm(_groups(ch), ch), nn.SiLU(), nn.Conv2d(ch, in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        # s of z = s·μ; stored with the weights so a checkpoint serves latents in the units its prior saw
        self.register_buffer("latent_scale", torch.ones(()))

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        """(C_z, S/f, S/f) for S×S images."""
        return (self.latent_channels, image_size // self.factor, image_size // self.factor)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s·μ(x), log σ²(x) + 2 log s): the posterior q(z | x) of the served latent z."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        s = self.latent_scale.to(mu.dtype)
        return s * mu, logvar.clamp(-30.0, 20.0) + 2 * s.log()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """𝒟(z / s), the image of a served latent."""
        return self.decoder(z / self.latent_scale.to(z.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """𝒟(E(x)): the reconstruction through the posterior mean."""
        return self.decode(self.encode(x)[0])


def vae_loss(ae: Autoencoder, x: torch.Tensor, generator: torch.Generator | None = None, beta: float = 1e-3):
    """The negative ELBO with a β-weighted KL (Kingma & Welling 2014, eq. 10; β small as in LDM):

    L = mean ‖x − 𝒟(μ + σ ε)‖² + β · mean ½(μ² + σ² − 1 − log σ²), in unscaled latent units (s = 1 in training).
    Returns (loss, reconstruction MSE)."""
    mu, logvar = ae.encoder(x).chunk(2, dim=1)
    logvar = logvar.clamp(-30.0, 20.0)
    z = mu + (0.5 * logvar).exp() * randn_like(mu, generator)
    rec = F.mse_loss(ae.decoder(z), x)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()
    return rec + beta * kl, rec
