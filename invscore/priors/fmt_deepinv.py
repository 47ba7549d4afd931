"""Prior format ``deepinv``: deepinv's diffusion networks — by object, by a state-dict file, or by the name of
deepinv's published weights — as invscore priors, with no adapter code.

``deepinv_prior(obj)`` / ``--prior deepinv:NAME|PATH`` take:

- :class:`deepinv.models.NCSNpp` (NCSN++ and DDPM++, Song et al. 2021, in EDM's port; VE, VP and the
  score_sde baselines) and :class:`deepinv.models.ADMUNet` (EDM's ADM, e.g. the class-conditional
  ImageNet-64 model). Both are EDM-preconditioned denoisers ``D(x, σ)`` (Karras et al. 2022, eq. 7 and
  Table 1), which *is* invscore's prior contract: on data in [-1, 1] the network is called with
  ``input_in_minus_one_one=True``; a network trained on [0, 1] (deepinv's ``_was_trained_on_minus_one_one =
  False``) is mapped once, ``D₋₁₁(x, σ) = 2 D₀₁((x + 1)/2, σ/2) − 1``. A class-conditional network
  (``label_dim > 0``) gives a :class:`ConditionalPrior`: unconditional ``denoise`` with an all-zero label
  (the dropped label of Ho & Salimans 2022 training) and ``denoise_given(x, σ, c)`` for
  :class:`~invscore.conditional.ClassifierFreeGuidance`.
- :class:`deepinv.models.DiffUNet` (the ADM / guided-diffusion UNet): the ``adm`` format's adapter.

A PATH is a state dict (``.pt`` read with ``weights_only=True``, or ``.safetensors``); the architecture
is recognised from its keys (``input_blocks.*``: DiffUNet; ``out_conv.*``: ADMUNet; ``dec.*_aux_conv.*``:
NCSNpp) and its hyper-parameters read from the shapes, then checked by strict loading. What a state dict
does not hold — the preconditioning (``precondition_type``, ``pixel_std``) and the training range — is that
of EDM's published checkpoints (``edm``, ``pixel_std = 0.5``, [-1, 1]) unless a JSON card beside the file
(``model.json``) says otherwise. A NAME is one of deepinv's published weights (:data:`PUBLISHED`), found in
torch hub's cache where deepinv puts its downloads; invscore never downloads: a missing one is an error
naming the URL and the path to put it at.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import describe_mismatch, state_dict_mismatch
from .base import Prior, freeze
from .formats import FormatError, register_format

__all__ = ["deepinv_prior", "EDMDenoiserPrior", "ConditionalPrior", "PUBLISHED", "published_path"]

#: deepinv's published diffusion weights: NAME -> (hub folder, file, settings the file does not hold)
_EDM = {"precondition_type": "edm", "pixel_std": 0.5, "data_range": [-1, 1]}
PUBLISHED = {
    "edm-ffhq-64x64-uncond-ve": ("edm", "edm-ffhq-64x64-uncond-ve.pt", _EDM),
    "edm-ffhq-64x64-uncond-vp": ("edm", "edm-ffhq-64x64-uncond-vp.pt", _EDM),
    "edm-cifar10-32x32-uncond-ve": ("edm", "edm-cifar10-32x32-uncond-ve.pt", _EDM),
    "edm-cifar10-32x32-uncond-vp": ("edm", "edm-cifar10-32x32-uncond-vp.pt", _EDM),
    "baseline-ffhq-64x64-uncond-ve": ("edm", "baseline-ffhq-64x64-uncond-ve.pt",
                                      {**_EDM, "precondition_type": "ve-baseline"}),
    "edm-imagenet64-cond": ("edm", "adm-imagenet64-cond.pt", _EDM),
    "diffusion_ffhq_10m": ("diffunet", "diffusion_ffhq_10m.pt", {}),
    "diffusion_openai": ("diffunet", "diffusion_openai.pt", {}),
}
#: the noise levels EDM trains on (Karras et al. 2022, Table 1: σ_min, σ_max), in [-1, 1] units
EDM_SIGMA_RANGE = (0.002, 80.0)
#: the VE baselines of Song et al. 2021 (σ 0.01–50 on [0, 1] data), in [-1, 1] units
BASELINE_SIGMA_RANGE = (0.02, 100.0)


def published_path(name: str) -> Path:
    """Where deepinv's downloader caches published weights ``name``: ``torch.hub.get_dir()/checkpoints/FILE``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / PUBLISHED[name][1]


