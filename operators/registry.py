"""Registry of named operators: ``operators.make(name, **kwargs)`` and ``operators.available()``.

Every factory takes ``img_size=(C, H, W)`` (except 'dense'), ``noise`` (a NoiseModel, a float
sigma_y for Gaussian noise, or None) and ``dtype``; the rest are operator parameters with defaults
from the DPS/DDRM papers where they fit the image size.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch

from .base import Operator
from .blur import Blur, BlurFFT
from .color import LUMA_WEIGHTS, Grayscale
from .dense import DenseOperator
from .kernels import gaussian_kernel, motion_kernel
from .masks import CENTER_RATIO, MISSING_RATIO, Mask, box_mask, center_box_mask, half_mask, mask_from_file, random_mask
from .resize import AvgPool, Bicubic

__all__ = ["make", "available", "register", "defaults"]

_REGISTRY: dict[str, Callable[..., Operator]] = {}
DEFAULT_SIZE = (3, 64, 64)


def register(name: str):
    """Decorator adding a factory ``f(**kwargs) -> Operator`` to the registry under ``name``."""
    def deco(fn):
        if name in _REGISTRY:
            raise ValueError(f"operator {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn
    return deco


def available() -> list[str]:
    """Sorted names accepted by ``make``."""
    return sorted(_REGISTRY)


def defaults(name: str) -> dict:
    """The keyword defaults of operator ``name``'s parameters (their one home), e.g. for help texts."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown operator {name!r}; expected one of: {', '.join(available())}")
    params = inspect.signature(_REGISTRY[name]).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def make(name: str, **kwargs) -> Operator:
    """Build the operator registered as ``name`` (see ``available()``) with keyword parameters."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown operator {name!r}; expected one of: {', '.join(available())}")
    return _REGISTRY[name](**kwargs)


def _gen(seed, generator):
    return generator if generator is not None else torch.Generator().manual_seed(int(seed))


def _odd_at_most(size: int, limit: int) -> int:
    size = min(size, limit)
    return size if size % 2 else size - 1


@register("inpaint_center")
def _inpaint_center(img_size=DEFAULT_SIZE, ratio=CENTER_RATIO, box=None, noise=None, dtype=None):
    return Mask(center_box_mask(img_size, box, ratio), img_size[0], noise, dtype)


@register("inpaint_box")
def _inpaint_box(img_size=DEFAULT_SIZE, top=None, left=None, height=None, width=None, noise=None, dtype=None):
    _, h, w = img_size
    height, width = height or h // 4, width or w // 4
    top = h // 8 if top is None else top
    left = w // 8 if left is None else left
    return Mask(box_mask(img_size, top, left, height, width), img_size[0], noise, dtype)


@register("inpaint_random")
def _inpaint_random(img_size=DEFAULT_SIZE, missing_ratio=MISSING_RATIO, seed=0, generator=None, per_channel=False,
                    noise=None, dtype=None):
    m = random_mask(img_size, missing_ratio, _gen(seed, generator), per_channel)
    return Mask(m, img_size[0], noise, dtype)


@register("inpaint_half")
def _inpaint_half(img_size=DEFAULT_SIZE, side="right", noise=None, dtype=None):
    return Mask(half_mask(img_size, side), img_size[0], noise, dtype)


@register("inpaint_file")
def _inpaint_file(path, img_size=DEFAULT_SIZE, threshold=0.5, invert=False, noise=None, dtype=None):
    return Mask(mask_from_file(path, img_size, threshold, invert), img_size[0], noise, dtype)


def _gauss(img_size, sigma, size):
    return gaussian_kernel(sigma, _odd_at_most(size, min(img_size[1:])) if size else None)


def _motion(img_size, size, intensity, seed, generator):
    return motion_kernel(_odd_at_most(size, min(img_size[1:])), intensity, _gen(seed, generator))


@register("blur_gaussian_fft")
def _blur_gaussian_fft(img_size=DEFAULT_SIZE, sigma=3.0, size=61, noise=None, dtype=None, svd_rtol=1e-6):
    return BlurFFT(_gauss(img_size, sigma, size), img_size, noise, svd_rtol=svd_rtol, dtype=dtype)


@register("blur_motion_fft")
def _blur_motion_fft(img_size=DEFAULT_SIZE, size=61, intensity=0.5, seed=0, generator=None, noise=None,
                     dtype=None, svd_rtol=1e-6):
    return BlurFFT(_motion(img_size, size, intensity, seed, generator), img_size, noise, svd_rtol=svd_rtol,
                   dtype=dtype)


@register("blur_kernel_fft")
def _blur_kernel_fft(kernel, img_size=DEFAULT_SIZE, normalize=False, noise=None, dtype=None, svd_rtol=1e-6):
    return BlurFFT(kernel, img_size, noise, normalize, svd_rtol, dtype)


@register("blur_gaussian")
def _blur_gaussian(img_size=DEFAULT_SIZE, sigma=3.0, size=61, noise=None, dtype=None):
    return Blur(_gauss(img_size, sigma, size), img_size, noise, dtype=dtype)


@register("blur_motion")
def _blur_motion(img_size=DEFAULT_SIZE, size=61, intensity=0.5, seed=0, generator=None, noise=None, dtype=None):
    return Blur(_motion(img_size, size, intensity, seed, generator), img_size, noise, dtype=dtype)


@register("blur_kernel")
def _blur_kernel(kernel, img_size=DEFAULT_SIZE, normalize=False, noise=None, dtype=None):
    return Blur(kernel, img_size, noise, normalize, dtype)


@register("grayscale")
def _grayscale(img_size=DEFAULT_SIZE, noise=None, dtype=None):
    return Grayscale(img_size, None, noise, dtype)


@register("grayscale_luma")
def _grayscale_luma(img_size=DEFAULT_SIZE, noise=None, dtype=None):
    return Grayscale(img_size, LUMA_WEIGHTS, noise, dtype)


@register("sr_avgpool")
def _sr_avgpool(img_size=DEFAULT_SIZE, factor=4, noise=None, dtype=None):
    return AvgPool(img_size, factor, noise, dtype)


@register("sr_bicubic")
def _sr_bicubic(img_size=DEFAULT_SIZE, factor=4, antialias=True, noise=None, dtype=None, method="matrix"):
    return Bicubic(img_size, factor, antialias, noise, dtype, method)


@register("dense")
def _dense(matrix=None, d=8, m=4, seed=0, generator=None, input_shape=None, noise=None, dtype=None):
    """Random Gaussian matrix with entries N(0, 1/d) unless ``matrix`` (m, n) is given."""
    if matrix is None:
        matrix = torch.randn(m, d, generator=_gen(seed, generator), dtype=torch.float64) / d**0.5
    return DenseOperator(matrix, input_shape, None, noise, dtype=dtype or torch.get_default_dtype())
