"""guided-diffusion / ADM noisy classifiers (Dhariwal & Nichol 2021; e.g. ``256x256_classifier.pt``) as invscore
classifiers for :class:`invscore.conditional.ClassifierGuidance`.

``adm_classifier(PATH)`` reads the state dict without executing code (``.safetensors`` or
``torch.load(weights_only=True)``, via :func:`invscore.priors.fmt_adm.read_state_dict`), finds the
guided-diffusion ``create_classifier`` configuration (image size 64, 128, 256 or 512; input channels and number
of classes read from the file) whose keys and shapes match exactly, and loads it strictly into
:class:`invscore.nets.adm_classifier.EncoderUNet`. On no match: a :class:`FormatError` listing the closest
configuration's missing, unexpected and mis-shaped keys.

Time convention. ClassifierGuidance calls ``classifier(x, sigma)`` in VE coordinates (``x = x_t/α``,
``sigma = σ/α``). The ADM classifier was trained on ``x_t = sqrt(ᾱ_i) x_0 + sqrt(1 − ᾱ_i) ε`` of DDPM's linear
1000-step chain (β from 1e-4 to 0.02) with the integer step ``i`` (guided-diffusion's
``rescale_timesteps=False``; under timestep respacing its ``cond_fn`` still receives the original step), on
images in ``[-1, 1]``. :class:`ADMClassifier` therefore maps ``(x, σ)`` to

    ᾱ = 1/(1 + σ²),   x_t = sqrt(ᾱ) · x,   t = sde.timestep(sde.ratio_to_t(σ)),

with ``sde = DiscreteVPSDE.schedule("linear", 1000)``: ``t = i`` exactly at the trained levels
``σ_i = sqrt((1 − ᾱ_i)/ᾱ_i)`` and fractional in between (clamped to [0, 999]), and returns ``net(x_t, t)``.
This holds whatever SDE the sampler uses: only the noise ratio σ/α is shared.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..checkpoint import describe_mismatch, state_dict_mismatch
from ..nets.adm_classifier import CHANNEL_MULT, EncoderUNet, classifier_config
from ..sde import DiscreteVPSDE
from ..utils import per_sample
from .fmt_adm import read_state_dict
from .formats import FormatError

__all__ = ["ADMClassifier", "adm_classifier", "match_classifier_config", "NUM_STEPS"]

NUM_STEPS = 1000


class ADMClassifier(nn.Module):
    """``logits = net(sqrt(ᾱ) x, t(σ))`` for ``x`` in VE coordinates (see the module docstring); frozen.

    ``net``: an :class:`EncoderUNet` (or any ``net(x_t, timesteps)``), ``sde``: the DDPM chain it was trained
    on (default: linear, 1000 steps). Input ``(B, C, H, W)`` in ``[-1, 1]`` at the net's resolution; the net
    runs in its parameters' dtype and the logits come back in ``x``'s."""

    def __init__(self, net: nn.Module, sde: DiscreteVPSDE | None = None):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.sde = sde if sde is not None else DiscreteVPSDE.schedule("linear", NUM_STEPS)
        self.card: dict = {}

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The (fractional) DDPM step index of the noise ratio ``σ = sqrt((1 − ᾱ)/ᾱ)``."""
        return self.sde.timestep(self.sde.ratio_to_t(sigma))

    def _check(self, x: torch.Tensor) -> None:
        size, cin = getattr(self.net, "image_size", None), getattr(self.net, "in_channels", None)
        if x.ndim != 4 or (cin is not None and x.shape[1] != cin) or (
                size is not None and tuple(x.shape[-2:]) != (size, size)):
            raise ValueError(f"the ADM classifier expects images of shape (B, {cin}, {size}, {size}) in [-1, 1], "
                             f"got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        self._check(x)
        sigma = per_sample(sigma, x)
        t = self.timestep(sigma.detach())
        x_t = x * torch.rsqrt(1 + sigma**2).reshape(-1, *([1] * (x.ndim - 1)))  # sqrt(ᾱ) x
        p = next(self.net.parameters(), None)
        dtype = p.dtype if p is not None else x.dtype
        return self.net(x_t.to(dtype), t.to(device=x.device, dtype=torch.float32)).to(x.dtype)


# -- matching a state dict to a configuration ------------------------------------------------------------
def _describe(cfg: dict) -> str:
    return (f"EncoderUNet(image_size={cfg['image_size']}, in_channels={cfg['in_channels']}, "
            f"classes={cfg['out_channels']}, width={cfg['model_channels']}, depth={cfg['num_res_blocks']}, "
            f"channel_mult={tuple(cfg['channel_mult'])}, pool={cfg['pool']!r})")


def _expected(cfg: dict) -> dict[str, torch.Size]:
    with torch.device("meta"):
        net = EncoderUNet(**cfg)
    return {k: v.shape for k, v in net.state_dict().items()}


def _read_io(sd: dict) -> tuple[int, int]:
    w_in, w_out = sd.get("input_blocks.0.0.weight"), sd.get("out.2.c_proj.weight")
    cin = int(w_in.shape[1]) if w_in is not None and w_in.ndim == 4 else 3
    classes = int(w_out.shape[0]) if w_out is not None and w_out.ndim == 3 else 1000
    return cin, classes


def match_classifier_config(sd: dict, source: str = "state dict", config: dict | None = None,
                            image_size: int | None = None) -> dict:
    """The :class:`EncoderUNet` kwargs whose state-dict keys and shapes are exactly those of ``sd``: ``config``
    if given, else guided-diffusion's published configuration at ``image_size`` (default: every size). Raises
    :class:`FormatError` naming the closest configuration's missing, unexpected and mis-shaped keys."""
    if config is not None:
        candidates = [dict(config)]
    else:
        cin, classes = _read_io(sd)
        sizes = [int(image_size)] if image_size is not None else sorted(CHANNEL_MULT, key=lambda s: s != 256)
        candidates = [classifier_config(s, num_classes=classes, in_channels=cin) for s in sizes]
    tried = []
    for cfg in candidates:
        problems = state_dict_mismatch(sd, _expected(cfg))
        if not any(problems):
            return cfg
        tried.append((sum(map(len, problems)), cfg, problems))
    _, cfg, problems = min(tried, key=lambda r: r[0])
    raise FormatError(
        f"{source} does not match an ADM / guided-diffusion noisy classifier (EncoderUNetModel). Closest: "
        f"{_describe(cfg)}, with {describe_mismatch(*problems)}. Configurations tried: " + "; ".join(_describe(c) for _, c, _ in tried)
        + ". Supported: guided-diffusion's create_classifier defaults (width 128, depth 2, attention at 32/16/8, "
          "scale-shift norm, res-block down-sampling, attention pool) at 64, 128, 256 or 512 pixels; pass "
          "config=dict(...) of EncoderUNet arguments for other hyper-parameters.")


def _card(cfg: dict, nparams: int, source: str) -> dict:
    return {"format": "adm_classifier", "source": source, "architecture": _describe(cfg), "parameters": nparams,
            "image_size": cfg["image_size"], "channels": cfg["in_channels"], "classes": cfg["out_channels"],
            "data_range": [-1, 1], "schedule": "linear", "num_steps": NUM_STEPS, "beta_start": 1e-4,
            "beta_end": 0.02, "time_input": "step (t = sde.timestep(sde.ratio_to_t(sigma)); x_t = x/sqrt(1+sigma^2))"}


def adm_classifier(path_or_module, device=None, *, image_size: int | None = None,
                   config: dict | None = None) -> ADMClassifier:
    """An :class:`ADMClassifier` for ClassifierGuidance from a checkpoint path (``.pt`` state dict or
    ``.safetensors``), a state dict, an :class:`EncoderUNet` or an ADMClassifier (returned as it is, moved).

    A path or dict is matched strictly (keys and shapes) against guided-diffusion's classifier configurations
    (``image_size`` narrows the search; ``config`` gives explicit EncoderUNet kwargs) and loaded with
    ``load_state_dict(strict=True)``; the network is frozen. ``classifier.card`` describes it."""
    if isinstance(path_or_module, ADMClassifier):
        return path_or_module.to(device) if device is not None else path_or_module
    if isinstance(path_or_module, nn.Module):
        clf = ADMClassifier(path_or_module)
        clf.card = {"format": "adm_classifier", "source": "module", "architecture": type(path_or_module).__name__,
                    "parameters": sum(p.numel() for p in path_or_module.parameters())}
        return clf.to(device) if device is not None else clf
    if isinstance(path_or_module, dict):
        sd, source = dict(path_or_module), "state dict"
        if not sd or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
            raise FormatError("adm_classifier got a dict that is not a state dict (parameter name -> tensor)")
    else:
        path = Path(path_or_module)
        sd, source = read_state_dict(path), repr(str(path))
    cfg = match_classifier_config(sd, source=source, config=config, image_size=image_size)
    with torch.device("meta"):
        net = EncoderUNet(**cfg)
    net = net.to_empty(device="cpu")
    net.load_state_dict(sd, strict=True)
    nparams = sum(p.numel() for p in net.parameters())
    clf = ADMClassifier(net)
    clf.card = _card(cfg, nparams, source if isinstance(path_or_module, dict) else str(path_or_module))
    return clf.to(device) if device is not None else clf
