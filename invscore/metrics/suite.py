"""All metrics of a reconstruction at once."""
from __future__ import annotations

from torch import Tensor

from invscore.metrics.perceptual import lpips
from invscore.metrics.pixel import colorfulness, psnr, ssim


def compute_all(x_hat: Tensor, x: Tensor, lpips_nets: tuple[str, ...] = ("alex", "vgg")) -> dict[str, Tensor]:
    """Per-image metrics of x_hat against x, both (B, C, H, W) in [0, 1] (data_range = 1.0).

    Keys: 'psnr' (dB, 10 log10(1/MSE)), 'ssim' (Wang et al. 2004), 'lpips_<net>' for each net in
    `lpips_nets` (Zhang et al. 2018) and 'colorfulness' of x_hat (Hasler & Suesstrunk 2003; 0 for
    gray). Each value has shape (B,) and lies on the inputs' device.
    """
    out = {"psnr": psnr(x_hat, x), "ssim": ssim(x_hat, x)}
    for net in lpips_nets:
        out[f"lpips_{net}"] = lpips(x_hat, x, net=net)
    out["colorfulness"] = colorfulness(x_hat)
    return out
