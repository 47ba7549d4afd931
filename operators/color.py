"""Grayscale through an orthogonal colour transform: colorization is imputation of 2 of 3 coordinates.

A x = Σ_c w_c x_c per pixel. With u = w/|w| and M a 3×3 orthogonal matrix whose first row is u,
A = |w| · (first row of M), an economic SVD: V = Mᵀ per pixel, U = I, s = |w| for each pixel
(Song et al. 2021, Appendix I.2, colorization through a "decoupling" orthogonal colour transform).
"""
from __future__ import annotations

import torch

from .masks import _img_size
from .svd import SVDOperator

__all__ = ["Grayscale", "LUMA_WEIGHTS", "colour_transform"]

#: ITU-R BT.601 luma weights.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def colour_transform(weights) -> torch.Tensor:
    """3×3 orthogonal matrix (float64) whose first row is w/|w|: the Householder reflection mapping e₁ to w/|w|.

    For w = (1, 1, 1)/3 the first axis is the gray direction (1, 1, 1)/√3 and the other two span
    the chroma plane.
    """
    w = torch.as_tensor(weights, dtype=torch.float64).flatten()
    u = w / w.norm()
    v = u - torch.eye(len(u), dtype=torch.float64)[0]
    if v.norm() < 1e-12:
        return torch.eye(len(u), dtype=torch.float64)
    # H = I − 2vvᵀ/|v|² is symmetric and orthogonal with H e₁ = u, so its first row is u as well.
    return torch.eye(len(u), dtype=torch.float64) - 2 * torch.outer(v, v) / v.dot(v)


class Grayscale(SVDOperator):
    """Colour-to-gray A x = Σ_c w_c x_c, output (1, H, W); economic SVD (1 of C colour coordinates kept).

    ``weights=None`` is the channel mean (1/C each, s = 1/√C); ``LUMA_WEIGHTS`` gives BT.601 luma.
    Spectral coordinates: (M x) per pixel, flattened channel-major, so the first H·W are the gray axis.
    """

    def __init__(self, img_size=(3, 64, 64), weights=None, noise=None, dtype: torch.dtype | None = None):
        c, h, w = _img_size(img_size)
        weights = torch.full((c,), 1.0 / c, dtype=torch.float64) if weights is None else \
            torch.as_tensor(weights, dtype=torch.float64).flatten()
        if weights.numel() != c:
            raise ValueError(f"Grayscale: expected {c} weights for {c} channels, got {weights.numel()}")
        if weights.norm() == 0:
            raise ValueError("Grayscale: expected non-zero weights")
        super().__init__((c, h, w), (1, h, w), noise)
        dtype = dtype or torch.get_default_dtype()
        norm = weights.norm()
        self.register_buffer("weights", weights.to(dtype), persistent=False)
        self.register_buffer("_u", (weights / norm).to(dtype), persistent=False)
        self.register_buffer("_M", colour_transform(weights).to(dtype), persistent=False)
        self.register_buffer("_pinv_w", (weights / norm**2).to(dtype), persistent=False)
        self._register_svd(torch.full((h * w,), float(norm), dtype=dtype))

    def _A(self, x):
        return torch.einsum("c,bchw->bhw", self.weights, x).unsqueeze(1)

    def _A_T(self, y):
        return y * self.weights.view(1, -1, 1, 1)

    def _A_pinv(self, y):
        return y * self._pinv_w.view(1, -1, 1, 1)

    def _AtA(self, x):
        return self._A_T(self._A(x))

    def _project_measured(self, x):
        return torch.einsum("c,bchw->bhw", self._u, x).unsqueeze(1) * self._u.view(1, -1, 1, 1)

    def V_T(self, x):
        return torch.einsum("ij,bjhw->bihw", self._M, x).flatten(1)

    def V(self, z):
        return torch.einsum("ij,bihw->bjhw", self._M, z.view(z.shape[0], *self.input_shape))

    def U_T(self, y):
        return y.flatten(1)

    def U(self, z):
        return z.view(z.shape[0], *self.output_shape)
