"""Prior format ``py``: a user's own network from their own Python file, ``--prior py:FILE.py:FACTORY``.

``FACTORY()`` (a function of no arguments in ``FILE.py``) returns a :class:`~invscore.priors.Prior` that
knows its ``data_shape`` (e.g. a :class:`~invscore.priors.NetworkPrior` around the user's network, which
declares its SDE, parametrization and time input once), or ``(prior, card)`` with a card dict. This runs the
user's file — code they wrote and chose to pass, unlike a checkpoint, which invscore never lets run code —
so every verb, ``evaluate``, torchrun and the experiments take a network invscore has no architecture for.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from .base import Prior, as_prior
from .formats import FormatError, register_format

__all__ = ["python_prior"]


def _factory(spec: str):
    path, sep, name = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not name.isidentifier():
        raise FormatError(f"expected py:FILE.py:FACTORY (a function of no arguments returning a Prior), got "
                          f"py:{spec}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"prior file {path!r} (py format) does not exist")
    mod_spec = importlib.util.spec_from_file_location(f"invscore_user_prior_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise FormatError(f"{path!r} has no function {name!r}; define `def {name}(): return NetworkPrior(...)`")
    return fn, Path(path)


def python_prior(spec: str, device=None):
    """``(prior, card)`` from ``FILE.py:FACTORY`` (see the module docstring); the card is the factory's, or
    built from the prior's ``data_shape``, which must be ``(C, H, W)`` with H = W."""
    fn, path = _factory(spec)
    out = fn()
    prior, card = out if isinstance(out, tuple) else (out, {})
    if not isinstance(prior, Prior):
        prior = as_prior(prior)
    shape = getattr(prior, "data_shape", None)
    if shape is None or len(shape) != 3 or shape[1] != shape[2]:
        raise FormatError(f"{path.name}:{fn.__name__}() returned a prior without a square data_shape (C, H, H) "
                          f"(got {shape}); pass data_shape=(C, H, H) to NetworkPrior or CallablePrior")
    card = {"name": f"{path.stem}:{fn.__name__}", "channels": int(shape[0]), "image_size": int(shape[1]),
            "data_range": [-1, 1], "format": "py", "source": str(path), **card}
    return (prior.to(device) if device is not None else prior), card


register_format("py", "your own network: FILE.py:FACTORY, a function returning a Prior with its data_shape "
                      "(runs your file)", is_path=False, usage="FILE.py:FACTORY")(lambda spec, device: python_prior(spec, device))
