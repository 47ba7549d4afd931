"""Pixel-space metrics: PSNR, SSIM and colorfulness, on [0, 1] images (data_range = 1.0)."""
from __future__ import annotations

import piq
import torch
from torch import Tensor

#: the value range every metric takes: [0, 1] images (``invscore.io.from_data`` converts [-1, 1] data space)
IMAGE_RANGE = (0.0, 1.0)
DATA_RANGE = IMAGE_RANGE[1] - IMAGE_RANGE[0]  # the peak of PSNR
#: how far outside IMAGE_RANGE an input may reach before it is refused rather than clipped: reconstructions
#: overshoot a little, but [-1, 1] data (min near -1) or 0..255 images are another range, and clipping them
#: would return wrong numbers silently
RANGE_TOLERANCE = 0.1

#: the side of SSIM's Gaussian window (Wang et al. 2004): the smallest image side SSIM is defined on
SSIM_WINDOW = 11


def _check_range(name: str, t: Tensor) -> None:
    lo, hi = IMAGE_RANGE
    t = t.detach()
    # NaN passes (a diverged sample scores NaN, which the summaries skip); comparisons say False for it
    if bool(((t < lo - RANGE_TOLERANCE) | (t > hi + RANGE_TOLERANCE)).any()):
        t_min, t_max = float(t.nan_to_num(nan=lo).amin()), float(t.nan_to_num(nan=hi).amax())
        raise ValueError(f"{name} has values in [{t_min:.3g}, {t_max:.3g}] but metrics take [0, 1] images "
                         f"(tolerance {RANGE_TOLERANCE}); convert [-1, 1] data with invscore.io.from_data(x), "
                         "0..255 images with x / 255")


def check_pair(x_hat: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Validate a (B, C, H, W) pair in [0, 1] (values beyond ``RANGE_TOLERANCE`` of it are refused) and clip
    both to [0, 1].

    Clipping is deliberate: reconstructions overshoot [0, 1] a little, piq refuses such values,
    and the clipped image is what a saved 8-bit PNG would show. Every metric clips the same way.
    """
    for name, t in (("x_hat", x_hat), ("x", x)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(
                f"{name} must be a batch (B, C, H, W), got shape {tuple(t.shape)}; "
                "add a batch dimension with t[None]"
            )
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point in [0, 1], got {t.dtype}; use t.float() / 255")
        _check_range(name, t)
    if x_hat.shape != x.shape:
        raise ValueError(f"x_hat and x must have the same shape, got {tuple(x_hat.shape)} and {tuple(x.shape)}")
    if x_hat.shape[1] not in (1, 3):
        raise ValueError(f"expected 1 (gray) or 3 (RGB) channels, got {x_hat.shape[1]}")
    x = x.to(x_hat.dtype)
    return x_hat.clamp(0.0, DATA_RANGE), x.clamp(0.0, DATA_RANGE)


def psnr(x_hat: Tensor, x: Tensor) -> Tensor:
    """Peak signal-to-noise ratio per image, in dB: PSNR = 10 log10(1 / MSE), data_range = 1.

    MSE is the mean over channels and pixels of each image. Identical images give MSE = 0 and
    PSNR = +inf (as scikit-image does): a clamp would invent a number, and a mean over a
    dataset containing a perfect reconstruction is honestly infinite. Returns shape (B,).
    """
    x_hat, x = check_pair(x_hat, x)
    mse = (x_hat - x).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(DATA_RANGE**2 / mse)


def ssim(x_hat: Tensor, x: Tensor) -> Tensor:
    """Structural similarity per image (Wang et al. 2004), data_range = 1.

    SSIM = mean over pixels of [(2 mu_a mu_b + C1)(2 s_ab + C2)] / [(mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2)]
    with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, C_i = (K_i * data_range)^2,
    valid (unpadded) windows, averaged over channels. No automatic downsampling of large images,
    so it equals skimage's structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1.0). Needs H, W >= 11. Returns shape (B,).
    """
    x_hat, x = check_pair(x_hat, x)
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM uses an 11x11 window; images must be at least 11x11, got {tuple(x.shape[-2:])}")
    return piq.ssim(x_hat, x, data_range=DATA_RANGE, reduction="none", downsample=False)


def colorfulness(x: Tensor) -> Tensor:
    """Colorfulness of each image (Hasler & Suesstrunk 2003), no reference needed.

    With R, G, B on the 0..255 scale (the paper's, so values compare with published ones):
    rg = R - G, yb = (R + G)/2 - B, M = sqrt(std(rg)^2 + std(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2),
    population standard deviations over the pixels. Gray images (C = 1) score 0. Returns shape (B,).
    """
    x, _ = check_pair(x, x)
    if x.shape[1] == 1:
        return x.new_zeros(x.shape[0])
    r, g, b = (255.0 * x).unbind(dim=1)
    rg = (r - g).flatten(1)
    yb = (0.5 * (r + g) - b).flatten(1)
    std = torch.sqrt(rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False))
    mean = torch.sqrt(rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2)
    return std + 0.3 * mean
