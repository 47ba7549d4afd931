"""Base classes: a (possibly nonlinear) forward operator and a linear operator with Aᵀ, A⁺, AᵀA.

Public methods (``forward``/``A``, ``A_T``, ``A_pinv``, ``AtA``) check shapes and then call the
overridable hooks ``_A``, ``_A_T``, ``_A_pinv``. A custom operator implements ``_A`` only; the adjoint
defaults to the vector-Jacobian product of ``_A`` (for linear A, Aᵀy = ∇ₓ⟨Ax, y⟩) and the
pseudo-inverse to conjugate gradients on the normal equations. Hooks never validate, so
samplers calling them inside a loop pay nothing for it.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import torch
from torch import nn

from .noise import NoiseModel, as_noise

__all__ = ["Operator", "LinearOperator", "FunctionOperator", "LinearFunctionOperator", "conjugate_gradient"]

Shape = tuple[int, ...]


def _shape(shape: Sequence[int] | int) -> Shape:
    if isinstance(shape, int):
        return (shape,)
    shape = tuple(int(s) for s in shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"expected a non-empty shape of positive sizes, got {shape}")
    return shape


def _bdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample real inner product <a, b> over all non-batch dims, shape (B,)."""
    return (a * b).flatten(1).sum(1)


class Operator(nn.Module):
    """Forward model y = A(x) + n, possibly nonlinear; A must be differentiable for DPS-style guidance.

    ``input_shape``/``output_shape`` exclude the batch dimension. ``noise`` is the measurement noise
    model (see ``operators.noise``) and ``sigma_y`` its Gaussian standard deviation.
    """

    def __init__(self, input_shape: Sequence[int], output_shape: Sequence[int], noise=None):
        super().__init__()
        self._input_shape = _shape(input_shape)
        self._output_shape = _shape(output_shape)
        self.noise: NoiseModel = as_noise(noise)

    # --- shapes ---------------------------------------------------------------------------------
    @property
    def input_shape(self) -> Shape:
        """Shape of one x (no batch dimension): (C, H, W) for images, (d,) for vectors."""
        return self._input_shape

    @property
    def output_shape(self) -> Shape:
        """Shape of one y = A(x) (no batch dimension)."""
        return self._output_shape

    def _check(self, t: torch.Tensor, shape: Shape, what: str) -> None:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{type(self).__name__}: expected a torch.Tensor {what}, got {type(t).__name__}")
        if t.dim() != len(shape) + 1 or tuple(t.shape[1:]) != shape:
            raise ValueError(
                f"{type(self).__name__}: expected {what} of shape (B, {', '.join(map(str, shape))}), "
                f"got {tuple(t.shape)}; add a batch dimension or fix the channel count/size"
            )

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless x has shape (B, *input_shape)."""
        self._check(x, self._input_shape, "input")

    def check_output(self, y: torch.Tensor) -> None:
        """Raise ValueError unless y has shape (B, *output_shape)."""
        self._check(y, self._output_shape, "measurement")

    # --- forward model --------------------------------------------------------------------------
    def _A(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement _A(x), the forward map")

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Noise-free forward map A(x) (same as calling the module)."""
        self.check_input(x)
        return self._A(x)

    forward = A  # nn.Module's __call__: op(x) is A(x)

    @property
    def sigma_y(self) -> float:
        """Gaussian measurement-noise standard deviation (0.0 when noise-free or non-Gaussian)."""
        return self.noise.sigma

    def noise_std(self, override: float | None = None) -> float:
        """The σ_y a posterior method assumes: the noise model's (:attr:`sigma_y`, its one home) unless
        ``override`` is given, which must be a finite number >= 0."""
        if override is None:
            return self.sigma_y
        try:
            sigma = float(override)
        except (TypeError, ValueError):
            raise TypeError(f"sigma_y must be a number >= 0 or None (the operator's own), got {override!r}") from None
        if not (math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma_y must be >= 0 and finite, or None (the operator's own), got {override}")
        return sigma

    def measure(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw y = A(x) + n with the operator's noise model and an explicit generator."""
        self.check_input(x)
        return self.noise(self._A(x), generator)

    def with_noise(self, noise) -> "Operator":
        """Set the noise model (NoiseModel, float sigma_y or None) and return self for chaining."""
        self.noise = as_noise(noise)
        return self

    def extra_repr(self) -> str:
        return f"input_shape={self._input_shape}, output_shape={self._output_shape}"


class LinearOperator(Operator):
    """Linear forward model A with adjoint Aᵀ, pseudo-inverse A⁺ and normal operator AᵀA.

    Defaults, overridable per subclass: Aᵀy = vjp of A at 0 applied to y (exact for linear A), and
    A⁺y = the minimum-norm least-squares solution from conjugate gradients on AᵀA x = Aᵀy started at
    x = 0 (Hestenes & Stiefel 1952; CG iterates stay in range(Aᵀ), so the limit is A⁺y).
    """

    #: CG settings of the default pseudo-inverse: it stops when ‖Aᵀ(A x − y)‖ ≤ pinv_tol·‖Aᵀy‖ (the normal
    #: equations' relative residual) and warns with the residual it reached when pinv_maxiter comes first.
    #: For an ill-conditioned A (a wide spatial Gaussian blur) that residual bounds ‖A A⁺y − y‖ only loosely,
    #: and CG may not reach it at all; such operators override ``_A_pinv`` (``Blur``: factorised, documented there).
    pinv_tol: float = 1e-6
    pinv_maxiter: int = 200

    def _A_T(self, y: torch.Tensor) -> torch.Tensor:
        x0 = torch.zeros((y.shape[0], *self._input_shape), dtype=y.dtype, device=y.device)
        _, vjp = torch.func.vjp(self._A, x0)
        return vjp(y)[0]

    def _AtA(self, x: torch.Tensor) -> torch.Tensor:
        return self._A_T(self._A(x))

    def _A_pinv(self, y: torch.Tensor) -> torch.Tensor:
        return conjugate_gradient(self._AtA, self._A_T(y), tol=self.pinv_tol, maxiter=self.pinv_maxiter,
                                  warn=f"{type(self).__name__}.A_pinv")

    def A_T(self, y: torch.Tensor) -> torch.Tensor:
        """Adjoint Aᵀy, defined by <Ax, y> = <x, Aᵀy>."""
        self.check_output(y)
        return self._A_T(y)

    def A_pinv(self, y: torch.Tensor) -> torch.Tensor:
        """Moore–Penrose pseudo-inverse A⁺y (minimum-norm least-squares solution), to the tolerance its form states.

        Default (CG on AᵀA x = Aᵀy): ‖Aᵀ(A x⁺ − y)‖ ≤ pinv_tol·‖Aᵀy‖, or a warning with the residual reached
        after pinv_maxiter steps. SVD forms truncate singular values ≤ svd_rtol·max(s), so ‖A A⁺ A x − A x‖ ≤
        svd_rtol·max(s)·‖x‖; ``Blur`` states its bounds in ``Blur._A_pinv``. Tests check each at the registry's
        default sizes (tests/test_operators.py).
        """
        self.check_output(y)
        return self._A_pinv(y)

    def AtA(self, x: torch.Tensor) -> torch.Tensor:
        """Normal operator AᵀA x."""
        self.check_input(x)
        return self._AtA(x)


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    tol: float = 1e-6,
    maxiter: int = 200,
    check_every: int = 10,
    warn: str | None = None,
) -> torch.Tensor:
    """Batched conjugate gradients for M x = b with M symmetric positive semi-definite.

    Hestenes & Stiefel (1952), Algorithm CG, started at x = 0. Each sample has its own step sizes;
    it stops when every sample's residual satisfies ||r|| <= tol ||b||. The convergence test reads
    a scalar from the device, so it runs only every ``check_every`` iterations. With ``warn`` (a label
    naming the caller) a solve that reaches ``maxiter`` first warns with the residual it reached.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = _bdot(r, r)
    thresh = (tol**2) * rs
    shape = (-1,) + (1,) * (b.dim() - 1)
    zero = torch.zeros_like(rs)
    for it in range(maxiter):
        # Samples already converged are frozen: once the residual reaches round-off, rs/pᵀMp is noise
        # and further steps would drift along the null space of M.
        active = rs > thresh
        mp = matvec(p)
        pmp = _bdot(p, mp)
        ok = active & (pmp > 0)
        alpha = torch.where(ok, rs / torch.where(ok, pmp, torch.ones_like(pmp)), zero)
        x = x + alpha.view(shape) * p
        r = r - alpha.view(shape) * mp
        rs_new = torch.where(ok, _bdot(r, r), rs)
        beta = torch.where(ok, rs_new / torch.where(ok, rs, torch.ones_like(rs)), zero)
        p = r + beta.view(shape) * p
        rs = rs_new
        if (it + 1) % check_every == 0 and not bool((ok & (rs > thresh)).any()):
            break
    else:
        if warn is not None and bool((rs > thresh).any()):
            reached = float((rs / _bdot(b, b).clamp_min(torch.finfo(b.dtype).tiny)).max().sqrt())
            warnings.warn(f"{warn}: conjugate gradients did not converge in {maxiter} iterations: relative "
                          f"residual {reached:.2e} > tol {tol:.0e}; raise pinv_maxiter or pinv_tol", stacklevel=3)
    return x


def _infer_output_shape(fn, input_shape: Shape) -> Shape:
    with torch.no_grad():
        out = fn(torch.zeros((1, *input_shape)))
    return tuple(out.shape[1:])


class FunctionOperator(Operator):
    """A (possibly nonlinear) operator from a plain differentiable function ``fn(x) -> y``.

    The output shape is inferred by one call on a zero batch unless given.
    """

    def __init__(self, fn: Callable, input_shape, output_shape=None, noise=None):
        input_shape = _shape(input_shape)
        output_shape = _infer_output_shape(fn, input_shape) if output_shape is None else output_shape
        super().__init__(input_shape, output_shape, noise)
        self.fn = fn

    def _A(self, x):
        return self.fn(x)


class LinearFunctionOperator(LinearOperator):
    """A linear operator from a plain function ``fn(x) = A x``; Aᵀ by autograd unless ``adjoint`` is given.

    Example (run as a test through doctest):

    >>> import torch
    >>> from operators import LinearFunctionOperator
    >>> op = LinearFunctionOperator(lambda x: x[..., ::2], input_shape=(6,))  # keep even entries
    >>> x = torch.arange(6.0).unsqueeze(0)
    >>> op(x)
    tensor([[0., 2., 4.]])
    >>> op.A_T(torch.ones(1, 3))            # adjoint derived by autograd
    tensor([[1., 0., 1., 0., 1., 0.]])
    >>> torch.allclose(op.A_pinv(op(x)), op.A_T(op(x)))   # A⁺ by conjugate gradients
    True
    """

    def __init__(self, fn: Callable, input_shape, output_shape=None, adjoint: Callable | None = None, noise=None):
        input_shape = _shape(input_shape)
        output_shape = _infer_output_shape(fn, input_shape) if output_shape is None else output_shape
        super().__init__(input_shape, output_shape, noise)
        self.fn = fn
        self.adjoint_fn = adjoint

    def _A(self, x):
        return self.fn(x)

    def _A_T(self, y):
        if self.adjoint_fn is not None:
            return self.adjoint_fn(y)
        return super()._A_T(y)
