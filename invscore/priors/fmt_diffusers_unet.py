"""The ``diffusers`` prior format: a pixel-space ``UNet2DModel`` folder and its DDPM-style scheduler config.

``--prior diffusers:DIR`` reads

- ``DIR/config.json`` (a ``UNet2DModel`` config) with its weights ``DIR/diffusion_pytorch_model.safetensors``
  (sharded safetensors too); a pipeline folder (``model_index.json`` with ``unet/`` and ``scheduler/``) works
  as well. Loading never executes code: safetensors, or a ``.bin`` only if ``torch.load(weights_only=True)``
  reads it (a pickle that needs more is refused);
- the scheduler config: ``DIR/scheduler/scheduler_config.json``, ``DIR/scheduler_config.json``, or beside
  the model folder (``DIR/../scheduler/scheduler_config.json``, a pipeline's layout). Its class (any diffusers
  scheduler with a training table, e.g. ``DDPMScheduler``, ``DDIMScheduler``) is built from the config, and its
  own ``alphas_cumprod`` *is* the schedule: the prior's SDE is
  :class:`~invscore.sde.DiscreteVPSDE` ``(scheduler.alphas_cumprod)``, equal to what diffusers trains and
  samples with by construction. The table is cross-checked against invscore's rebuild from ``beta_schedule``
  (``linear``, ``scaled_linear``, ``squaredcos_cap_v2``), ``beta_start``, ``beta_end``,
  ``num_train_timesteps`` or ``trained_betas``.

``prediction_type`` ``epsilon`` / ``v_prediction`` / ``sample`` becomes NetworkPrior's ``'eps'`` / ``'v'`` /
``'x0'``; the network is called as ``unet(x_t, step).sample`` with the (fractional) DDPM step index
``sde.timestep(t)`` (``time_input='step'``; ``'step_nearest'`` snaps to trained steps). A learned-variance
model (``variance_type`` ``learned`` / ``learned_range``, ``out_channels = 2·in_channels``, as improved DDPM)
returns ``[prediction, variance]`` along channels: the first half is the prediction, the variance is
dropped (the samplers here choose their own step variances).

Only unconditional pixel-space ``UNet2DModel`` checkpoints are supported: a class-conditional UNet, a latent
``UNet2DConditionModel`` (Stable Diffusion) or a VE scheduler (``ScoreSdeVeScheduler``) is refused with an
error saying so. This module imports without diffusers; the loader imports it and, if it is missing, says
``pip install -e ".[diffusers]"``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..sde import DiscreteVPSDE
from .base import NetworkPrior
from .formats import FormatError, register_format

__all__ = ["DiffusersUNet", "diffusers_prior", "schedule_from_scheduler", "load_diffusers"]

INSTALL_HINT = 'the diffusers prior format needs the diffusers library: pip install -e ".[diffusers]"'

#: diffusers' prediction_type -> NetworkPrior parametrization
PREDICTION = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
#: diffusers' beta_schedule -> DiscreteVPSDE.schedule kind (the ones invscore rebuilds to cross-check)
BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}

_SAFETENSORS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json")
_BIN = "diffusion_pytorch_model.bin"
_SCHEDULER_CONFIG = "scheduler_config.json"


def _import_diffusers():
    try:
        import diffusers
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return diffusers


class DiffusersUNet(nn.Module):
    """``net(x_t, step) = unet(x_t, step).sample`` for a diffusers ``UNet2DModel``; for a learned-variance
    model (``out_channels = 2·in_channels``) the first ``in_channels`` channels (the mean's prediction)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        cin, cout = int(unet.config.in_channels), int(unet.config.out_channels)
        if cout not in (cin, 2 * cin):
            raise FormatError(f"UNet2DModel has in_channels={cin}, out_channels={cout}; expected out_channels "
                              f"= in_channels, or 2·in_channels for a learned-variance model")
        self.unet, self.in_channels, self.learned_variance = unet, cin, cout == 2 * cin

    def forward(self, x: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        step = torch.as_tensor(step, device=x.device)
        if step.ndim == 0:
            step = step.expand(x.shape[0])
        out = self.unet(x, step).sample
        return out[:, : self.in_channels] if self.learned_variance else out


# -- the schedule ---------------------------------------------------------------------------------------
def _rebuilt_table(config: dict) -> torch.Tensor | None:
    """invscore's own ᾱ table from a scheduler config (float64), or None for a schedule it does not rebuild."""
    if config.get("rescale_betas_zero_snr"):
        return None
    if config.get("trained_betas") is not None:
        return DiscreteVPSDE.from_betas(torch.tensor(config["trained_betas"], dtype=torch.float64)).alphas_cumprod
    kind = BETA_SCHEDULES.get(config.get("beta_schedule", "linear"))
    if kind is None:
        return None
    return DiscreteVPSDE.schedule(kind, int(config.get("num_train_timesteps", 1000)),
                                  float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))).alphas_cumprod


