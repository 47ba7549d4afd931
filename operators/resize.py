"""Super-resolution operators: average pooling (exact SVD) and bicubic downsampling (kornia).

Both require the factor to divide the image size; otherwise they raise ValueError.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.geometry.transform import resize

from .base import LinearOperator
from .color import colour_transform
from .masks import _img_size
from .svd import SVDOperator

__all__ = ["AvgPool", "Bicubic"]


def _check_factor(factor, h, w, name) -> int:
    if int(factor) != factor or factor < 1:
        raise ValueError(f"{name}: expected a positive integer factor, got {factor}")
    factor = int(factor)
    if h % factor or w % factor:
        raise ValueError(f"{name}: expected image size divisible by the factor {factor}, got {h}x{w}; "
                         f"crop or pad the image to a multiple of {factor}")
    return factor


class AvgPool(SVDOperator):
    """Average pooling by k: y = mean of each k×k block (the SR operator of DDRM, Kawar et al. 2022, App. A).

    Exact economic SVD: inside each block an orthogonal k²×k² matrix Q whose first row is the
    normalised block mean 1/k·𝟙 (a Householder reflection); then A = U diag(1/k) Vᴴ with U = I,
    s = 1/k and V = blockwise Qᵀ. Spectral coordinates: the first C·(H/k)·(W/k) are the scaled block
    means k·ȳ, the rest the within-block detail.
    """

    def __init__(self, img_size, factor: int = 4, noise=None, dtype: torch.dtype | None = None):
        c, h, w = _img_size(img_size)
        k = _check_factor(factor, h, w, "AvgPool")
        super().__init__((c, h, w), (c, h // k, w // k), noise)
        self.factor = k
        dtype = dtype or torch.get_default_dtype()
        self.register_buffer("_Q", colour_transform(torch.ones(k * k)).to(dtype), persistent=False)
        self._register_svd(torch.full((self.m,), 1.0 / k, dtype=dtype))

    def _A(self, x):
        return F.avg_pool2d(x, self.factor)

    def _A_T(self, y):
        k = self.factor
        return F.interpolate(y, scale_factor=k, mode="nearest") / (k * k)

    def _A_pinv(self, y):
        # A Aᵀ = I/k², so A⁺ = k² Aᵀ: replicate each value over its block.
        return F.interpolate(y, scale_factor=self.factor, mode="nearest")

    def _AtA(self, x):
        return self._A_T(self._A(x))

    def _project_measured(self, x):
        return F.interpolate(F.avg_pool2d(x, self.factor), scale_factor=self.factor, mode="nearest")

    def _blocks(self, x):
        b, c, h, w = x.shape
        k = self.factor
        return x.view(b, c, h // k, k, w // k, k).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h // k, w // k, k * k)

    def V_T(self, x):
        coef = self._blocks(x) @ self._Q.T  # coef[..., j] = <Q_j, block>
        return coef.permute(0, 4, 1, 2, 3).flatten(1)

    def V(self, z):
        c, h, w = self.input_shape
        k = self.factor
        b = z.shape[0]
        blocks = z.view(b, k * k, c, h // k, w // k).permute(0, 2, 3, 4, 1) @ self._Q
        return blocks.view(b, c, h // k, w // k, k, k).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)

    def U_T(self, y):
        return y.flatten(1)

    def U(self, z):
        return z.view(z.shape[0], *self.output_shape)


class Bicubic(LinearOperator):
    """Bicubic downsampling by k (Keys 1981 cubic convolution, a = −0.75 as in PyTorch), defined by
    ``kornia.geometry.transform.resize``; with ``antialias=True`` kornia first low-passes with a Gaussian.

    That map is separable, A x = P_y x P_xᵀ per channel, so ``method='matrix'`` (default) reads the
    two 1-D matrices off kornia once (columns = responses to e_i ⊗ 𝟙, since P 𝟙 = 𝟙) and then has
    closed forms: Aᵀy = P_yᵀ y P_x and A⁺y = P_y⁺ y (P_x⁺)ᵀ (the pseudo-inverse of a Kronecker product
    is the Kronecker product of the pseudo-inverses). ``method='kornia'`` calls kornia each time, with
    Aᵀ by autograd and A⁺ by conjugate gradients (base class); tests check that both agree.
    """

    def __init__(self, img_size, factor: int = 4, antialias: bool = True, noise=None, dtype=None,
                 method: str = "matrix"):
        c, h, w = _img_size(img_size)
        k = _check_factor(factor, h, w, "Bicubic")
        if method not in ("matrix", "kornia"):
            raise ValueError(f"Bicubic: expected method 'matrix' or 'kornia', got {method!r}")
        super().__init__((c, h, w), (c, h // k, w // k), noise)
        self.factor = k
        self.antialias = bool(antialias)
        self.method = method
        if method == "matrix":
            dtype = dtype or torch.get_default_dtype()
            with torch.no_grad():
                col = self._kornia(torch.eye(h, dtype=torch.float64)[:, None, :, None].expand(h, 1, h, w))
                row = self._kornia(torch.eye(w, dtype=torch.float64)[:, None, None, :].expand(w, 1, h, w))
            Py, Px = col[:, 0, :, 0].T.contiguous(), row[:, 0, 0, :].T.contiguous()
            for name, P in (("_Py", Py), ("_Px", Px)):
                self.register_buffer(name, P.to(dtype), persistent=False)
                self.register_buffer(name + "_pinv", torch.linalg.pinv(P).to(dtype), persistent=False)

    def _kornia(self, x):
        return resize(x, self.output_shape[1:], interpolation="bicubic", align_corners=False,
                      antialias=self.antialias)

    def _A(self, x):
        if self.method == "kornia":
            return self._kornia(x)
        return self._Py @ x @ self._Px.T

    def _A_T(self, y):
        if self.method == "kornia":
            return super()._A_T(y)
        return self._Py.T @ y @ self._Px

    def _A_pinv(self, y):
        if self.method == "kornia":
            return super()._A_pinv(y)
        return self._Py_pinv @ y @ self._Px_pinv.T