class EDMDenoiserPrior(Prior):
    """An EDM-preconditioned deepinv denoiser (NCSNpp, ADMUNet) as a frozen prior on [-1, 1] data.

    ``denoise(x, σ) = D(x, σ)`` (Karras et al. 2022, eq. 7), called in the network's own training range
    (see the module docstring); ``sigma_range`` is the range it was trained on."""

    def __init__(self, net: nn.Module, data_shape, sigma_range=EDM_SIGMA_RANGE, label_dim: int = 0):
        super().__init__()
        self.net = freeze(net)
        self.data_shape, self.sigma_range, self.label_dim = tuple(data_shape), tuple(sigma_range), int(label_dim)

    def _labels(self, x, label):
        if not self.label_dim:
            return None
        onehot = torch.zeros(x.shape[0], self.label_dim, device=x.device, dtype=torch.float32)
        if label is None:
            return onehot  # the dropped label: the unconditional model of CFG training
        label = torch.as_tensor(label, device=x.device).long().reshape(-1).expand(x.shape[0])
        if bool((label < 0).any()) or bool((label >= self.label_dim).any()):
            raise ValueError(f"class label out of range: this prior has classes 0..{self.label_dim - 1}")
        return onehot.scatter_(1, label[:, None], 1.0)

    def _call(self, x, sigma, label=None):
        c = self._labels(x, label)
        if getattr(self.net, "_was_trained_on_minus_one_one", False):
            return self.net(x, sigma, class_labels=c, input_in_minus_one_one=True).to(x.dtype)
        u = self.net((x + 1) / 2, sigma / 2, class_labels=c, input_in_minus_one_one=True)
        return (2 * u - 1).to(x.dtype)

    def denoise(self, x, sigma):
        return self._call(x, sigma)


class ConditionalPrior(EDMDenoiserPrior):
    """A class-conditional EDM denoiser: ``denoise`` is unconditional (zero label), ``denoise_given(x, σ, c)``
    the conditional ``D(x, σ, c)``, the pair :class:`~invscore.conditional.ClassifierFreeGuidance` combines
    (Ho & Salimans 2022, eq. 6): ``ClassifierFreeGuidance(prior.denoise_given, c, w)``."""

    def denoise_given(self, x, sigma, label):
        """``D(x, σ, c) ≈ E[x0 | x, c]`` for class ``label`` (an int or a ``(B,)`` tensor)."""
        return self._call(x, sigma, label)


# -- reading a state dict -------------------------------------------------------------------------------
def _resolutions(sd, part="enc"):
    res = []
    for k in sd:
        m = re.match(rf"{part}\.(\d+)x\d+_", k)
        if m and int(m.group(1)) not in res:
            res.append(int(m.group(1)))
    return res


