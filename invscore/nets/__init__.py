"""Network architectures, rebuilt from a plain JSON-able config (what a model card stores).

`build(config)` turns `{"name": "unet", "kwargs": {...}, "sigma_data": 0.5}` into a module:
"unet" → EDMDenoiser(UNet(**kwargs)), "flow_unet" → FlowDenoiser(UNet(**kwargs)) (a rectified-flow
velocity network served as a denoiser), "consistency_unet" → ConsistencyDenoiser(UNet(**kwargs)) (a
consistency model, kwargs may add "sigma_min"), "classifier" → NoiseConditionalClassifier(**kwargs), "autoencoder" → Autoencoder(**kwargs) (the first stage
of a latent prior),
"deepinv_ncsnpp" / "deepinv_admunet" → deepinv's EDM networks (for the speed comparison only).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from .classifier import MLPClassifier, NoiseConditionalClassifier, classifier_loss, fit_classifier
from .consistency import ConsistencyDenoiser
from .flow import FlowDenoiser, flow_matching_loss
from .unet import EDMDenoiser, UNet, edm_coefficients
from .vae import Autoencoder, vae_loss

__all__ = ["UNet", "EDMDenoiser", "FlowDenoiser", "flow_matching_loss", "ConsistencyDenoiser", "NoiseConditionalClassifier", "MLPClassifier", "classifier_loss", "fit_classifier",
           "Autoencoder", "vae_loss", "edm_coefficients", "build", "ARCHITECTURES"]

ARCHITECTURES = ("unet", "flow_unet", "consistency_unet", "classifier", "autoencoder", "deepinv_ncsnpp", "deepinv_admunet")


def build(config: dict[str, Any]) -> nn.Module:
    """Rebuild a network from its config (see module docstring); raises ValueError on unknown names."""
    name = config.get("name")
    kwargs = dict(config.get("kwargs", {}))
    sigma_data = float(config.get("sigma_data", 0.5))
    if name == "unet":
        return EDMDenoiser(UNet(**kwargs), sigma_data=sigma_data)
    if name == "flow_unet":
        return FlowDenoiser(UNet(**kwargs), sigma_data=sigma_data)
    if name == "consistency_unet":
        return ConsistencyDenoiser(UNet(**kwargs), sigma_data=sigma_data, sigma_min=float(config.get("sigma_min", 0.002)))
    if name == "classifier":
        return NoiseConditionalClassifier(sigma_data=sigma_data, **kwargs)
    if name == "autoencoder":
        return Autoencoder(**kwargs)
    if name in ("deepinv_ncsnpp", "deepinv_admunet"):
        from ._deepinv import build_deepinv
        return build_deepinv(name, kwargs, sigma_data)
    raise ValueError(f"unknown architecture {name!r}; expected one of {ARCHITECTURES}")