def schedule_from_scheduler(scheduler) -> DiscreteVPSDE:
    """:class:`~invscore.sde.DiscreteVPSDE` of a diffusers scheduler: its own ``alphas_cumprod`` (so the two
    agree exactly), after checking that table against invscore's rebuild of the config's schedule."""
    ac = getattr(scheduler, "alphas_cumprod", None)
    cls = type(scheduler).__name__
    if ac is None:
        raise FormatError(f"{cls} has no alphas_cumprod table: the diffusers format reads DDPM-style (VP) "
                          f"schedulers only (DDPMScheduler, DDIMScheduler, ...)")
    ac = torch.as_tensor(ac).detach().to("cpu", torch.float64)
    config = dict(scheduler.config)
    ref = _rebuilt_table(config)
    if ref is not None:
        if ref.shape != ac.shape:
            raise FormatError(f"{cls}'s alphas_cumprod has {ac.numel()} steps but its config declares "
                              f"{ref.numel()} (num_train_timesteps / trained_betas)")
        err = float(((ac - ref).abs() / ref).max())
        if err > 1e-4:  # float32 cumprod of the scheduler vs float64 here: ~1e-6 when the schedule is the same
            raise FormatError(f"{cls}'s alphas_cumprod differs from the schedule its config declares "
                              f"(beta_schedule={config.get('beta_schedule')!r}; max relative error {err:.2g}); "
                              f"the checkpoint's schedule is not what invscore reads it as")
    try:
        return DiscreteVPSDE(ac)
    except ValueError as exc:
        hint = (" (rescale_betas_zero_snr gives ᾱ = 0 at the last step, which a VP SDE cannot represent)"
                if config.get("rescale_betas_zero_snr") else "")
        raise FormatError(f"{cls}'s schedule is not a VP table: {exc}{hint}") from None


def _schedule_card(scheduler) -> dict:
    c = dict(scheduler.config)
    card = {"class": type(scheduler).__name__, "num_train_timesteps": int(len(scheduler.alphas_cumprod))}
    if c.get("trained_betas") is not None:
        card["beta_schedule"] = "trained_betas"
    else:
        card["beta_schedule"] = c.get("beta_schedule", "linear")
        if card["beta_schedule"] != "squaredcos_cap_v2":
            card.update(beta_start=float(c.get("beta_start", 1e-4)), beta_end=float(c.get("beta_end", 0.02)))
    if c.get("variance_type") is not None:
        card["variance_type"] = c["variance_type"]
    return card


# -- the prior ------------------------------------------------------------------------------------------
def _image_size(unet) -> int:
    s = unet.config.sample_size
    if isinstance(s, (list, tuple)):
        if len(set(s)) != 1:
            raise FormatError(f"UNet2DModel sample_size {list(s)} is not square; invscore priors take S×S images")
        s = s[0]
    if s is None:
        raise FormatError("UNet2DModel config has no sample_size; add it to config.json (the image side)")
    return int(s)


def diffusers_prior(unet_or_dir, scheduler=None, device=None, time_input="step") -> NetworkPrior:
    """A diffusers ``UNet2DModel`` and its scheduler as a frozen :class:`~invscore.priors.NetworkPrior`.

    ``unet_or_dir``: a ``UNet2DModel`` (then ``scheduler``, a diffusers scheduler instance, is required) or a
    folder as read by ``--prior diffusers:DIR`` (then ``scheduler`` may override the folder's). The prior's
    ``sde`` is the scheduler's :class:`~invscore.sde.DiscreteVPSDE`; ``time_input`` is ``'step'`` (fractional
    DDPM step) or ``'step_nearest'`` (snapped to a trained step). The card is ``prior.card``.
    """
    if isinstance(unet_or_dir, (str, Path)):
        prior, _ = load_diffusers(str(unet_or_dir), device, scheduler=scheduler, time_input=time_input)
        return prior
    if scheduler is None:
        raise ValueError("diffusers_prior(unet) needs its scheduler (e.g. DDPMScheduler.from_pretrained(...)), "
                         "whose alphas_cumprod and prediction_type define the prior")
    return _build(unet_or_dir, scheduler, device, time_input, source=None)


def _build(unet, scheduler, device, time_input, source, name=None):
    if type(unet).__name__ != "UNet2DModel":
        raise FormatError(f"expected a diffusers UNet2DModel (unconditional, pixel space), got "
                          f"{type(unet).__name__}")
    if getattr(unet.config, "num_class_embeds", None) or getattr(unet.config, "class_embed_type", None):
        raise FormatError("this UNet2DModel is class-conditional (num_class_embeds / class_embed_type); the "
                          "diffusers format reads unconditional models only")
    pred = scheduler.config.get("prediction_type", "epsilon")
    if pred not in PREDICTION:
        raise FormatError(f"unknown prediction_type {pred!r} in the scheduler config; expected one of "
                          f"{', '.join(PREDICTION)}")
    sde = schedule_from_scheduler(scheduler)
    net = DiffusersUNet(unet)
    size = _image_size(unet)
    shape = (net.in_channels, size, size)
    prior = NetworkPrior(net, sde, parametrization=PREDICTION[pred], time_input=time_input,
                         num_steps=sde.num_steps, data_shape=shape)
    if device is not None:
        prior = prior.to(device)
    prior.card = {
        "name": name or "diffusers-unet",
        "channels": shape[0],
        "image_size": size,
        "data_range": [-1, 1],
        "schedule": _schedule_card(scheduler),
        "prediction_type": pred,
        "parametrization": PREDICTION[pred],
        "learned_variance": net.learned_variance,
        "time_input": time_input,
        "source": source or "diffusers UNet2DModel",
        "format": "diffusers",
    }
    return prior


