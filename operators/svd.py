"""Operators given by a singular value decomposition A = U diag(s) Vᴴ (real or complex unitary U, V).

Convention for every SVD operator (masks, FFT blur, average-pool SR, grayscale, dense matrices):

* ``V_T(x)`` maps an input batch (B, *input_shape) to flat spectral coordinates (B, n), ``V`` maps
  them back; ``U_T(y)`` maps a measurement batch to (B, m), ``U`` back. ``V_T`` means Vᴴ: for the FFT
  blur the coordinates are complex (unitary ``torch.fft.fft2(norm='ortho')``), elsewhere real.
* ``singular_values`` has shape (r,), r ≤ min(m, n), possibly with zeros. Spectral coordinate i < r of
  x pairs with coordinate i of y: (U_T A x)_i = s_i (V_T x)_i. Coordinates r..n-1 of ``V_T x`` span
  the null space (economic form: grayscale keeps 1 of 3 colour coordinates, pooling 1 of k²).
* A coordinate i < r is *measured* when s_i > svd_rtol · max(s) (``measured`` is its boolean mask).

From these the base class derives once A, Aᵀ, A⁺, AᵀA, the orthogonal projections onto the measured
subspace (the row space of A) and its complement, the measurement in spectral coordinates
diag(1/s) Uᴴ y, and ``replace_measured`` — the data-consistency step of Song et al. 2021
(score SDE, Appendix I.1, imputation/colorization) and of DDRM (Kawar et al. 2022, eq. 7-8).
Subclasses may override ``_A``, ``_A_T``, ``_A_pinv`` with faster closed forms; tests check that
those agree with the SVD form.
"""
from __future__ import annotations

import torch

from .base import LinearOperator

__all__ = ["SVDOperator", "real_svd"]


