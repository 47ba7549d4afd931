"""invscore operators: forward models A, their adjoints, pseudo-inverses and SVDs, plus noise models.

See ``operators/svd.py`` for the spectral-coordinate convention shared by every SVD operator and
``operators.available()`` for the registry of named operators.
"""
from .base import Operator, LinearOperator, FunctionOperator, LinearFunctionOperator, conjugate_gradient
from .noise import NoiseModel, NoNoise, GaussianNoise, PoissonNoise
from .svd import SVDOperator
from .compose import Composed, ComposedLinear
from .masks import Mask, center_box_mask, box_mask, random_mask, half_mask, mask_from_file
from .kernels import gaussian_kernel, gaussian_kernel_1d, motion_kernel, check_kernel
from .blur import Blur, BlurFFT
from .color import Grayscale, LUMA_WEIGHTS, colour_transform
from .resize import AvgPool, Bicubic
from .dense import DenseOperator
from .deepinv_bridge import from_deepinv, to_deepinv
from .registry import make, available, register

__all__ = [
    "Operator", "LinearOperator", "FunctionOperator", "LinearFunctionOperator", "conjugate_gradient",
    "NoiseModel", "NoNoise", "GaussianNoise", "PoissonNoise", "SVDOperator", "Composed", "ComposedLinear",
    "Mask", "center_box_mask", "box_mask", "random_mask", "half_mask", "mask_from_file",
    "gaussian_kernel", "gaussian_kernel_1d", "motion_kernel", "check_kernel", "Blur", "BlurFFT",
    "Grayscale", "LUMA_WEIGHTS", "colour_transform", "AvgPool", "Bicubic", "DenseOperator",
    "from_deepinv", "to_deepinv", "make", "available", "register",
]
