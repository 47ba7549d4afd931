"""Safe checkpoints: safetensors weights + a JSON model card beside them (`<name>.safetensors` +
`<name>.json`).  Loading never executes code: weights come from safetensors, the architecture is rebuilt
from the card's plain-JSON config by `invscore.nets.build`.  Resume states (`.pt`) are read with
`torch.load(weights_only=True)` only.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .io import atomic_write, atomic_write_bytes, atomic_write_text


def state_dict_mismatch(given, expected) -> tuple[list[str], list[str], list[str]]:
    """How a state dict ``given`` {key: tensor} differs from an architecture's ``expected`` {key: tensor or
    shape}: (missing keys, unexpected keys, 'key (given shape) (expected shape)' for mis-shaped ones), in the
    architecture's key order; three empty lists when it loads strictly."""
    shape = {k: tuple(getattr(v, "shape", v)) for k, v in expected.items()}
    missing = [k for k in shape if k not in given]
    unexpected = [k for k in given if k not in shape]
    misshaped = [f"{k} {tuple(given[k].shape)} (expected {s})" for k, s in shape.items()
                 if k in given and tuple(given[k].shape) != s]
    return missing, unexpected, misshaped


def describe_mismatch(missing, unexpected, misshaped, n: int = 5) -> str:
    """One line naming the first ``n`` of each kind of :func:`state_dict_mismatch` problem."""
    def show(keys):
        more = f", … ({len(keys) - n} more)" if len(keys) > n else ""
        return ", ".join(keys[:n]) + more if keys else "none"
    return (f"{len(missing)} missing key(s): {show(missing)}; {len(unexpected)} unexpected key(s): "
            f"{show(unexpected)}; {len(misshaped)} mis-shaped key(s): {show(misshaped)}")

ASSETS = Path(__file__).resolve().parent / "assets"
NOISE_CONVENTION = "edm-ve-sigma"


def shipped() -> dict[str, Path]:
    """Names of the checkpoints shipped in invscore/assets → their .safetensors paths."""
    if not ASSETS.is_dir():
        return {}
    return {p.stem: p for p in sorted(ASSETS.glob("*.safetensors")) if p.with_suffix(".json").exists()}


def card_path(path: str | os.PathLike) -> Path:
    """The model card that sits beside a .safetensors file."""
    return Path(path).with_suffix(".json")


def save_model(model: nn.Module, path: str | os.PathLike, card: dict[str, Any], half: bool = False) -> Path:
    """Save `model.state_dict()` as safetensors (fp16 if `half`) and `card` as JSON beside it.

    The card must hold `arch` (the config for `invscore.nets.build`), `kind` ('denoiser' or
    'classifier'), `image_size` and `channels`.
    """
    from safetensors.torch import save as st_save

    path = Path(path).with_suffix(".safetensors")
    check_card(card, card_path(path))
    dtype = torch.float16 if half else torch.float32
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in model.state_dict().items()}
    card = {**card, "dtype": str(dtype).replace("torch.", ""), "format": "safetensors"}
    atomic_write_bytes(path, st_save(tensors, metadata={"invscore_kind": str(card["kind"])}))
    atomic_write_text(card_path(path), json.dumps(card, indent=2, default=str) + "\n")
    return path


def _resolve(path_or_name: str | os.PathLike) -> Path:
    names = shipped()
    if isinstance(path_or_name, str) and path_or_name in names:
        return names[path_or_name]
    p = Path(path_or_name)
    if p.suffix != ".safetensors":
        p = p.with_suffix(".safetensors")
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint {p}; shipped names are {sorted(names)} "
                                "or pass the path of a .safetensors file with its .json card beside it")
    return p


def read_card(path_or_name: str | os.PathLike) -> dict[str, Any]:
    """Return the JSON model card of a checkpoint (shipped name or path)."""
    p = card_path(_resolve(path_or_name))
    if not p.exists():
        raise FileNotFoundError(f"model card {p} not found; a checkpoint is a .safetensors file plus "
                                "its .json card (written by invscore.checkpoint.save_model)")
    try:
        card = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"model card {p} is not valid JSON ({exc}); fix the file or re-save the checkpoint "
                         "with invscore.checkpoint.save_model") from None
    return check_card(card, p)


def training_steps(card: dict[str, Any]) -> int | str:
    """Optimiser steps behind a checkpoint: its own run's ``steps`` plus, for a fine-tune, those of the
    checkpoint it was initialised from (the card's ``initialised_from``); ``'?'`` when the card has none."""
    own = card.get("steps")
    if not isinstance(own, int):
        return "?"
    before = (card.get("initialised_from") or {}).get("steps")
    return own + before if isinstance(before, int) else own


def training_seconds(card: dict[str, Any]) -> float | None:
    """Training wall seconds behind a checkpoint, counted as :func:`training_steps` counts steps: its own
    run's ``training_time_s`` plus its ``initialised_from``'s; ``None`` when the card has none."""
    own = card.get("training_time_s")
    if not isinstance(own, (int, float)):
        return None
    before = (card.get("initialised_from") or {}).get("training_time_s")
    return own + before if isinstance(before, (int, float)) else own


#: what a model card must hold (``save_model`` writes them); ``image_size`` and ``channels`` positive integers
CARD_KEYS = ("arch", "kind", "image_size", "channels")


