"""Fashion-MNIST (Xiao et al. 2017) from Debian's `dataset-fashion-mnist` idx files.

Split (fixed, documented): 'train' = the official 60,000 training images, 'test' = the official 10,000
test images; training never reads 'test'.  Images are padded 28→32 with the background value 0
(−1 in data space), so every tensor is (N, 1, 32, 32) in [0, 1].  Labels: int64 class ids 0–9.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def _read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (LeCun's MNIST format: magic, dims as big-endian int32, then uint8 data)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(tuple(int(d) for d in dims))


def _find_dir() -> Path | None:
    for d in (os.environ.get("INVSCORE_FASHION_MNIST_DIR"), DEBIAN_DIR):
        if d and all((Path(d) / f).exists() for pair in _FILES.values() for f in pair):
            return Path(d)
    return None


def is_available() -> bool:
    """True when the idx files are on disk (no network needed)."""
    return _find_dir() is not None


def _torchvision_fallback(split: str):
    # Only reached when the Debian files are absent: torchvision downloads if the network allows.
    from torchvision.datasets import FashionMNIST
    root = Path(os.environ.get("INVSCORE_CACHE", Path.home() / ".cache" / "invscore"))
    try:
        ds = FashionMNIST(root, train=(split == "train"), download=True)
    except Exception as exc:  # noqa: BLE001 - any network failure ends in the same advice
        raise FileNotFoundError(
            f"Fashion-MNIST idx files not found in {DEBIAN_DIR} and the download failed ({exc}); "
            "install them with `apt-get install dataset-fashion-mnist` "
            "or set INVSCORE_FASHION_MNIST_DIR to a folder holding the four *-ubyte.gz files") from exc
    return ds.data.numpy(), ds.targets.numpy()


def load(split: str = "train", n: int | None = None, pad: bool = True):
    """Return (images, labels): images (N, 1, 32, 32) float32 in [0, 1] (28×28 if pad=False)."""
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    d = _find_dir()
    if d is None:
        imgs, labels = _torchvision_fallback(split)
    else:
        imgs, labels = (_read_idx(d / f) for f in _FILES[split])
    if n is not None:
        imgs, labels = imgs[:n], labels[:n]
    x = torch.from_numpy(np.array(imgs, copy=True)).float().div_(255.0).unsqueeze(1)
    if pad:
        x = torch.nn.functional.pad(x, (2, 2, 2, 2), value=0.0)
    return x, torch.from_numpy(np.asarray(labels, dtype=np.int64))
