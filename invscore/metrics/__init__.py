"""Image-quality metrics: pure functions (x_hat, x) -> per-image tensor (B,), images in [0, 1].

data_range is 1.0 everywhere. LPIPS needs its backbone weights installed once with
``python -m invscore.metrics.setup_lpips`` (see `invscore.metrics.weights`).
"""
from invscore.metrics.perceptual import clear_lpips_cache, lpips
from invscore.metrics.pixel import DATA_RANGE, colorfulness, psnr, ssim
from invscore.metrics.suite import compute_all
from invscore.metrics.weights import MissingWeightsError, cache_dir

__all__ = ["DATA_RANGE", "MissingWeightsError", "cache_dir", "clear_lpips_cache", "colorfulness",
           "compute_all", "lpips", "psnr", "ssim"]
