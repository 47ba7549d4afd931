"""Bridges both ways with ``deepinv.physics`` (deepinv 0.5).

* ``from_deepinv(physics, input_shape)``: a deepinv ``Physics`` as an invscore operator. A
  ``DecomposablePhysics`` whose spectral space has as many coordinates as the image and the
  measurement (e.g. ``Inpainting``, ``Denoising``) becomes an ``SVDOperator`` with V_T = V_adjoint,
  U_T = U_adjoint, s = mask; other linear physics become a ``LinearOperator`` (A, A_adjoint,
  A_dagger forwarded); non-linear physics an ``Operator``. deepinv's ``BlurFFT`` keeps a half
  (rfft) spectrum, so it is bridged as a plain linear operator.
* ``to_deepinv(op)``: an invscore operator as a ``deepinv.physics.LinearPhysics`` (or ``Physics``),
  usable by deepinv's solvers; Gaussian/Poisson noise is translated to deepinv's noise models
  (no noise to σ = 0).
  ``decomposable=True`` gives a ``DecomposablePhysics`` from the operator's own SVD (what deepinv's
  DDRM needs, Kawar et al. 2022, §3), in a real basis (:func:`operators.real_svd`: deepinv draws
  ``randn_like`` noise on spectral coordinates, so they cannot be complex).
* deepinv's samplers see images u ∈ [0, 1]; invscore data are x = c (2u − 1) (c = 1: [-1, 1] images).
  For a linear A, y = A x + σ n becomes y_u = (y + c A𝟙) / (2c) = A u + σ/(2c) n: the same A with
  noise σ/(2c) (``to_deepinv(op, unit_scale=c)``) and the measurement :func:`to_unit_measurement`.
  The matching denoiser bridge is :class:`invscore.priors.deepinv_bridge.UnitDenoiser`.
"""
from __future__ import annotations

import deepinv
import torch

from .base import LinearOperator, Operator
from .noise import GaussianNoise, NoiseModel, NoNoise, PoissonNoise
from .svd import SVDOperator, real_svd

__all__ = ["from_deepinv", "to_deepinv", "to_unit_measurement", "DeepinvOperator", "DeepinvLinearOperator",
           "DeepinvSVDOperator", "InvscorePhysics", "InvscoreNonlinearPhysics", "InvscoreSVDPhysics"]


def _noise_from_deepinv(nm) -> NoiseModel:
    if nm is None or isinstance(nm, deepinv.physics.ZeroNoise):
        return NoNoise()
    if isinstance(nm, deepinv.physics.GaussianNoise):
        return GaussianNoise(float(nm.sigma))
    if isinstance(nm, deepinv.physics.PoissonNoise):
        return PoissonNoise(float(nm.gain))
    raise ValueError(f"from_deepinv: expected ZeroNoise, GaussianNoise or PoissonNoise, got {type(nm).__name__}; "
                     "set the noise yourself with .with_noise(...)")


def _noise_to_deepinv(noise: NoiseModel, unit_scale: float | None = None):
    if isinstance(noise, GaussianNoise):
        # x = c (2u − 1): noise of std σ on A x is noise of std σ / (2c) on A u
        return deepinv.physics.GaussianNoise(sigma=noise.sigma / (2 * unit_scale if unit_scale else 1.0))
    if isinstance(noise, PoissonNoise):
        if unit_scale is not None:
            raise ValueError("to_deepinv: unit_scale needs Gaussian or no noise (Poisson counts do not "
                             "rescale); pass unit_scale=None or use GaussianNoise")
        return deepinv.physics.PoissonNoise(gain=noise.gain, normalize=True, clip_positive=True)
    # σ = 0 said explicitly: deepinv's DDRM and DiffPIR read noise_model.sigma and assume 0.01 without one
    return deepinv.physics.GaussianNoise(sigma=0.0)


def _out_shape(physics, input_shape):
    with torch.no_grad():
        return tuple(physics.A(torch.zeros(1, *input_shape)).shape[1:])


class DeepinvOperator(Operator):
    """A (possibly non-linear) deepinv ``Physics`` seen as an invscore ``Operator`` (A = physics.A)."""

    def __init__(self, physics, input_shape, output_shape=None):
        output_shape = _out_shape(physics, input_shape) if output_shape is None else output_shape
        super().__init__(input_shape, output_shape, _noise_from_deepinv(getattr(physics, "noise_model", None)))
        self.physics = physics

    def _A(self, x):
        return self.physics.A(x)


class DeepinvLinearOperator(DeepinvOperator, LinearOperator):
    """A deepinv ``LinearPhysics``: A, Aᵀ = A_adjoint, A⁺ = A_dagger (deepinv's own solver or closed form)."""

    def _A_T(self, y):
        return self.physics.A_adjoint(y)

    def _A_pinv(self, y):
        return self.physics.A_dagger(y)


class DeepinvSVDOperator(DeepinvLinearOperator, SVDOperator):
    """A deepinv ``DecomposablePhysics`` A = U diag(mask) Vᴴ with square unitary factors, as an SVDOperator."""

    def __init__(self, physics, input_shape, output_shape=None):
        super().__init__(physics, input_shape, output_shape)
        with torch.no_grad():
            spec = physics.V_adjoint(torch.zeros(1, *input_shape)).shape[1:]
        mask = torch.as_tensor(physics.mask)
        self._spec_shape = tuple(spec)
        self._register_svd(torch.broadcast_to(mask.abs(), (1, *spec)).flatten().clone())

    def V_T(self, x):
        return self.physics.V_adjoint(x).flatten(1)

    def V(self, z):
        return self.physics.V(z.view(z.shape[0], *self._spec_shape))

    def U_T(self, y):
        return self.physics.U_adjoint(y).flatten(1)

    def U(self, z):
        return self.physics.U(z.view(z.shape[0], *self._spec_shape))


