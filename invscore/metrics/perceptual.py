"""LPIPS (Zhang et al. 2018) with AlexNet or VGG16 trunks, loaded offline and never at random."""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import lpips as lpips_pkg
import torch
from torch import Tensor

from invscore.metrics.pixel import check_pair
from invscore.metrics.weights import NETS, load_trunk

LINEAR_VERSION = "0.1"
#: the smallest image side LPIPS is computed on (AlexNet's strides and pools leave nothing of a 24×24 image;
#: one bound for both trunks, so results never depend on which backbone tolerated a small input)
LPIPS_MIN_SIDE = 32


def linear_weights_path(net: str) -> Path:
    """The lpips package's calibrated v0.1 linear layers for `net` (shipped inside the pip package)."""
    return Path(lpips_pkg.__file__).parent / "weights" / f"v{LINEAR_VERSION}" / f"{net}.pth"


def build_lpips(net: str) -> lpips_pkg.LPIPS:
    """A frozen lpips.LPIPS on CPU, trunk from `load_trunk`, linear layers from the lpips package.

    The package is asked for random parts only (pretrained=False, pnet_rand=True), so it never
    reaches for the internet or calls torch.load itself; both weight sets are then loaded here,
    strictly, so no parameter can stay random.
    """
    if net not in NETS:
        raise ValueError(f"unknown LPIPS backbone {net!r}; expected one of {NETS}")
    trunk = load_trunk(net)  # first, so a missing-weights error comes before any model building
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's `pretrained=` deprecation notice
        model = lpips_pkg.LPIPS(pretrained=False, net=net, version=LINEAR_VERSION, pnet_rand=True, verbose=False)
    # lpips' slices keep torchvision's `features` indices as module names: sliceK.{i}.weight.
    mapped = {name: trunk[f"features.{name.split('.', 1)[1]}"] for name in model.net.state_dict()}
    model.net.load_state_dict(mapped, strict=True)
    lins = torch.load(linear_weights_path(net), map_location="cpu", weights_only=True)
    expected = {f"lin{k}.model.1.weight" for k in range(len(model.lins))}
    if set(lins) != expected:
        raise ValueError(f"{linear_weights_path(net)} has keys {sorted(lins)}, expected {sorted(expected)}")
    # strict=False only because the trunk and scaling buffers are not in this file; keys checked above.
    model.load_state_dict(lins, strict=False)
    return model.eval().requires_grad_(False)


@functools.lru_cache(maxsize=None)
def _model(net: str, device: torch.device, dtype: torch.dtype) -> lpips_pkg.LPIPS:
    return build_lpips(net).to(device=device, dtype=dtype)


#: backbones whose missing weights were already reported by a ``compute_all(..., on_missing="warn")``;
#: remembered like the loaded modules, so a long run warns once rather than once per batch.
MISSING_REPORTED: set[str] = set()


def clear_lpips_cache() -> None:
    """Forget the cached LPIPS modules and reported missing weights (e.g. after changing INVSCORE_CACHE)."""
    _model.cache_clear()
    MISSING_REPORTED.clear()


def lpips(x_hat: Tensor, x: Tensor, net: str = "alex") -> Tensor:
    """LPIPS distance per image (Zhang et al. 2018, eq. 1), inputs in [0, 1].

    d(x, x0) = sum_l 1/(H_l W_l) sum_{h,w} || w_l * (yhat_l_hw - yhat0_l_hw) ||_2^2, where yhat_l are
    the channel-normalised activations of trunk layer l and w_l the v0.1 linear weights. Inputs
    are clipped to [0, 1] and mapped to [-1, 1]; gray images (C = 1) are replicated to 3 channels,
    which is how a gray picture is shown to an RGB network. The module is built once per
    (net, device, dtype) and runs on the input's device. Returns shape (B,).
    """
    x_hat, x = check_pair(x_hat, x)
    if min(x.shape[-2:]) < LPIPS_MIN_SIDE:
        raise ValueError(f"LPIPS needs images of at least {LPIPS_MIN_SIDE}×{LPIPS_MIN_SIDE}, got "
                         f"{tuple(x.shape[-2:])}; upsample both images first or leave LPIPS out")
    if x.shape[1] == 1:
        x_hat, x = x_hat.expand(-1, 3, -1, -1), x.expand(-1, 3, -1, -1)
    model = _model(net, x.device, x.dtype)
    return model(2.0 * x_hat - 1.0, 2.0 * x - 1.0).flatten()
