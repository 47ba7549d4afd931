"""Prior format ``adm``: guided-diffusion / ADM state dicts (Dhariwal & Nichol 2021; e.g. ``ffhq_10m.pt``,
``256x256_diffusion_uncond.pt``), run by deepinv's :class:`deepinv.models.DiffUNet` (the same UNet, same
state-dict key names: ``time_embed.*``, ``input_blocks.*``, ``middle_block.*``, ``output_blocks.*``, ``out.*``).

``load_prior("adm:PATH")`` (or :func:`adm_prior`) does, and executes no code from the file:

1. read ``PATH``: a ``.safetensors`` file, or ``torch.load(map_location="cpu", weights_only=True)``. A pickle
   that needs code to load (a pickled ``nn.Module``, EDM's ``network-snapshot-*.pkl``) is refused with a
   :class:`~invscore.priors.formats.FormatError` saying how to make a plain state dict; a corrupt file gives a
   one-line FormatError. A dict wrapping the state dict (``{"state_dict": ...}``, ``"model"``, ``"ema"``) and
   DataParallel's ``module.`` prefix are unwrapped.
2. find the DiffUNet configuration whose keys and shapes match: ``large_model=False`` (128 channels, 1 res
   block, attention at 16×16: ``ffhq_10m.pt``, DPS/DiffPIR's FFHQ model) or ``large_model=True`` (256
   channels, 2 res blocks, attention at 32, 16, 8: ``256x256_diffusion_uncond.pt``), each with a learned
   variance (``out_channels = 2C``, guided-diffusion's ``learn_sigma=True``) or without (``C`` outputs); the
   input channels C are read from the first convolution. On no match: a FormatError listing the missing,
   unexpected and mis-shaped keys of the closest configuration, and every configuration tried.
3. wrap the network so that its ε half feeds
   ``NetworkPrior(eps_net, DiscreteVPSDE.schedule("linear", 1000), parametrization="eps", time_input="step")``
   on ``(C, 256, 256)`` images in ``[-1, 1]``.

Learned sigma: such a net outputs ``[ε̂, v]`` (Nichol & Dhariwal 2021, eq. 15: v interpolates the log variance
of the reverse step between β_t and β̃_t). invscore's samplers take the reverse variance from the SDE, so
only the first C channels (ε̂) are used and the variance half is discarded.

Time: the network is called as ``net(x_t, t, type_t="timestep")`` (DiffUNet's guided-diffusion mode, which
hands ``t`` unchanged to the sinusoidal embedding), with ``t`` the step index of the SDE's table (integers
0…999 at the trained steps, fractional in between; guided-diffusion's default ``rescale_timesteps=False``).
"""
from __future__ import annotations

import pickle
import pickletools
import warnings
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import describe_mismatch, state_dict_mismatch
from ..sde import DiscreteVPSDE
from .base import NetworkPrior
from .formats import FormatError, register_format

__all__ = ["adm_prior", "ADMEps", "read_object", "read_state_dict", "match_config", "ADM_CONFIGS"]

#: buffers deepinv's DiffUNet derives from its own (the same linear) schedule: not part of an ADM state dict
_DERIVED = ("sqrt_1m_alphas_cumprod", "sqrt_alphas_cumprod")

#: DiffUNet's two configurations (deepinv.models.DiffUNet's ``large_model``) and what they are
ADM_CONFIGS = {
    False: "128 channels, 1 res block, attention at 16x16 (e.g. ffhq_10m.pt)",
    True: "256 channels, 2 res blocks, attention at 32/16/8 (e.g. 256x256_diffusion_uncond.pt)",
}

IMAGE_SIZE = 256
NUM_STEPS = 1000

_HOW_TO = ("load it once in the environment that made it and save the weights alone: "
           "`torch.save(model.state_dict(), 'model.pt')` (or `safetensors.torch.save_file(model.state_dict(), "
           "'model.safetensors')`), then pass that file")


# -- reading ------------------------------------------------------------------------------------------
def _pickle_globals(path: Path, limit: int = 3) -> list[str] | None:
    """The classes/functions a plain pickle file would import (opcodes parsed, nothing executed); ``None``
    if the file is not a parseable pickle."""
    found: list[str] = []
    try:
        with open(path, "rb") as fh:
            if fh.read(1) != b"\x80":  # PROTO: every pickle of protocol >= 2 starts with it
                return None
            fh.seek(0)
            strings: list[str] = []
            for op, arg, _ in pickletools.genops(fh):
                if op.name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL":
                    found.append(".".join(strings[-2:]) if len(strings) >= 2 else "?")
                elif isinstance(arg, str):
                    strings.append(arg)
                if len(found) >= limit:
                    break
            return found
    except Exception:  # noqa: BLE001 - a truncated or garbled pickle: report what was found so far, if anything
        return found or None


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def _needs_code(path: Path, err: Exception, names=None) -> FormatError:
    msg = str(err)
    names = list(names or [])
    if not names and "Unsupported global" in msg:
        names = [msg.split("Unsupported global: GLOBAL ", 1)[-1].split(" ", 1)[0]]
    return FormatError(
        f"{str(path)!r} is not a plain state dict: it is a pickle that needs code to load"
        + (f" ({', '.join(names)})" if names else "")
        + " (a pickled nn.Module, or an EDM-style network-snapshot .pkl); invscore never executes code from a "
        f"checkpoint. To use it, {_HOW_TO}")