def from_deepinv(physics, input_shape, output_shape=None) -> Operator:
    """Wrap a deepinv ``Physics`` as the most specific invscore operator (SVD > linear > general)."""
    input_shape = tuple(input_shape)
    if isinstance(physics, deepinv.physics.DecomposablePhysics) and not isinstance(physics, deepinv.physics.BlurFFT):
        output_shape = _out_shape(physics, input_shape) if output_shape is None else tuple(output_shape)
        with torch.no_grad():
            k = physics.V_adjoint(torch.zeros(1, *input_shape))[0].numel()
        n, m = torch.Size(input_shape).numel(), torch.Size(output_shape).numel()
        if k == n == m:
            return DeepinvSVDOperator(physics, input_shape, output_shape)
        return DeepinvLinearOperator(physics, input_shape, output_shape)
    if isinstance(physics, deepinv.physics.LinearPhysics):
        return DeepinvLinearOperator(physics, input_shape, output_shape)
    return DeepinvOperator(physics, input_shape, output_shape)


class InvscorePhysics(deepinv.physics.LinearPhysics):
    """An invscore ``LinearOperator`` as a deepinv ``LinearPhysics`` (A, A_adjoint, A_dagger forwarded)."""

    def __init__(self, op: LinearOperator, unit_scale: float | None = None):
        super().__init__(img_size=tuple(op.input_shape), noise_model=_noise_to_deepinv(op.noise, unit_scale))
        self.op = op

    def A(self, x, **kwargs):
        return self.op._A(x)

    def A_adjoint(self, y, **kwargs):
        return self.op._A_T(y)

    def A_adjoint_A(self, x, **kwargs):
        return self.op._AtA(x)

    def A_dagger(self, y, **kwargs):
        return self.op._A_pinv(y)


class InvscoreNonlinearPhysics(deepinv.physics.Physics):
    """A general invscore ``Operator`` as a deepinv ``Physics``."""

    def __init__(self, op: Operator):
        super().__init__(noise_model=_noise_to_deepinv(op.noise))
        self.op = op

    def A(self, x, **kwargs):
        return self.op._A(x)


class InvscoreSVDPhysics(deepinv.physics.DecomposablePhysics):
    """An invscore ``SVDOperator`` A = U diag(s) Vᵀ as a deepinv ``DecomposablePhysics`` (Kawar et al. 2022,
    §3): flat real spectral coordinates (B, k), k = max(n, m), mask = s padded with zeros to k, so DDRM's
    per-coordinate rules apply; deepinv's A = U(mask · Vᵀx) then equals ``op.A``."""

    def __init__(self, op: SVDOperator, unit_scale: float | None = None):
        op = real_svd(op, "deepinv's DecomposablePhysics")
        k = max(op.n, op.m)
        s = op.singular_values.detach()
        super().__init__(mask=SVDOperator._pad(s[None], k), img_size=tuple(op.input_shape),
                         noise_model=_noise_to_deepinv(op.noise, unit_scale))
        self.op = op

    def _through(self, f, z):
        # deepinv's samplers carry states of their own dtype (DPS: float32): compute in the operator's
        return f(z.to(self.mask.dtype)).to(z.dtype)

    def V_adjoint(self, x, **kwargs):
        return self._through(lambda v: SVDOperator._pad(self.op.V_T(v), self.mask.shape[1]), x)

    def V(self, z, **kwargs):
        return self._through(lambda v: self.op.V(v[:, : self.op.n]), z)

    def U_adjoint(self, y, **kwargs):
        return self._through(lambda v: SVDOperator._pad(self.op.U_T(v), self.mask.shape[1]), y)

    def U(self, z, **kwargs):
        return self._through(lambda v: self.op.U(v[:, : self.op.m]), z)


def to_deepinv(op: Operator, decomposable: bool = False, unit_scale: float | None = None):
    """Wrap an invscore operator so it can be passed wherever deepinv expects ``physics``.

    ``decomposable``: an :class:`InvscoreSVDPhysics` (``op`` must be an SVDOperator with a real basis).
    ``unit_scale`` c: deepinv works on u ∈ [0, 1] with x = c (2u − 1), so Gaussian noise σ becomes σ/(2c);
    map the measurement with :func:`to_unit_measurement` (None: deepinv sees x itself).
    """
    if decomposable:
        if not isinstance(op, SVDOperator):
            raise TypeError(f"to_deepinv(decomposable=True) needs an SVD operator, got {type(op).__name__}; "
                            "pass decomposable=False for a plain LinearPhysics")
        return InvscoreSVDPhysics(op, unit_scale)
    if isinstance(op, LinearOperator):
        return InvscorePhysics(op, unit_scale)
    if unit_scale is not None:
        raise ValueError(f"to_deepinv: unit_scale needs a linear operator (y_u = A u + σ/(2c) n holds for linear "
                         f"A only), got {type(op).__name__}; pass unit_scale=None")
    return InvscoreNonlinearPhysics(op)


def to_unit_measurement(op: LinearOperator, y: torch.Tensor, unit_scale: float = 1.0) -> torch.Tensor:
    """The measurement in deepinv's [0, 1] units: y_u = (y + c A𝟙) / (2c) = A u + σ/(2c) n for x = c (2u − 1)
    (A linear, c = ``unit_scale``)."""
    ones = torch.ones(1, *op.input_shape, dtype=y.dtype, device=y.device)
    return (y + unit_scale * op.A(ones)) / (2 * unit_scale)
