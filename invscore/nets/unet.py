"""A compact UNet for 32×32 images and the EDM denoiser wrapper around it.

The UNet follows the DDPM/ADM layout (Ho et al. 2020; Dhariwal & Nichol 2021): residual blocks with
GroupNorm + SiLU, a noise embedding added inside every block, skip connections by concatenation, and
at most one self-attention layer at the coarsest resolution.  It is deliberately small so that an hour
of CPU training (2 threads) gives a usable Fashion-MNIST prior.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from ..utils import sigma_per_image


def _groups(ch: int) -> int:
    # GroupNorm needs ch % groups == 0; 8 groups works for every width we use (>= 8).
    for g in (8, 4, 2, 1):
        if ch % g == 0:
            return g
    return 1


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of a scalar noise level (Vaswani et al. 2017, sec. 3.5; as in EDM's SongUNet).

    e(c) = [cos(c·ω_k), sin(c·ω_k)],  ω_k = (1/max_positions)^(k/(dim/2)),  k = 0 … dim/2-1.
    """

    def __init__(self, dim: int, max_positions: float = 10000.0):
        super().__init__()
        half = dim // 2
        freqs = (1.0 / max_positions) ** (torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        """c: (B,) → (B, dim)."""
        arg = c.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        return torch.cat([arg.cos(), arg.sin()], dim=1).to(c.dtype)


class NoiseEmbedding(nn.Module):
    """c_noise → embedding vector: positional features followed by a 2-layer SiLU MLP (EDM, App. B)."""

    def __init__(self, base: int, dim: int):
        super().__init__()
        self.pos = PositionalEmbedding(base)
        self.mlp = nn.Sequential(nn.Linear(base, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU())

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.pos(c_noise))


class ResBlock(nn.Module):
    """h = skip(x) + conv(SiLU(GN(conv(SiLU(GN(x))) + W·emb))) / √2   (DDPM residual block).

    The 1/√2 keeps the activation variance constant through the residual sum (EDM's `skip_scale`).
    """

    def __init__(self, cin: int, cout: int, emb_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        # Zero-initialised last conv: each block starts as the identity, which stabilises early training.
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.skip(x) + h) / math.sqrt(2.0)


class SelfAttention(nn.Module):
    """Single-head self-attention over pixels, softmax(QKᵀ/√d)V (Vaswani et al. 2017), residual."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return (x + self.proj(a.transpose(1, 2).reshape(b, c, h, w))) / math.sqrt(2.0)


class UNet(nn.Module):
    """F_θ(x_in, c_noise) of EDM (Karras et al. 2022, eq. 7): a DDPM-style UNet.

    Args:
        in_channels / out_channels: image channels (1 gray, 3 RGB).
        channels: width per resolution level; level i works at size / 2**i.
        num_res_blocks: residual blocks per level in the encoder (decoder uses one more, for the skips).
        attn_levels: levels (indices into `channels`) that get one self-attention after each block.
        mid_attention: one self-attention in the bottleneck (at the coarsest resolution).
        emb_base: size of the positional features of c_noise.
        num_classes: K > 0 makes the network class-conditional, F_θ(x, c_noise, c): a learned embedding of
            c ∈ {0 … K−1} is added to the noise embedding (as in ADM), and the extra index K is the dropped
            label ∅ of classifier-free guidance training (Ho & Salimans 2022, Algorithm 1).
    """

    def __init__(self, in_channels: int = 1, out_channels: int | None = None,
                 channels: Sequence[int] = (32, 64, 64), num_res_blocks: int = 2,
                 attn_levels: Sequence[int] = (), mid_attention: bool = False, emb_base: int = 32,
                 num_classes: int = 0):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        channels = list(channels)
        emb_dim = 4 * channels[0]
        self.embed = NoiseEmbedding(emb_base, emb_dim)
        self.num_classes = int(num_classes)
        self.label_embed = nn.Embedding(self.num_classes + 1, emb_dim) if self.num_classes > 0 else None
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)

        self.down = nn.ModuleList()
        skips = [channels[0]]
        ch = channels[0]
        for lvl, width in enumerate(channels):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(ch, width, emb_dim))
                ch = width
                if lvl in attn_levels:
                    self.down.append(SelfAttention(ch))
                skips.append(ch)
            if lvl < len(channels) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)

        mid = [ResBlock(ch, ch, emb_dim)]
        if mid_attention:
            mid.append(SelfAttention(ch))
        mid.append(ResBlock(ch, ch, emb_dim))
        self.mid = nn.ModuleList(mid)

        self.up = nn.ModuleList()
        for lvl in reversed(range(len(channels))):
            width = channels[lvl]
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(ch + skips.pop(), width, emb_dim))
                ch = width
                if lvl in attn_levels:
                    self.up.append(SelfAttention(ch))
            if lvl > 0:
                # Conv before the nearest upsampling: 4× cheaper than after, which matters on CPU.
                self.up.append(nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1),
                                             nn.Upsample(scale_factor=2, mode="nearest")))
        self.norm_out = nn.GroupNorm(_groups(ch), ch)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def labels(self, label, x: torch.Tensor) -> torch.Tensor:
        """``label`` (None = ∅, an int, or a (B,) tensor with −1 for ∅) as (B,) embedding indices; refuses a
        class outside 0 … K−1 in one line."""
        if label is None:
            return torch.full((x.shape[0],), self.num_classes, device=x.device, dtype=torch.long)
        label = torch.as_tensor(label, device=x.device).long().reshape(-1).expand(x.shape[0])
        if bool(((label < -1) | (label >= self.num_classes)).any()):
            raise ValueError(f"class label out of range: this prior has classes 0..{self.num_classes - 1} "
                             "(-1 or None for the unconditional model)")
        return torch.where(label < 0, torch.full_like(label, self.num_classes), label)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, label=None) -> torch.Tensor:
        emb = self.embed(c_noise)
        if self.label_embed is not None:
            emb = emb + self.label_embed(self.labels(label, x)).to(emb.dtype)
        elif label is not None:
            raise ValueError("this network is unconditional (trained without class labels); it takes no label")
        h = self.conv_in(x)
        hs = [h]
        for m in self.down:
            if isinstance(m, ResBlock):
                h = m(h, emb)
                hs.append(h)
            elif isinstance(m, SelfAttention):
                h = m(h)
                hs[-1] = h
            else:
                h = m(h)
                hs.append(h)
        for m in self.mid:
            h = m(h, emb)
        for m in self.up:
            if isinstance(m, ResBlock):
                h = m(torch.cat([h, hs.pop()], dim=1), emb)
            elif isinstance(m, SelfAttention):
                h = m(h)
            else:
                h = m(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def edm_coefficients(sigma: torch.Tensor, sigma_data: float):
    """EDM preconditioning (Karras et al. 2022, Table 1):

    c_skip = σd²/(σ²+σd²),  c_out = σ·σd/√(σ²+σd²),  c_in = 1/√(σ²+σd²),  c_noise = ¼ ln σ.
    """
    s2 = sigma ** 2 + sigma_data ** 2
    return sigma_data ** 2 / s2, sigma * sigma_data / s2.sqrt(), 1.0 / s2.sqrt(), sigma.log() / 4


class EDMDenoiser(nn.Module):
    """D(x, σ) = c_skip(σ)·x + c_out(σ)·F_θ(c_in(σ)·x, c_noise(σ))   (Karras et al. 2022, eq. 7).

    x: (B, C, H, W) noisy image in VE coordinates (x = x0 + σ·z, x0 in [-1, 1]); sigma: (B,) noise std
    (a scalar or 0-d tensor is broadcast).  Returns the estimate of E[x0 | x]; with a class-conditional
    network, ``label`` gives E[x0 | x, c] (None: the unconditional model, the dropped label ∅).
    """

    def __init__(self, net: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)

    @property
    def num_classes(self) -> int:
        """K of a class-conditional network (0: unconditional)."""
        return int(getattr(self.net, "num_classes", 0))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, label=None) -> torch.Tensor:
        sigma = sigma_per_image(sigma, x)
        c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, self.sigma_data)
        v = lambda c: c.view(-1, 1, 1, 1)  # noqa: E731
        f = self.net(v(c_in) * x, c_noise) if label is None else self.net(v(c_in) * x, c_noise, label)
        return v(c_skip) * x + v(c_out) * f.to(x.dtype)

    def denoise_given(self, x: torch.Tensor, sigma, label) -> torch.Tensor:
        """D(x, σ, c) ≈ E[x0 | x, c], the conditional half of classifier-free guidance (Ho & Salimans 2022,
        eq. 6): ``ClassifierFreeGuidance(denoiser.denoise_given, c, w)``."""
        if self.num_classes == 0:
            raise ValueError("this prior is unconditional (no class labels); classifier-free guidance needs a "
                             "class-conditional prior such as fashion_mnist_cond; use classifier guidance instead")
        return self(x, sigma, label)
