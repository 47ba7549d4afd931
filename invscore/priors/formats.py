"""Checkpoint formats of the field, one registry: ``load_prior("FORMAT:PATH")`` → ``(prior, card)``.

A format is a small adapter registered with :func:`register_format`: it reads a checkpoint without executing
code (safetensors, or ``torch.load(weights_only=True)``), builds the architecture (from a well-kept library
wherever one exists), declares the schedule, time input and parametrization once (a
:class:`~invscore.priors.NetworkPrior`), and returns the prior with a *card*: a dict with at least
``name``, ``channels``, ``image_size`` and ``data_range`` (``[-1, 1]`` for every format of the field).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

__all__ = ["FORMATS", "register_format", "split_spec", "load_prior", "available_formats", "FormatError"]


class FormatError(ValueError):
    """A checkpoint that cannot be read in its declared format; the message says what to do instead."""


#: format name -> (loader(path, device) -> (prior, card), one-line description, whether PATH is a file path,
#: what follows ``NAME:`` as the user writes it)
FORMATS: dict[str, tuple[Callable, str, bool, str]] = {}


def register_format(name: str, description: str, is_path: bool = True, usage: str = "PATH"):
    """Decorator adding ``loader(path: str, device) -> (prior, card)`` as ``--prior NAME:PATH``; with
    ``is_path`` a missing PATH is refused before the loader runs; ``usage`` is how ``list priors`` shows it."""
    def deco(fn):
        if name in FORMATS and FORMATS[name][0] is not fn:
            raise ValueError(f"prior format {name!r} is already registered")
        FORMATS[name] = (fn, description, is_path, usage)
        return fn
    return deco


def available_formats() -> dict[str, tuple[str, str]]:
    """Registered format names -> (``NAME:USAGE`` as the user writes it, description); ``python -m invscore
    list priors`` prints them, sorted by name so the listing does not depend on which module imported first."""
    _load_builtin()
    return {k: (f"{k}:{usage}", d) for k, (_, d, _, usage) in sorted(FORMATS.items())}


def split_spec(spec: str) -> tuple[str | None, str]:
    """``'adm:/p/x.pt'`` → ``('adm', '/p/x.pt')``; a spec without a registered prefix → ``(None, spec)``
    (so Windows drive letters and plain paths are not mistaken for formats)."""
    _load_builtin()
    head, sep, tail = str(spec).partition(":")
    return (head, tail) if sep and head in FORMATS else (None, str(spec))


def load_prior(spec: str, device=None):
    """Load ``FORMAT:PATH`` through its registered adapter; returns ``(prior, card)``. A missing file raises
    FileNotFoundError naming it; a file that is not what the format expects raises :class:`FormatError`."""
    fmt, path = split_spec(spec)
    if fmt is None:
        raise FormatError(f"{spec!r} names no prior format; expected FORMAT:PATH with FORMAT one of "
                          f"{', '.join(sorted(FORMATS)) or 'none'}")
    loader, _, is_path, _ = FORMATS[fmt]
    if is_path and not Path(path).exists():
        raise FileNotFoundError(f"prior file {path!r} ({fmt} format) does not exist")
    return loader(path, device)


def _load_builtin() -> None:
    # the built-in adapters register themselves on import; imported lazily, since some need optional libraries
    import importlib
    for mod in ("adm", "deepinv", "diffusers_unet", "python", "score_sde"):
        try:
            importlib.import_module(f"invscore.priors.fmt_{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"invscore.priors.fmt_{mod}":
                raise
