"""Blur kernels: Gaussian (kornia), random-trajectory motion blur, and validation of user kernels.

Kernels are 2-D tensors (kh, kw) with odd sizes, applied as a true convolution (y = k * x, centre at
(kh // 2, kw // 2)), the convention of deepinv and of the DPS paper.
"""
from __future__ import annotations

import math
import warnings

import torch
from kornia.filters import get_gaussian_kernel1d, get_gaussian_kernel2d

__all__ = ["gaussian_kernel", "gaussian_kernel_1d", "motion_kernel", "check_kernel"]


def _check_sigma(sigma) -> float:
    """The Gaussian std in pixels as a float > 0 (kornia would square a negative one and carry on)."""
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise TypeError(f"the Gaussian blur sigma must be a number (std in pixels), got {sigma!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"the Gaussian blur sigma must be a finite number > 0 (std in pixels), got {sigma!r}")
    return value


def _default_size(sigma: float) -> int:
    return 2 * math.ceil(3.0 * sigma) + 1


def gaussian_kernel_1d(sigma: float, size: int | None = None) -> torch.Tensor:
    """Normalised sampled Gaussian exp(-t²/2σ²), length ``size`` (default 2⌈3σ⌉+1), via kornia."""
    sigma = _check_sigma(sigma)
    size = _default_size(sigma) if size is None else int(size)
    return get_gaussian_kernel1d(size, sigma, dtype=torch.float64)[0]


def gaussian_kernel(sigma: float, size: int | None = None) -> torch.Tensor:
    """Isotropic normalised Gaussian kernel (size, size), via ``kornia.filters.get_gaussian_kernel2d``.

    DPS (Chung et al. 2023, §4) uses size 61 and σ = 3.0 on 256×256 images.
    """
    sigma = _check_sigma(sigma)
    size = _default_size(sigma) if size is None else int(size)
    return get_gaussian_kernel2d(size, (sigma, sigma), dtype=torch.float64)[0]


def motion_kernel(size: int = 61, intensity: float = 0.5, generator: torch.Generator | None = None,
                  n_points: int | None = None) -> torch.Tensor:
    """Random camera-shake kernel (size, size), sum 1, from a random trajectory.

    The trajectory follows Boracchi & Foi (2012, "Modeling the performance of image restoration from
    motion blur", Alg. 1): a velocity with inertia, a centripetal pull, Gaussian jitter and rare big
    shakes, scaled by ``intensity`` in [0, 1] — the model behind the ``motionblur`` package that DPS
    uses (size 61, intensity 0.5). The path is splatted bilinearly on the grid. Seed with ``generator``.
    """
    if size % 2 == 0 or size < 3:
        raise ValueError(f"motion_kernel: expected an odd size >= 3, got {size}")
    if not 0.0 <= intensity <= 1.0:
        raise ValueError(f"motion_kernel: expected intensity in [0, 1], got {intensity}")
    t = n_points or 4 * size
    g = dict(generator=generator, dtype=torch.float64)
    max_len = 0.75 * size
    step = max_len / (t - 1)
    centripetal = 0.7 * float(torch.rand((), **g))
    gauss_shake = 10.0 * float(torch.rand((), **g))
    big_shake = 0.2 * float(torch.rand((), **g))
    phi0 = 2 * math.pi * float(torch.rand((), **g))
    jump = torch.rand(t, **g) < big_shake * intensity
    jump_angle = math.pi + (torch.rand(t, **g) - 0.5)
    noise = torch.complex(torch.randn(t, **g), torch.randn(t, **g))
    # The recursion is inherently sequential; t ~ 4·size steps of scalar complex arithmetic is cheap.
    v = complex(math.cos(phi0), math.sin(phi0)) * step
    pos = [0j]
    for i in range(t - 1):
        dv = (2 * v * complex(math.cos(jump_angle[i]), math.sin(jump_angle[i]))) if jump[i] else 0j
        dv += intensity * (gauss_shake * complex(noise[i]) - centripetal * pos[-1]) * step
        v = v + dv
        v = v / (abs(v) + 1e-12) * step
        pos.append(pos[-1] + v)
    p = torch.tensor(pos, dtype=torch.complex128)
    xs, ys = p.real, p.imag
    # Centre the path's bounding box and shrink it if it would leave the kernel support.
    xs = xs - (xs.max() + xs.min()) / 2
    ys = ys - (ys.max() + ys.min()) / 2
    extent = float(torch.maximum(xs.abs().max(), ys.abs().max()))
    half = (size - 3) / 2
    if extent > half:
        xs, ys = xs * half / extent, ys * half / extent
    xs, ys = xs + size // 2, ys + size // 2
    k = torch.zeros(size, size, dtype=torch.float64)
    x0, y0 = xs.floor().long(), ys.floor().long()
    fx, fy = xs - x0, ys - y0
    for dy, dx, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        k.index_put_(((y0 + dy).clamp(0, size - 1), (x0 + dx).clamp(0, size - 1)), w, accumulate=True)
    return k / k.sum()


def check_kernel(kernel, normalize: bool = False, atol: float = 1e-6) -> torch.Tensor:
    """Validate a blur kernel (returned in float64): 2-D, odd sizes, finite, and summing to 1.

    A kernel that does not sum to 1 changes the image's mean brightness, which is almost always a
    bug, so it is refused (ValueError) unless ``normalize=True``, which rescales it with a warning.
    """
    k = torch.as_tensor(kernel).to(torch.float64)
    if k.dim() == 4 and k.shape[:2] == (1, 1):
        k = k[0, 0]
    elif k.dim() == 3 and k.shape[0] == 1:
        k = k[0]
    if k.dim() != 2:
        raise ValueError(f"expected a 2-D blur kernel (kh, kw), got shape {tuple(k.shape)}")
    if k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise ValueError(f"expected odd kernel sizes so the kernel has a centre pixel, got {tuple(k.shape)}; "
                         "pad it with a zero row/column")
    if not torch.isfinite(k).all():
        raise ValueError("expected a finite blur kernel, got NaN or inf entries")
    total = float(k.sum())
    if abs(total - 1.0) > atol:
        if not normalize:
            raise ValueError(f"expected a blur kernel summing to 1, got sum {total:.6g}; "
                             "pass normalize=True to rescale it")
        if abs(total) < 1e-12:
            raise ValueError("cannot normalise a blur kernel that sums to 0")
        warnings.warn(f"blur kernel summed to {total:.6g}; normalised to 1", stacklevel=3)
        k = k / total
    return k
