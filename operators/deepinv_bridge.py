"""Bridges both ways with ``deepinv.physics`` (deepinv 0.5).

* ``from_deepinv(physics, input_shape)``: a deepinv ``Physics`` as an invscore operator. A
  ``DecomposablePhysics`` whose spectral space has as many coordinates as the image and the
  measurement (e.g. ``Inpainting``, ``Denoising``) becomes an ``SVDOperator`` with V_T = V_adjoint,
  U_T = U_adjoint, s = mask; other linear physics become a ``LinearOperator`` (A, A_adjoint,
  A_dagger forwarded); non-linear physics an ``Operator``. deepinv's ``BlurFFT`` keeps a half
  (rfft) spectrum, so it is bridged as a plain linear operator.
* ``to_deepinv(op)``: an invscore operator as a ``deepinv.physics.LinearPhysics`` (or ``Physics``),
  usable by deepinv's solvers; Gaussian/Poisson noise is translated to deepinv's noise models.
"""
from __future__ import annotations

import deepinv
import torch

from .base import LinearOperator, Operator
from .noise import GaussianNoise, NoiseModel, NoNoise, PoissonNoise
from .svd import SVDOperator

__all__ = ["from_deepinv", "to_deepinv", "DeepinvOperator", "DeepinvLinearOperator", "DeepinvSVDOperator"]


def _noise_from_deepinv(nm) -> NoiseModel:
    if nm is None or isinstance(nm, deepinv.physics.ZeroNoise):
        return NoNoise()
    if isinstance(nm, deepinv.physics.GaussianNoise):
        return GaussianNoise(float(nm.sigma))
    if isinstance(nm, deepinv.physics.PoissonNoise):
        return PoissonNoise(float(nm.gain))
    raise ValueError(f"from_deepinv: expected ZeroNoise, GaussianNoise or PoissonNoise, got {type(nm).__name__}; "
                     "set the noise yourself with .with_noise(...)")


def _noise_to_deepinv(noise: NoiseModel):
    if isinstance(noise, GaussianNoise):
        return deepinv.physics.GaussianNoise(sigma=noise.sigma)
    if isinstance(noise, PoissonNoise):
        return deepinv.physics.PoissonNoise(gain=noise.gain, normalize=True, clip_positive=True)
    return deepinv.physics.ZeroNoise()


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

    def __init__(self, op: LinearOperator):
        super().__init__(img_size=tuple(op.input_shape), noise_model=_noise_to_deepinv(op.noise))
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


def to_deepinv(op: Operator):
    """Wrap an invscore operator so it can be passed wherever deepinv expects ``physics``."""
    if isinstance(op, LinearOperator):
        return InvscorePhysics(op)
    return InvscoreNonlinearPhysics(op)