def read_object(path, what: str = "checkpoint"):
    """The object a checkpoint file holds, read without executing code: a ``.safetensors`` file's tensor dict,
    or ``torch.load(map_location="cpu", weights_only=True)``. Raises FileNotFoundError naming ``what`` for a
    missing file and :class:`FormatError` (one line) for a pickle that needs code or a corrupt/foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    if _is_safetensors(path):
        try:
            from safetensors.torch import load_file
            return load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001
            raise FormatError(f"cannot read {str(path)!r} as a safetensors file ({type(exc).__name__}: "
                              f"{_first_line(exc)})") from None
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing a foreign pickle
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        names = None if "Unsupported global" in str(exc) else _pickle_globals(path)
        if "Unsupported global" in str(exc) or names:
            raise _needs_code(path, exc, names) from None
        why = _weights_only_reason(exc)
    except Exception as exc:  # noqa: BLE001 - zip/stream errors of a truncated or foreign file
        why = f"{type(exc).__name__}: {_first_line(exc)}"
    raise FormatError(f"cannot read {str(path)!r} as a {what}: not a PyTorch checkpoint nor a safetensors file, "
                      f"or the file is corrupt ({why})") from None


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """Read a state dict with :func:`read_object`; unwraps ``{"state_dict"|"model"|"ema"|"net": {...}}`` and a
    DataParallel ``module.`` prefix."""
    return _unwrap(read_object(path, "ADM checkpoint"), Path(path))


def _first_line(exc: Exception) -> str:
    s = str(exc).strip().splitlines()
    return s[0].split(". ")[0][:200] if s else "no message"


def _weights_only_reason(exc: Exception) -> str:
    msg = str(exc)
    if "WeightsUnpickler error:" in msg:
        return msg.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0][:200]
    return _first_line(exc)


def _unwrap(sd, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(sd, dict) and not any(torch.is_tensor(v) for v in sd.values()):
        for key in ("state_dict", "model", "ema", "net", "model_state_dict"):
            if isinstance(sd.get(key), dict):
                sd = sd[key]
                break
    if not isinstance(sd, dict) or not sd or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
        what = type(sd).__name__ if not isinstance(sd, dict) else f"dict with keys {list(sd)[:5]}"
        raise FormatError(f"{str(path)!r} holds a {what}, not a state dict (a dict of parameter name -> tensor); "
                          f"{_HOW_TO}")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


# -- the architecture -----------------------------------------------------------------------------------
def _describe(large: bool, cin: int, cout: int) -> str:
    return (f"deepinv.models.DiffUNet(in_channels={cin}, out_channels={cout}, large_model={large}) "
            f"[{ADM_CONFIGS[large]}]")


def _build(large: bool, cin: int, cout: int, device="meta") -> nn.Module:
    """DiffUNet for ``cin`` channels and ``cout`` outputs (``cout = cin``: the final conv replaced, since
    DiffUNet turns out_channels=3 into 6). On ``meta`` by default: shapes only, no memory, no init."""
    from deepinv.models import DiffUNet
    with torch.device(device):
        net = DiffUNet(in_channels=cin, out_channels=2 * cin, large_model=large, pretrained=None)
        if cout != net.out_channels:
            old = net.out[2]
            net.out[2] = nn.Conv2d(old.in_channels, cout, 3, padding=1)
            net.out_channels = cout
    return net


def _expected(large: bool, cin: int, cout: int) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in _build(large, cin, cout).state_dict().items() if k not in _DERIVED}


def _compare(sd: dict, expected: dict):
    return state_dict_mismatch({k: v for k, v in sd.items() if k not in _DERIVED}, expected)


def _channels(sd: dict) -> tuple[int, int]:
    w_in, w_out = sd.get("input_blocks.0.0.weight"), sd.get("out.2.weight")
    cin = int(w_in.shape[1]) if w_in is not None and w_in.ndim == 4 else 3
    cout = int(w_out.shape[0]) if w_out is not None and w_out.ndim == 4 and int(w_out.shape[0]) == cin else 2 * cin
    return cin, cout


def match_config(sd: dict, source: str = "state dict") -> tuple[bool, int, int]:
    """The DiffUNet configuration ``(large_model, in_channels, out_channels)`` whose keys and shapes are those
    of ``sd``; raises :class:`FormatError` naming the closest one's missing, unexpected and mis-shaped keys."""
    cin, cout_guess = _channels(sd)
    tried = []
    for large in (False, True):
        for cout in dict.fromkeys((cout_guess, 2 * cin, cin)):
            problems = _compare(sd, _expected(large, cin, cout))
            if not any(problems):
                return large, cin, cout
            tried.append((sum(map(len, problems)), large, cout, problems))
    n, large, cout, problems = min(tried, key=lambda r: r[0])
    raise FormatError(
        f"{source} does not match an ADM / guided-diffusion UNet. Closest: {_describe(large, cin, cout)}, with "
        f"{describe_mismatch(*problems)}. Architectures tried: "
        + "; ".join(_describe(lg, cin, co) for _, lg, co, _ in tried)
        + ". Only DiffUNet's two 256x256 configurations are supported (other guided-diffusion "
          "hyper-parameters, e.g. class-conditional or 64x64 models, are not).")