def _edm_config(sd: dict, arch: str) -> dict:
    """Hyper-parameters of an NCSNpp / ADMUNet from its state dict's keys and shapes (checked afterwards by
    strict loading, so a wrong guess is reported, never used)."""
    res = _resolutions(sd)
    if not res:
        raise FormatError(f"no encoder keys 'enc.RxR_*' in this {arch} state dict")
    top, conv = res[0], sd.get(f"enc.{res[0]}x{res[0]}_conv.weight")
    if conv is None:
        raise FormatError(f"missing key enc.{top}x{top}_conv.weight in this {arch} state dict")
    mc = int(conv.shape[0])
    mult = []
    for r in res:
        blocks = sorted({int(m.group(1)) for k in sd for m in [re.match(rf"enc\.{r}x{r}_block(\d+)\.conv1\.weight", k)] if m})
        if blocks:
            mult.append(int(sd[f"enc.{r}x{r}_block{blocks[-1]}.conv1.weight"].shape[0]) // mc)
    nblocks = len({k.split(".")[1] for k in sd if re.match(rf"enc\.{top}x{top}_block\d+\.", k)})
    attn = tuple(r for r in res if any(re.match(rf"enc\.{r}x{r}_block\d+\.qkv\.weight", k) for k in sd))
    out_key = "out_conv.weight" if arch == "ADMUNet" else f"dec.{top}x{top}_aux_conv.weight"
    cfg = dict(img_resolution=top, in_channels=int(conv.shape[1]), model_channels=mc, channel_mult=tuple(mult),
               num_blocks=nblocks, attn_resolutions=attn,
               out_channels=int(sd[out_key].shape[0]) if out_key in sd else int(conv.shape[1]),
               label_dim=int(sd["map_label.weight"].shape[1]) if "map_label.weight" in sd else 0,
               augment_dim=int(sd["map_augment.weight"].shape[1]) if "map_augment.weight" in sd else 0,
               channel_mult_emb=int(sd["map_layer0.weight"].shape[0]) // mc if "map_layer0.weight" in sd else 4)
    if arch == "NCSNpp":
        cfg["model_type"] = "ncsn" if any("_aux_residual." in k for k in sd) else "ddpm"
    return cfg


def _architecture(sd: dict) -> str:
    if "input_blocks.0.0.weight" in sd:
        return "DiffUNet"
    if "out_conv.weight" in sd:
        return "ADMUNet"
    if any(re.match(r"dec\.\d+x\d+_aux_conv\.weight", k) for k in sd):
        return "NCSNpp"
    raise FormatError("this state dict is none of deepinv's diffusion networks: expected DiffUNet "
                      "(input_blocks.*), ADMUNet (out_conv.*) or NCSNpp (dec.RxR_aux_conv.*) keys; got "
                      + ", ".join(list(sd)[:4]))


def _build_edm(arch: str, cfg: dict, settings: dict, sd: dict, source: str) -> nn.Module:
    import deepinv
    cls = getattr(deepinv.models, arch)
    kwargs = dict(cfg, pretrained=None, pixel_std=float(settings.get("pixel_std", 0.5)))
    if arch == "NCSNpp":
        kwargs["precondition_type"] = settings.get("precondition_type", "edm")
    with torch.device("meta"):
        shell = cls(**kwargs)
    problems = state_dict_mismatch(sd, shell.state_dict())
    if any(problems):
        args = ", ".join(f"{k}={v}" for k, v in cfg.items())
        raise FormatError(f"{source} does not load into deepinv.models.{arch}({args}): {describe_mismatch(*problems)}")
    net = cls(**kwargs)
    net.load_state_dict(sd, strict=True)
    net._was_trained_on_minus_one_one = list(settings.get("data_range", [-1, 1])) == [-1, 1]
    return net


def _settings(path: Path, name: str | None) -> dict:
    if name is not None:
        return dict(PUBLISHED[name][2])
    card = path.with_suffix(".json")
    if not card.is_file():
        return dict(_EDM)
    try:
        extra = json.loads(card.read_text())
    except (OSError, ValueError) as exc:
        raise FormatError(f"model card {str(card)!r} is not valid JSON ({exc})") from None
    bad = sorted(set(extra) - {"precondition_type", "pixel_std", "data_range", "sigma_range", "name"})
    if bad or extra.get("data_range", [-1, 1]) not in ([-1, 1], [0, 1]):
        raise FormatError(f"model card {str(card)!r}: keys {bad} unknown or data_range not [-1, 1] / [0, 1]; it "
                          "may set precondition_type, pixel_std, data_range, sigma_range, name")
    return {**_EDM, **extra}


def _from_file(path: Path, device, name: str | None = None):
    from .fmt_adm import adm_from_state_dict, read_state_dict
    sd = read_state_dict(path)
    arch = _architecture(sd)
    if arch == "DiffUNet":
        prior = adm_from_state_dict(sd, path.stem, str(path), device)
        return prior, {**prior.card, "format": "deepinv", "name": name or path.stem}
    settings = _settings(path, name)
    net = _build_edm(arch, _edm_config(sd, arch), settings, sd, repr(str(path)))
    prior, card = _wrap(net, settings)
    card.update(name=settings.get("name", name or path.stem), source=str(path))
    return (prior.to(device) if device is not None else prior), card


def _wrap(net: nn.Module, settings: dict | None = None):
    arch = type(net).__name__
    settings = settings or {}
    baseline = getattr(net, "precondition_type", "edm") == "ve-baseline"
    sigma_range = tuple(settings.get("sigma_range", BASELINE_SIGMA_RANGE if baseline else EDM_SIGMA_RANGE))
    label_dim = int(net.map_label.in_features) if getattr(net, "map_label", None) is not None else 0
    c, r = _shape_of(net)
    cls = ConditionalPrior if label_dim else EDMDenoiserPrior
    prior = cls(net, (c, r, r), sigma_range, label_dim)
    card = {"name": arch, "format": "deepinv", "architecture": f"deepinv.models.{arch}", "channels": c,
            "image_size": r, "data_range": [-1, 1], "sigma_range": list(sigma_range), "label_dim": label_dim,
            "parameters": sum(p.numel() for p in net.parameters()),
            "trained_range": [-1, 1] if net._was_trained_on_minus_one_one else [0, 1]}
    return prior, card


def deepinv_prior(obj, device=None):
    """``(prior, card)`` from a deepinv network object, a state-dict path, or a :data:`PUBLISHED` name.

    A network object is used as it is and frozen; for NCSNpp / ADMUNet its ``_was_trained_on_minus_one_one``
    says its training range (deepinv sets it for its published weights; set it for your own)."""
    if isinstance(obj, nn.Module):
        if type(obj).__name__ == "DiffUNet":
            from .fmt_adm import adm_prior
            prior = adm_prior(obj, device)
            return prior, {**prior.card, "format": "deepinv"}
        if type(obj).__name__ not in ("NCSNpp", "ADMUNet"):
            raise TypeError(f"deepinv_prior takes deepinv's NCSNpp, ADMUNet or DiffUNet, got {type(obj).__name__}; "
                            "wrap another denoiser D(x, sigma) with invscore.priors.CallablePrior")
        prior, card = _wrap(obj)
        return (prior.to(device) if device is not None else prior), card
    spec = str(obj)
    if spec in PUBLISHED:
        path = published_path(spec)
        if not path.is_file():
            from deepinv.models.utils import get_weights_url
            url = get_weights_url(model_name=PUBLISHED[spec][0], file_name=PUBLISHED[spec][1])
            raise FileNotFoundError(f"deepinv:{spec} needs {path.name}, which is not in {path.parent}; invscore "
                                    f"downloads nothing at run time: get it from {url} and put it there (or "
                                    "anywhere, and pass deepinv:PATH)")
        return _from_file(path, device, name=spec)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"deepinv:{spec} is neither a file nor one of deepinv's published weights "
                                f"({', '.join(PUBLISHED)})")
    return _from_file(path, device)


def _shape_of(net: nn.Module) -> tuple[int, int]:
    # deepinv's EDM networks keep their input size in their first conv's name: enc.RxR_conv
    res = _resolutions(dict(net.state_dict()))
    return int(net.enc[f"{res[0]}x{res[0]}_conv"].weight.shape[1]), int(res[0])


register_format("deepinv", "deepinv's NCSNpp (NCSN++/DDPM++, EDM), ADMUNet (EDM's ADM, class-conditional "
                           "ImageNet-64) or DiffUNet: a state-dict file or a published name ("
                           + ", ".join(PUBLISHED) + ")", is_path=False,
                usage="NAME|PATH")(lambda spec, device: deepinv_prior(spec, device))