# -- the folder -----------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FormatError(f"cannot read {path} as JSON: {exc}") from None


def _model_dir(root: Path) -> Path:
    """The folder holding the UNet's config.json: ``root`` itself, or a pipeline's ``root/unet``."""
    if (root / "config.json").is_file():
        return root
    if (root / "unet" / "config.json").is_file():
        return root / "unet"
    raise FormatError(f"{root} is not a diffusers UNet folder: no config.json (a UNet2DModel config beside its "
                      f"diffusion_pytorch_model.safetensors) in it or in {root / 'unet'}")


def _scheduler_config(root: Path, model_dir: Path) -> Path:
    candidates = [root / "scheduler" / _SCHEDULER_CONFIG, root / _SCHEDULER_CONFIG]
    if model_dir != root:
        candidates.append(model_dir / _SCHEDULER_CONFIG)
    candidates.append(model_dir.parent / "scheduler" / _SCHEDULER_CONFIG)
    for c in candidates:
        if c.is_file():
            return c
    raise FormatError(f"{root} has no scheduler config: expected scheduler/{_SCHEDULER_CONFIG} or "
                      f"{_SCHEDULER_CONFIG} beside config.json (betas, prediction_type, num_train_timesteps)")


def _make_scheduler(diffusers, config: dict, path: Path):
    """The scheduler the config names (a diffusers scheduler class), else DDPMScheduler; built from the config."""
    cls_name = config.get("_class_name", "DDPMScheduler")
    cls = getattr(diffusers, cls_name, None) if isinstance(cls_name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        cls = diffusers.DDPMScheduler
    try:
        return cls.from_config(config)
    except Exception as exc:  # a config diffusers itself rejects
        raise FormatError(f"cannot build {cls.__name__} from {path}: {str(exc).splitlines()[0]}") from None


def _load_unet(diffusers, model_dir: Path, config: dict):
    cls_name = config.get("_class_name", "UNet2DModel")
    if cls_name != "UNet2DModel":
        raise FormatError(f"{model_dir / 'config.json'} is a {cls_name}; the diffusers format reads UNet2DModel "
                          f"(unconditional pixel-space) checkpoints only")
    UNet2DModel = diffusers.UNet2DModel
    if any((model_dir / f).is_file() for f in _SAFETENSORS):
        try:
            unet = UNet2DModel.from_pretrained(str(model_dir), use_safetensors=True, local_files_only=True,
                                               low_cpu_mem_usage=False)
        except (OSError, ValueError, RuntimeError) as exc:
            raise FormatError(f"cannot load the UNet2DModel in {model_dir}: {str(exc).splitlines()[0]}") from None
        return unet, model_dir / _SAFETENSORS[0]
    binf = model_dir / _BIN
    if not binf.is_file():
        raise FormatError(f"{model_dir} has config.json but no weights: expected {_SAFETENSORS[0]} "
                          f"(or a {_BIN} that torch.load(weights_only=True) reads)")
    try:
        state = torch.load(binf, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FormatError(f"{binf} is a pickle that torch.load(weights_only=True) refuses ({str(exc).splitlines()[0]}); "
                          f"invscore never executes checkpoint code: convert it to {_SAFETENSORS[0]} with "
                          f"save_pretrained(safe_serialization=True) where you trust it") from None
    try:
        unet = UNet2DModel.from_config({k: v for k, v in config.items()})
        unet.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise FormatError(f"{binf} does not fit its config.json: {str(exc).splitlines()[0]}") from None
    return unet.eval(), binf


def load_diffusers(path: str, device=None, scheduler=None, time_input="step"):
    """Read a diffusers folder (see the module docstring) as ``(prior, card)``."""
    diffusers = _import_diffusers()
    root = Path(path)
    if not root.is_dir():
        raise FormatError(f"{path} is not a folder: the diffusers format reads a UNet2DModel folder "
                          f"(config.json + diffusion_pytorch_model.safetensors + scheduler/{_SCHEDULER_CONFIG})")
    model_dir = _model_dir(root)
    if scheduler is None:
        sched_path = _scheduler_config(root, model_dir)
        scheduler = _make_scheduler(diffusers, _read_json(sched_path), sched_path)
    unet, weights = _load_unet(diffusers, model_dir, _read_json(model_dir / "config.json"))
    prior = _build(unet, scheduler, device, time_input, source=f"diffusers:{weights}", name=root.resolve().name)
    return prior, dict(prior.card)


@register_format("diffusers", "a diffusers UNet2DModel folder (config.json + safetensors) with its "
                              "scheduler/scheduler_config.json (DDPM table, epsilon/v/sample)", usage="DIR")
def _loader(path: str, device):
    return load_diffusers(path, device)
