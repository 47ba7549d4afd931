"""Small image helpers shared by the dataset modules (PIL in, tensors in [0, 1] out)."""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from PIL import Image


def is_test_key(key: str, test_fraction: float = 0.1) -> bool:
    """Deterministic split: a key is held out iff the first 8 hex digits of SHA-1(key) / 16⁸ < fraction.

    Hashing the *name* (not the position) keeps the split fixed when files are added or reordered.
    """
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 16 ** 8 < test_fraction


def to_square_rgb(img: Image.Image, background=(255, 255, 255), crop: bool = False) -> Image.Image:
    """Alpha-composite on `background`, then make square: centre-crop if `crop`, else pad with it."""
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        canvas = Image.new("RGBA", img.size, tuple(background) + (255,))
        img = Image.alpha_composite(canvas, img)
    img = img.convert("RGB")
    w, h = img.size
    s = min(w, h) if crop else max(w, h)
    if crop:
        left, top = (w - s) // 2, (h - s) // 2
        return img.crop((left, top, left + s, top + s))
    sq = Image.new("RGB", (s, s), tuple(background))
    sq.paste(img, ((s - w) // 2, (s - h) // 2))
    return sq


def resize_to_tensor(img: Image.Image, size: int, channels: int = 3) -> torch.Tensor:
    """PIL image → (C, size, size) float tensor in [0, 1], resized with Lanczos (antialiased)."""
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    img = img.convert("L" if channels == 1 else "RGB")
    a = np.asarray(img, dtype=np.float32) / 255.0
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a)).clamp_(0, 1)