def check_card(card: Any, where: str | os.PathLike = "model card") -> dict[str, Any]:
    """Return ``card`` if it is a model card invscore can rebuild a network from, else raise a ValueError
    naming the missing or malformed entry (the one check of a card, whoever reads it)."""
    if not isinstance(card, dict):
        raise ValueError(f"model card {where} must be a JSON object, got {type(card).__name__}")
    missing = [k for k in CARD_KEYS if k not in card]
    if missing:
        raise ValueError(f"model card {where} lacks {', '.join(map(repr, missing))}; a card needs "
                         f"{', '.join(CARD_KEYS)} (as written by invscore.checkpoint.save_model)")
    for key in ("image_size", "channels"):
        v = card[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"model card {where}: {key!r} must be a positive integer, got {v!r}")
    if not isinstance(card["arch"], dict) or "name" not in card["arch"]:
        raise ValueError(f"model card {where}: 'arch' must be an object with a 'name' (the invscore.nets "
                         f"architecture), got {card['arch']!r}")
    return card


def _load_into(model: nn.Module, path: Path, card: dict[str, Any]) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    where = (f"expected a {card.get('kind')} for {card.get('channels')}-channel "
             f"{card.get('image_size')}×{card.get('image_size')} images")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: not a valid safetensors file ({exc}); {where}. "
                         "Re-export the checkpoint or fetch an intact copy.") from exc
    expected = model.state_dict()
    missing, unexpected, shapes = state_dict_mismatch(tensors, expected)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {missing[:20]}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {unexpected[:20]}")
        if shapes:
            parts.append(f"mis-shaped keys ({len(shapes)}): {shapes[:20]}")
        raise ValueError(f"checkpoint {path} does not match its card's architecture "
                         f"{card.get('arch')}: " + "; ".join(parts) + f". {where}; "
                         "check that the .json card belongs to this .safetensors file.")
    model.load_state_dict({k: t.to(expected[k].dtype) for k, t in tensors.items()})


def _load(path_or_name, kind: str, device) -> nn.Module:
    from .nets import build

    path = _resolve(path_or_name)
    card = read_card(path)
    if card.get("kind") == "autoencoder" and kind == "denoiser":
        users = [n for n in shipped() if read_card(n).get("autoencoder") == path.stem]
        raise ValueError(f"{path.name} is an autoencoder, the first stage of a latent prior, not a prior itself; "
                         f"use the latent prior that names it{' (' + ', '.join(users) + ')' if users else ''}")
    if card.get("kind") != kind:
        raise ValueError(f"{path} holds a {card.get('kind')!r}, not a {kind!r}; "
                         f"use load_{card.get('kind')}() or pick another checkpoint")
    model = build(card["arch"])
    _load_into(model, path, card)
    model.card = card  # plain attribute: callers can read image_size/channels without reopening the JSON
    model.source = path  # where it came from: a latent prior finds its autoencoder beside it
    # CallablePrior(model) reads these, so a hand-wrapped checkpoint is still checked against its card's size
    model.data_shape = (int(card["channels"]), int(card["image_size"]), int(card["image_size"]))
    if "sigma_min" in card and "sigma_max" in card:
        model.sigma_range = (float(card["sigma_min"]), float(card["sigma_max"]))
    model.to(device).eval().requires_grad_(False)
    return model


def load_denoiser(path_or_name: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a frozen denoiser D(x, σ) ≈ E[x0 | x0 + σz] (EDM, Karras et al. 2022 eq. 7) from a
    checkpoint: shipped name (see `shipped()`) or path.  eval mode, parameters with requires_grad False.
    """
    return _load(path_or_name, "denoiser", device)


def load_classifier(path_or_name: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a frozen noise-conditional classifier logits(x, σ) for log p_σ(c | x)
    (Dhariwal & Nichol 2021, sec. 4) from a checkpoint name or path."""
    return _load(path_or_name, "classifier", device)


def load_autoencoder(path_or_name: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a frozen autoencoder (encoder E, decoder 𝒟: :class:`~invscore.nets.Autoencoder`, the first
    stage of latent diffusion, Rombach et al. 2022) from a checkpoint name or path."""
    return _load(path_or_name, "autoencoder", device)


def save_state(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Atomically save a resume state (tensors, numbers, strings only, so weights_only loading works)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Load a resume state with `torch.load(weights_only=True)`: pickled code is refused, with a ValueError
    that says so (torch's own message suggests turning the protection off; invscore never does)."""
    import pickle
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"resume state {path} does not exist; start without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = str(exc).split("Unsupported global:", 1)[-1].split(" was not", 1)[0].replace("GLOBAL", "").strip()
        what = f"a pickled {found}" if "Unsupported global" in str(exc) else "objects other than tensors"
        raise ValueError(f"resume state {path} holds {what}: refused for safety (loading it could run code); "
                         "a state written by invscore.training is a plain dict of tensors, numbers and "
                         "strings, so start without --resume or from one of its own state.pt files") from None
    except Exception as exc:  # torch/struct/zip errors of a file that is not a torch.save archive
        raise ValueError(f"cannot read resume state {path} ({str(exc).splitlines()[0]}); it is not a torch.save "
                         "file, or it is truncated; start without --resume") from None
    if not isinstance(state, dict):
        raise ValueError(f"resume state {path} holds a {type(state).__name__}, not the dict invscore.training "
                         "writes; start without --resume")
    return state
