"""Small helpers shared across invscore."""
from __future__ import annotations

import torch

__all__ = ["resolve_device", "per_sample"]


def resolve_device(device="auto") -> torch.device:
    """``'auto'`` → CUDA when present, else CPU; any other value is passed to ``torch.device``.
    Asking for CUDA on a machine without it is an error that says so."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here; use --device cpu or auto")
    return dev


def per_sample(v, x: torch.Tensor) -> torch.Tensor:
    """A noise level (number, 0-d or ``(B,)`` tensor) as a ``(B,)`` tensor on ``x``'s device and dtype —
    the shape every denoiser and classifier in invscore takes."""
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    return v.expand(x.shape[0]) if v.ndim == 0 else v


def sigma_per_image(sigma, x: torch.Tensor) -> torch.Tensor:
    """:func:`per_sample`, refusing anything but one noise std per image of ``x`` (what the networks'
    preconditioning broadcasts over)."""
    sigma = per_sample(sigma, x)
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"sigma must have shape (B,) = ({x.shape[0]},), got {tuple(sigma.shape)}; "
                         "pass one noise std per image")
    return sigma
