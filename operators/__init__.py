"""invscore operators: forward models A, their adjoints, pseudo-inverses and SVDs, plus noise models.

See ``operators/svd.py`` for the spectral-coordinate convention shared by every SVD operator and
``operators.available()`` for the registry of named operators.
"""
from .base import Operator, LinearOperator, FunctionOperator, LinearFunctionOperator, conjugate_gradient
from .noise import NoiseModel, NoNoise, GaussianNoise, PoissonNoise
from .svd import SVDOperator, real_svd
from .compose import Composed, ComposedLinear
from .masks import Mask, center_box_mask, box_mask, random_mask, half_mask, mask_from_file
from .kernels import gaussian_kernel, gaussian_kernel_1d, motion_kernel, check_kernel
from .blur import Blur, BlurFFT, HartleyBlur
from .color import Grayscale, LUMA_WEIGHTS, colour_transform
from .resize import AvgPool, Bicubic
from .dense import DenseOperator
from .registry import make, available, register, defaults


def from_deepinv(physics, input_shape, output_shape=None):
    """A deepinv physics as an invscore operator (see :func:`operators.deepinv_bridge.from_deepinv`).
    Imported on first use: deepinv takes seconds to import, and most runs never need it."""
    from .deepinv_bridge import from_deepinv as _from
    return _from(physics, input_shape, output_shape)


def to_deepinv(op, decomposable=False, unit_scale=None):
    """An invscore operator as deepinv physics (see :func:`operators.deepinv_bridge.to_deepinv`)."""
    from .deepinv_bridge import to_deepinv as _to
    return _to(op, decomposable, unit_scale)


def to_unit_measurement(op, y, unit_scale=1.0):
    """y in deepinv's [0, 1] units (see :func:`operators.deepinv_bridge.to_unit_measurement`)."""
    from .deepinv_bridge import to_unit_measurement as _to
    return _to(op, y, unit_scale)


__all__ = [
    "Operator", "LinearOperator", "FunctionOperator", "LinearFunctionOperator", "conjugate_gradient",
    "NoiseModel", "NoNoise", "GaussianNoise", "PoissonNoise", "SVDOperator", "real_svd", "Composed", "ComposedLinear",
    "Mask", "center_box_mask", "box_mask", "random_mask", "half_mask", "mask_from_file",
    "gaussian_kernel", "gaussian_kernel_1d", "motion_kernel", "check_kernel", "Blur", "BlurFFT", "HartleyBlur",
    "Grayscale", "LUMA_WEIGHTS", "colour_transform", "AvgPool", "Bicubic", "DenseOperator",
    "from_deepinv", "to_deepinv", "to_unit_measurement", "make", "available", "register", "defaults",
]