class SVDOperator(LinearOperator):
    """Linear operator in SVD form A = U diag(s) Vᴴ (Golub & Van Loan, Matrix Computations, §2.4).

    Subclasses implement ``V_T``, ``V``, ``U_T``, ``U`` and call ``_register_svd(s)`` in ``__init__``.
    """

    #: relative threshold below which a singular value counts as zero (unmeasured).
    svd_rtol: float = 1e-6

    def _register_svd(self, s: torch.Tensor, rtol: float | None = None) -> None:
        s = torch.as_tensor(s).flatten()
        if rtol is not None:
            self.svd_rtol = float(rtol)
        if s.numel() > min(self.n, self.m):
            raise ValueError(f"{type(self).__name__}: expected at most min(m, n)={min(self.n, self.m)} "
                             f"singular values, got {s.numel()}")
        if (s < 0).any():
            raise ValueError(f"{type(self).__name__}: expected non-negative singular values")
        smax = s.max() if s.numel() else s.new_tensor(0.0)
        measured = s > self.svd_rtol * smax
        s_inv = torch.where(measured, 1.0 / torch.where(measured, s, torch.ones_like(s)), torch.zeros_like(s))
        # Buffers so .to(device/dtype) moves them; persistent=False keeps state_dicts empty.
        self.register_buffer("_s", s, persistent=False)
        self.register_buffer("_s_inv", s_inv, persistent=False)
        self.register_buffer("_measured_r", measured, persistent=False)

    # --- sizes ------------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Number of spectral coordinates of the input (= numel of input_shape)."""
        return int(torch.Size(self.input_shape).numel())

    @property
    def m(self) -> int:
        """Number of spectral coordinates of the measurement (= numel of output_shape)."""
        return int(torch.Size(self.output_shape).numel())

    @property
    def r(self) -> int:
        """Number of singular values (paired coordinates)."""
        return self._s.numel()

    @property
    def singular_values(self) -> torch.Tensor:
        """s, shape (r,), non-negative, possibly with zeros."""
        return self._s

    @property
    def measured(self) -> torch.Tensor:
        """Boolean mask over all n spectral coordinates of x: True where s_i > svd_rtol·max(s)."""
        return self._pad(self._measured_r.unsqueeze(0), self.n)[0]

    # --- factors (subclasses) ---------------------------------------------------------------------
    def V_T(self, x: torch.Tensor) -> torch.Tensor:
        """Vᴴx: input batch -> spectral coordinates (B, n)."""
        raise NotImplementedError

    def V(self, z: torch.Tensor) -> torch.Tensor:
        """V z: spectral coordinates (B, n) -> input batch."""
        raise NotImplementedError

    def U_T(self, y: torch.Tensor) -> torch.Tensor:
        """Uᴴy: measurement batch -> spectral coordinates (B, m)."""
        raise NotImplementedError

    def U(self, z: torch.Tensor) -> torch.Tensor:
        """U z: spectral coordinates (B, m) -> measurement batch."""
        raise NotImplementedError

    # --- derived ----------------------------------------------------------------------------------
    @staticmethod
    def _pad(z: torch.Tensor, size: int) -> torch.Tensor:
        if z.shape[-1] == size:
            return z
        return torch.cat([z, z.new_zeros(z.shape[:-1] + (size - z.shape[-1],))], dim=-1)

    def _head(self, z: torch.Tensor) -> torch.Tensor:
        r = self._s.numel()
        return z if z.shape[-1] == r else z[:, :r]

    def _svd_A(self, x):
        return self.U(self._pad(self._head(self.V_T(x)) * self._s, self.m))

    def _svd_A_T(self, y):
        return self.V(self._pad(self._head(self.U_T(y)) * self._s, self.n))

    def _svd_A_pinv(self, y):
        return self.V(self._pad(self._head(self.U_T(y)) * self._s_inv, self.n))

    def _A(self, x):
        return self._svd_A(x)

    def _A_T(self, y):
        return self._svd_A_T(y)

    def _A_pinv(self, y):
        return self._svd_A_pinv(y)

    def _AtA(self, x):
        return self.V(self._pad(self._head(self.V_T(x)) * self._s.square(), self.n))

    def _project_measured(self, x):
        z = self.V_T(x)
        return self.V(self._pad(self._head(z) * self._measured_r, self.n))

    def project_measured(self, x: torch.Tensor) -> torch.Tensor:
        """Orthogonal projection A⁺A x onto the measured subspace (row space of A), as an input batch."""
        self.check_input(x)
        return self._project_measured(x)

    def project_unmeasured(self, x: torch.Tensor) -> torch.Tensor:
        """Orthogonal projection (I − A⁺A) x onto the unmeasured subspace (null space of A)."""
        self.check_input(x)
        return x - self._project_measured(x)

    def y_spectral(self, y: torch.Tensor) -> torch.Tensor:
        """The measurement in spectral coordinates, ȳ = diag(1/s) Uᴴ y, shape (B, r); 0 where unmeasured.

        DDRM's ȳ (Kawar et al. 2022, §3.2): for noise-free y, ȳ_i = (Vᴴx)_i on measured coordinates.
        """
        self.check_output(y)
        return self._head(self.U_T(y)) * self._s_inv

    def spectral_noise_std(self, sigma_y: float | None = None) -> torch.Tensor:
        """Noise std of ȳ per coordinate, sigma_y / s_i (shape (r,)); +inf where unmeasured (DDRM eq. 6)."""
        sigma = self.noise_std(sigma_y)
        inf = torch.full_like(self._s, float("inf"))
        return torch.where(self._measured_r, sigma * self._s_inv, inf)

    def replace_measured(self, x: torch.Tensor, y_spec: torch.Tensor) -> torch.Tensor:
        """Replace the measured spectral coordinates of x by ``y_spec`` (B, r) and map back: V [ȳ; (Vᴴx)_unmeasured].

        With ``y_spec = y_spectral(y)`` this equals (I − A⁺A) x + A⁺ y, the projection step of
        Song et al. 2021 (imputation, colorization) for every SVD operator.
        """
        self.check_input(x)
        z = self.V_T(x)
        r = self._s.numel()
        if y_spec.dim() != 2 or y_spec.shape[1] != r:
            raise ValueError(f"{type(self).__name__}: expected y_spec of shape (B, {r}), got {tuple(y_spec.shape)}")
        head = torch.where(self._measured_r, y_spec.to(z.dtype), z[:, :r])
        return self.V(torch.cat([head, z[:, r:]], dim=1) if r < z.shape[1] else head)


def has_complex_svd(op: SVDOperator) -> bool:
    """True when ``op``'s spectral coordinates Vᴴx are complex (the FFT blur's unitary Fourier basis)."""
    probe = op.singular_values.new_zeros((1, *op.input_shape))
    return torch.is_complex(op.V_T(probe))


def real_svd(op: SVDOperator, method: str = "this method") -> SVDOperator:
    """``op`` with a *real* SVD A = U diag(s) Vᵀ: ``op`` itself when Vᴴx is already real, else
    ``op.real_svd()`` (an FFT blur with a symmetric kernel: the Hartley basis, :class:`operators.HartleyBlur`).

    Methods that treat spectral coordinates as real Gaussians (SMC, DDRM) need it; ``method`` names the
    caller in the error raised for an operator with complex coordinates and no real basis.
    """
    if not isinstance(op, SVDOperator):
        raise TypeError(f"{method} needs an SVD operator; {type(op).__name__} has no SVD. "
                        "Use 'mmps', 'pigdm' or 'dps' for it.")
    if not has_complex_svd(op):
        return op
    if not hasattr(op, "real_svd"):
        raise TypeError(f"{method} needs real spectral coordinates; {type(op).__name__} has complex ones and "
                        "no real_svd(). Use 'mmps', 'pigdm' or 'dps', which work with complex spectral coordinates.")
    return op.real_svd()