class ADMEps(nn.Module):
    """ε-prediction of an ADM UNet: ``net(x, t, type_t="timestep")``, with ``t`` (the step index) passed
    unchanged, keeping the first ``channels`` outputs (ε̂) when the net also outputs a learned variance."""

    def __init__(self, net: nn.Module, channels: int = 3):
        super().__init__()
        self.net, self.channels = net, int(channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.numel() == 1:
            t = t.reshape(1).expand(x.shape[0])
        out = self.net(x, t.reshape(-1), type_t="timestep")
        return out[:, : self.channels] if out.shape[1] == 2 * self.channels else out


def _wrap(net: nn.Module, cin: int, device) -> NetworkPrior:
    if device is not None:
        net = net.to(device)
    sde = DiscreteVPSDE.schedule("linear", num_steps=NUM_STEPS)
    return NetworkPrior(ADMEps(net, cin), sde, parametrization="eps", time_input="step",
                        num_steps=NUM_STEPS, data_shape=(cin, IMAGE_SIZE, IMAGE_SIZE))


def _card(name, large, cin, cout, nparams, source) -> dict:
    return {
        "name": name, "format": "adm", "source": source,
        "architecture": _describe(large, cin, cout), "parameters": nparams,
        "channels": cin, "image_size": IMAGE_SIZE, "data_range": [-1, 1],
        "schedule": "linear", "num_steps": NUM_STEPS, "beta_start": 1e-4, "beta_end": 0.02,
        "parametrization": "eps", "time_input": "step",
        "learned_sigma": cout == 2 * cin,
        "notes": ("learned sigma: only the eps half of the output is used (the variance half, Nichol & Dhariwal "
                  "2021, is not: invscore's samplers take the reverse variance from the SDE)")
        if cout == 2 * cin else "fixed variance: the net outputs eps only",
    }


def adm_prior(net_or_path, device=None) -> NetworkPrior:
    """An ADM prior from a checkpoint path or from a :class:`deepinv.models.DiffUNet`; its card is ``prior.card``.

    A path is read without executing code and matched against DiffUNet's configurations (see the module
    docstring); a DiffUNet (or any module with its ``forward(x, t, type_t="timestep")``) is used as it is,
    and frozen. The prior's denoiser is ``D(x, σ)`` on ``(C, 256, 256)`` images in ``[-1, 1]``."""
    if isinstance(net_or_path, nn.Module):
        net = net_or_path
        cin = int(getattr(net, "in_channels", 3))
        cout = int(getattr(net, "out_channels", 2 * cin))
        large = int(getattr(net, "model_channels", 128)) == 256
        nparams = sum(p.numel() for p in net.parameters())
        return _carded(_wrap(net, cin, device), _card(type(net).__name__, large, cin, cout, nparams, "module"))
    path = Path(net_or_path)
    return adm_from_state_dict(read_state_dict(path), path.stem, str(path), device)


def adm_from_state_dict(sd: dict, name: str, source: str, device=None) -> NetworkPrior:
    """:func:`adm_prior` of a state dict already read (by :func:`read_state_dict`) from ``source``."""
    large, cin, cout = match_config(sd, source=repr(source))
    net = _build(large, cin, cout).to_empty(device="cpu")
    sd = {k: v for k, v in sd.items() if k not in _DERIVED}
    result = net.load_state_dict(sd, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) <= set(_DERIVED), result
    sqrt_1m, sqrt_ac = net.get_alpha_prod()[-2:]  # the derived buffers, recomputed (to_empty left them unset)
    net.sqrt_1m_alphas_cumprod.copy_(sqrt_1m)
    net.sqrt_alphas_cumprod.copy_(sqrt_ac)
    nparams = sum(p.numel() for p in net.parameters())
    return _carded(_wrap(net, cin, device), _card(name, large, cin, cout, nparams, source))


def _carded(prior: NetworkPrior, card: dict) -> NetworkPrior:
    prior.card = card
    return prior


@register_format("adm", "guided-diffusion / ADM UNet state dict (.pt or .safetensors; e.g. ffhq_10m.pt, "
                        "256x256_diffusion_uncond.pt) via deepinv's DiffUNet; linear 1000-step DDPM schedule, eps")
def _loader(path: str, device):
    prior = adm_prior(path, device)
    return prior, prior.card
