"""ADM's noisy ImageNet classifier (Dhariwal & Nichol 2021, sec. 4 and App. H): the encoder half of the ADM
UNet — time embedding, ``input_blocks``, ``middle_block`` — then GroupNorm, SiLU and attention pooling
(``out``), trained on ``x_t`` of DDPM's linear 1000-step chain, conditioned on the integer step ``t``.

:class:`EncoderUNet` reproduces guided-diffusion's ``EncoderUNetModel`` (pool ``"attention"`` or
``"adaptive"``) with the same state-dict key names and shapes, so its published checkpoints
(``64x64_classifier.pt``, ``128x128_classifier.pt``, ``256x256_classifier.pt``, ``512x512_classifier.pt``) load
strictly. The residual, attention and down-sampling blocks are deepinv's (:mod:`deepinv.models.diffunet`,
guided-diffusion's blocks with the same parameter names); the encoder assembly and the CLIP-style attention
pool (:class:`AttentionPool2d`) are written here.

:func:`classifier_config` gives guided-diffusion's ``create_classifier`` configuration for an image size
(its ``classifier_defaults``: width 128, depth 2, attention at 32/16/8, scale-shift norm, res-block
up/down-sampling, attention pool, 64 channels per head, 1000 classes, float32). At 256 that is
channel_mult (1, 1, 2, 2, 4, 4): 249 tensors, 54,096,360 parameters.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from deepinv.models.diffunet import (AttentionBlock, Downsample, QKVAttention, ResBlock, TimestepEmbedSequential,
                                     normalization, timestep_embedding)

__all__ = ["EncoderUNet", "AttentionPool2d", "classifier_config", "CHANNEL_MULT"]

#: guided-diffusion's ``create_classifier`` channel multipliers per image size
CHANNEL_MULT = {
    64: (1, 2, 3, 4),
    128: (1, 1, 2, 3, 4),
    256: (1, 1, 2, 2, 4, 4),
    512: (0.5, 1, 1, 2, 2, 4, 4),
}


def classifier_config(image_size: int = 256, num_classes: int = 1000, in_channels: int = 3) -> dict:
    """``EncoderUNet`` keyword arguments of guided-diffusion's published classifier at ``image_size``."""
    image_size = int(image_size)
    if image_size not in CHANNEL_MULT:
        raise ValueError(f"no ADM classifier configuration for image size {image_size}; "
                         f"expected one of {sorted(CHANNEL_MULT)}")
    return dict(image_size=image_size, in_channels=in_channels, model_channels=128, out_channels=num_classes,
                num_res_blocks=2, attention_resolutions=tuple(image_size // r for r in (32, 16, 8)),
                channel_mult=CHANNEL_MULT[image_size], num_head_channels=64, use_scale_shift_norm=True,
                resblock_updown=True, pool="attention")


class AttentionPool2d(nn.Module):
    """Attention pooling (CLIP's, Radford et al. 2021): the spatial mean is prepended as a query token, a
    learned positional embedding added, one multi-head attention layer (``qkv_proj``, ``c_proj``: 1×1
    convolutions) run, and the mean token's output returned: ``(B, C, H, W) → (B, output_dim)``."""

    def __init__(self, spatial_dim: int, embed_dim: int, num_head_channels: int, output_dim: int | None = None):
        super().__init__()
        if embed_dim % num_head_channels:
            raise ValueError(f"embed_dim {embed_dim} is not a multiple of num_head_channels {num_head_channels}")
        self.spatial_dim = int(spatial_dim)
        self.positional_embedding = nn.Parameter(torch.randn(embed_dim, spatial_dim**2 + 1) / embed_dim**0.5)
        self.qkv_proj = nn.Conv1d(embed_dim, 3 * embed_dim, 1)
        self.c_proj = nn.Conv1d(embed_dim, output_dim or embed_dim, 1)
        self.attention = QKVAttention(embed_dim // num_head_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        n = 1
        for s in spatial:
            n *= s
        if n + 1 != self.positional_embedding.shape[1]:
            raise ValueError(f"attention pool expects a {self.spatial_dim}x{self.spatial_dim} feature map, got "
                             f"{tuple(spatial)}: the classifier only runs at its training resolution")
        x = x.reshape(b, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)
        x = x + self.positional_embedding[None].to(x.dtype)
        x = self.c_proj(self.attention(self.qkv_proj(x)))
        return x[:, :, 0]


class EncoderUNet(nn.Module):
    """guided-diffusion's ``EncoderUNetModel`` (2-D, float32, no dropout): ``forward(x, timesteps)`` with
    ``x`` of shape ``(B, C, image_size, image_size)`` and ``timesteps`` ``(B,)`` step indices (fractional
    allowed; the sinusoidal embedding takes them unchanged) → logits ``(B, out_channels)``.

    ``attention_resolutions`` are down-sampling factors (``ds``) at which an attention block follows each
    res block, as in guided-diffusion (``image_size // res`` for its resolutions list)."""

    def __init__(self, image_size: int, in_channels: int, model_channels: int, out_channels: int,
                 num_res_blocks: int, attention_resolutions: Sequence[int], channel_mult: Sequence[float] = (1, 2, 4, 8),
                 conv_resample: bool = True, num_heads: int = 1, num_head_channels: int = -1,
                 use_scale_shift_norm: bool = False, resblock_updown: bool = False, pool: str = "adaptive",
                 dropout: float = 0.0):
        super().__init__()
        if pool not in ("attention", "adaptive"):
            raise ValueError(f"pool {pool!r} is not supported; expected 'attention' or 'adaptive'")
        if pool == "attention" and num_head_channels == -1:
            raise ValueError("pool='attention' needs num_head_channels")
        self.image_size, self.in_channels = int(image_size), int(in_channels)
        self.model_channels, self.out_channels = int(model_channels), int(out_channels)
        self.pool = pool
        emb = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))

        def res(cin, cout=None, down=False):
            return ResBlock(cin, emb, dropout, out_channels=cout, use_scale_shift_norm=use_scale_shift_norm, down=down)

        def attn(c):
            return AttentionBlock(c, num_heads=num_heads, num_head_channels=num_head_channels)

        ch = int(channel_mult[0] * model_channels)
        blocks = [TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                width = int(mult * model_channels)
                layers = [res(ch, width)]
                ch = width
                if ds in attention_resolutions:
                    layers.append(attn(ch))
                blocks.append(TimestepEmbedSequential(*layers))
            if level != len(channel_mult) - 1:
                blocks.append(TimestepEmbedSequential(
                    res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample, out_channels=ch)))
                ds *= 2
        self.input_blocks = nn.ModuleList(blocks)
        self.middle_block = TimestepEmbedSequential(res(ch), attn(ch), res(ch))
        if pool == "attention":
            self.out = nn.Sequential(normalization(ch), nn.SiLU(),
                                     AttentionPool2d(image_size // ds, ch, num_head_channels, out_channels))
        else:
            self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.AdaptiveAvgPool2d((1, 1)),
                                     nn.Conv2d(ch, out_channels, 1), nn.Flatten())

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(x.shape[0])
        h_emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(self.time_embed[0].weight.dtype))
        h = x
        for block in self.input_blocks:
            h = block(h, h_emb)
        return self.out(self.middle_block(h, h_emb))
