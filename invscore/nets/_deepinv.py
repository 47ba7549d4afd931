"""deepinv's EDM networks (NCSN++ of Song et al. 2021; ADM of Dhariwal & Nichol 2021, as re-implemented
in EDM), configured small, behind the same D(x, σ) interface — used for the CPU speed comparison."""
from __future__ import annotations

import torch
from torch import nn

from ..utils import per_sample

SMALL = {
    # Same widths and depth as our compact UNet (32/64/64, 1 block per level, attention at 8×8).
    "deepinv_ncsnpp": dict(channel_mult=(1, 2, 2), num_blocks=1, attn_resolutions=(8,), dropout=0.0),
    "deepinv_admunet": dict(channel_mult=(1, 2, 2), num_blocks=1, attn_resolutions=(8,), dropout=0.0),
}


class DeepinvDenoiser(nn.Module):
    """D(x, σ) from a deepinv EDM network that already applies Karras et al.'s preconditioning
    (Table 1) with pixel_std = σ_data; inputs stay in [-1, 1] (no [0, 1] rescaling)."""

    def __init__(self, net: nn.Module, sigma_data: float):
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma = per_sample(sigma, x)
        return self.net(x, sigma.view(-1, 1, 1, 1), input_in_minus_one_one=True)


def build_deepinv(name: str, kwargs: dict, sigma_data: float) -> nn.Module:
    """Instantiate deepinv.models.NCSNpp / ADMUNet untrained (pretrained=None: nothing is downloaded)."""
    import deepinv

    kw = {**SMALL[name], **kwargs}
    c = kw.pop("in_channels", 1)
    common = dict(in_channels=c, out_channels=c, pretrained=None, pixel_std=sigma_data,
                  _was_trained_on_minus_one_one=False, **kw)
    if name == "deepinv_ncsnpp":
        net = deepinv.models.NCSNpp(model_type="ncsn", precondition_type="edm", **common)
    else:
        net = deepinv.models.ADMUNet(**common)
    return DeepinvDenoiser(net, sigma_data)
