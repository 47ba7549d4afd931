"""All metrics of a reconstruction at once: the one bundle behind the CLI runs, the evaluations and the
experiments."""
from __future__ import annotations

import math
import warnings
from typing import Mapping, Sequence

from torch import Tensor

from invscore.metrics.perceptual import LPIPS_MIN_SIDE, MISSING_REPORTED, lpips
from invscore.metrics.pixel import SSIM_WINDOW, colorfulness, psnr, ssim
from invscore.metrics.weights import SETUP_COMMAND, MissingWeightsError

ON_MISSING = ("raise", "warn", "skip")


def _too_small(key: str, need: int, side: int, on_missing: str) -> bool:
    """Whether images whose short side is ``side`` are too small for metric ``key`` (which needs ``need``);
    if so, raise or warn as ``on_missing`` says."""
    if side >= need:
        return False
    msg = (f"{key} is not defined for images this small (it needs {need}×{need}, got {side} on the short side); "
           "left out")
    if on_missing == "raise":
        raise ValueError(msg)
    if on_missing == "warn":
        warnings.warn(msg, stacklevel=3)
    return True


def _lpips_keys(lpips_nets: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    if isinstance(lpips_nets, str):
        raise TypeError(f"lpips_nets must be a tuple of backbones or a {{key: backbone}} mapping, got the "
                        f"string {lpips_nets!r}; write ({lpips_nets!r},)")
    if isinstance(lpips_nets, Mapping):
        return dict(lpips_nets)
    return {f"lpips_{net}": net for net in lpips_nets}


def compute_all(x_hat: Tensor, x: Tensor, lpips_nets: Sequence[str] | Mapping[str, str] = ("alex", "vgg"),
                colour: bool = True, on_missing: str = "raise") -> dict[str, Tensor]:
    """Per-image metrics of x_hat against x, both (B, C, H, W) in [0, 1] (data_range = 1.0).

    Keys: 'psnr' (dB, 10 log10(1/MSE)), 'ssim' (Wang et al. 2004), one LPIPS distance per backbone
    (Zhang et al. 2018, eq. 1) and, if ``colour``, 'colorfulness' of x_hat (Hasler & Suesstrunk 2003;
    0 for gray). ``lpips_nets`` is a tuple of backbones ('alex', 'vgg'), keyed 'lpips_<net>', or a
    mapping {key: backbone}, e.g. {'lpips': 'alex'}. Without installed LPIPS weights ``on_missing``
    decides: 'raise' the MissingWeightsError, 'skip' the LPIPS keys, or 'warn' once per backbone (until
    ``clear_lpips_cache()``) and skip them. The same choice covers images too small for a metric (SSIM's
    11×11 window; LPIPS's AlexNet/VGG trunks need about 32×32): 'raise', or leave that key out (with a
    warning under 'warn'), so a finished run is never lost to its scoring. Each value has shape (B,) and
    lies on the inputs' device.
    """
    if on_missing not in ON_MISSING:
        raise ValueError(f"on_missing must be one of {ON_MISSING}, got {on_missing!r}")
    side = min(x.shape[-2:])
    out = {"psnr": psnr(x_hat, x)}
    if not _too_small("ssim", SSIM_WINDOW, side, on_missing):
        out["ssim"] = ssim(x_hat, x)
    for key, net in _lpips_keys(lpips_nets).items():
        if _too_small(key, LPIPS_MIN_SIDE, side, on_missing) or (on_missing == "warn" and net in MISSING_REPORTED):
            continue
        try:
            out[key] = lpips(x_hat, x, net=net)
        except MissingWeightsError as exc:
            if on_missing == "raise":
                raise
            if on_missing == "warn":
                MISSING_REPORTED.add(net)
                warnings.warn(f"LPIPS unavailable ({str(exc).splitlines()[0]}); install its weights once "
                              f"with `{SETUP_COMMAND}`", stacklevel=2)
    if colour:
        out["colorfulness"] = colorfulness(x_hat)
    return out


def mean_se(v: Tensor) -> tuple[float, float]:
    """Mean and standard error s/√n of per-image values v (float64; the s.e. is nan for one image)."""
    v = v.detach().double().flatten()
    n = v.numel()
    return float(v.mean()), (float(v.std() / math.sqrt(n)) if n > 1 else float("nan"))


def summarize(per_image: Mapping[str, Tensor]) -> dict[str, float]:
    """{key: mean, key_se: standard error} over images for each per-image metric (:func:`mean_se`)."""
    out = {}
    for key, v in per_image.items():
        out[key], out[key + "_se"] = mean_se(v)
    return out
