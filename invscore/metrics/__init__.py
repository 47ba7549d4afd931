"""Image-quality metrics: pure functions (x_hat, x) -> per-image tensor (B,), images in [0, 1].

The range, in one place: ``IMAGE_RANGE = (0, 1)``; an input reaching more than ``RANGE_TOLERANCE`` (0.1)
beyond it is refused with a ValueError (convert [-1, 1] data with ``invscore.io.from_data``).

Decisions shared by all metrics:

- data_range is 1.0; inputs are (B, C, H, W) floats, C = 1 (gray) or 3 (RGB), and are clipped to
  [0, 1] first (what an 8-bit PNG of the reconstruction would show).
- Identical images give PSNR = +inf, not a clamped number.
- Gray images are replicated to 3 channels for LPIPS; their colorfulness is 0.
- Results have shape (B,) and stay on the inputs' device and dtype.
- LPIPS needs its backbone weights installed once with ``python -m invscore.metrics.setup_lpips``
  (see `invscore.metrics.weights`); without them it raises MissingWeightsError naming that
  command and never downloads or runs a random backbone on its own.
"""
from invscore.metrics.perceptual import clear_lpips_cache, lpips
from invscore.metrics.pixel import DATA_RANGE, IMAGE_RANGE, RANGE_TOLERANCE, colorfulness, psnr, ssim
from invscore.metrics.suite import compute_all, mean_se, summarize
from invscore.metrics.weights import MissingWeightsError, cache_dir

__all__ = ["DATA_RANGE", "IMAGE_RANGE", "RANGE_TOLERANCE", "MissingWeightsError", "cache_dir", "clear_lpips_cache", "colorfulness",
           "compute_all", "lpips", "mean_se", "psnr", "ssim", "summarize"]
