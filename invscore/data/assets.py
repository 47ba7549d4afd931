"""Held-out test images shipped inside the package (invscore/assets/test_images/<prior>/*.png).

They come from each dataset's fixed 'test' split (never seen in training), so default commands can run
without any dataset installed.  Written once by `export_test_images`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent / "assets" / "test_images"


def shipped_test_sets() -> list[str]:
    """Names of the shipped test-image sets (one per shipped prior)."""
    return sorted(p.name for p in ROOT.iterdir() if p.is_dir()) if ROOT.is_dir() else []


def test_images(name: str = "fashion_mnist", n: int | None = None) -> torch.Tensor:
    """Return the shipped held-out images of set `name` as (N, C, H, W) float32 in [0, 1], sorted by file."""
    d = ROOT / name
    files = sorted(d.glob("*.png"))
    if not files:
        raise ValueError(f"no shipped test images named {name!r}; available: {shipped_test_sets()}")
    files = files[:n] if n is not None else files
    arrs = []
    for f in files:
        with Image.open(f) as im:
            a = np.asarray(im, dtype=np.float32) / 255.0
        arrs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(arrs))


def export_test_images(name: str, images: torch.Tensor, labels=None) -> list[Path]:
    """Write (N, C, H, W) images in [0, 1] as lossless 8-bit PNGs `NN[_label].png` under ROOT/name."""
    d = ROOT / name
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for i, x in enumerate(images):
        a = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        img = Image.fromarray(a[0], "L") if a.shape[0] == 1 else Image.fromarray(a.transpose(1, 2, 0), "RGB")
        suffix = "" if labels is None else f"_{int(labels[i])}"
        p = d / f"{i:02d}{suffix}.png"
        img.save(p, optimize=True)
        out.append(p)
    return out
