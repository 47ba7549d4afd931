"""Image files and run outputs: load/save PNGs, [0, 1] <-> [-1, 1] conversion, PNG grids, atomic writes.

Images are ``(B, C, H, W)`` float tensors; files and metrics use [0, 1], the library's data space is
[-1, 1] (docs/CONVENTIONS.md). Every writer goes through a temporary file and ``os.replace`` so an
interrupted run never leaves a half-written file under the real name.
"""
from __future__ import annotations

import csv
import io as _io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .files import atomic_write, atomic_write_bytes, atomic_write_text

__all__ = ["ImageError", "IMAGE_EXTENSIONS", "to_data", "from_data", "load_image", "load_images", "fit_images",
           "to_pil", "save_png", "make_grid", "atomic_write", "atomic_write_bytes", "atomic_write_text", "write_json",
           "write_csv", "center_crop_to_aspect"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageError(ValueError):
    """An image file is missing, undecodable, or does not fit what was asked of it."""


def to_data(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] image → [-1, 1] data space."""
    return x * 2 - 1


def from_data(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] data space → [0, 1] image, clamped (what an 8-bit PNG of it would show)."""
    return ((x + 1) / 2).clamp(0, 1)


def _pil_to_tensor(img: Image.Image) -> torch.Tensor:
    # Transparent pixels become white, as the datasets composite emoji on white.
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(canvas, img).convert("RGB")
    elif img.mode not in ("L", "RGB"):
        img = img.convert("L" if img.mode in ("1", "I", "I;16", "F") else "RGB")
    a = np.asarray(img, dtype=np.float32) / 255.0
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a))


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read one image file as ``(C, H, W)`` float32 in [0, 1], C = 1 (gray) or 3 (RGB, alpha on white)."""
    p = Path(path)
    if not p.exists():
        raise ImageError(f"image file {str(p)!r} does not exist")
    if p.is_dir():
        raise ImageError(f"{str(p)!r} is a folder; use load_images for folders")
    try:
        with Image.open(p) as img:
            img.load()
            return _pil_to_tensor(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageError(f"cannot decode {str(p)!r} as an image ({exc.__class__.__name__}: {exc}); "
                         f"expected a PNG/JPEG file") from None


def load_images(path: str | os.PathLike, n: int | None = None) -> tuple[list[torch.Tensor], list[str]]:
    """Load a file, or every image of a folder (sorted by name, first ``n``): a list of ``(C, H, W)``
    tensors in [0, 1] (sizes may differ; see :func:`fit_images`) and their file names."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise ImageError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {str(p)!r}")
    else:
        files = [p]
    files = files[:n] if n is not None else files
    return [load_image(f) for f in files], [f.name for f in files]


def fit_images(x: torch.Tensor, channels: int, size: Sequence[int]) -> torch.Tensor:
    """Convert ``(N, C, H, W)`` [0, 1] images to ``channels`` (gray ↔ RGB), centre-crop them to the aspect
    ratio of ``size`` (H, W) — a 640×480 photo keeps its middle 480×480 for a square prior, undistorted —
    and resize to ``size`` with antialiasing (kornia's resize; PIL-equivalent quality for downscaling)."""
    c = x.shape[1]
    if c != channels:
        if channels == 1 and c == 3:
            from kornia.color import rgb_to_grayscale
            x = rgb_to_grayscale(x)
        elif channels == 3 and c == 1:
            x = x.expand(-1, 3, -1, -1)
        else:
            raise ImageError(f"cannot convert {c}-channel images to {channels} channels")
    size = tuple(int(s) for s in size)
    x = center_crop_to_aspect(x, size[1] / size[0])
    if tuple(x.shape[-2:]) != size:
        try:
            from kornia.geometry.transform import resize
            x = resize(x, size, interpolation="bilinear", antialias=True)
        except ImportError:  # kornia is a dependency, but torch alone does the same job
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 1).contiguous()


def center_crop_to_aspect(x: torch.Tensor, aspect: float) -> torch.Tensor:
    """The largest centred crop of ``x`` (..., H, W) whose width/height is ``aspect``."""
    h, w = x.shape[-2:]
    ch, cw = (h, max(1, round(h * aspect))) if w / h > aspect else (max(1, round(w / aspect)), w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top:top + ch, left:left + cw]


def to_pil(x: torch.Tensor) -> Image.Image:
    """One ``(C, H, W)`` [0, 1] image (C = 1 or 3) → 8-bit PIL image."""
    a = (x.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(a[0], "L") if a.shape[0] == 1 else Image.fromarray(a.transpose(1, 2, 0), "RGB")


def save_png(x: torch.Tensor, path: str | os.PathLike, scale: int = 1) -> Path:
    """Save one ``(C, H, W)`` [0, 1] image as a lossless PNG (``scale``: nearest-neighbour upscaling)."""
    img = to_pil(x)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = _io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def make_grid(rows: Iterable[Sequence[torch.Tensor]], pad: int = 2, fill: float = 1.0) -> torch.Tensor:
    """Tile rows of ``(C, H, W)`` [0, 1] images into one ``(C, H', W')`` image, ``pad`` pixels apart.

    Tiles may differ in size and channels (gray tiles become RGB if any tile is RGB); each sits in
    the top-left of a cell as large as the biggest tile, so columns stay aligned.
    """
    rows = [list(r) for r in rows]
    tiles = [t for r in rows for t in r]
    if not tiles:
        raise ValueError("make_grid: no images")
    c = max(t.shape[0] for t in tiles)
    h = max(t.shape[1] for t in tiles)
    w = max(t.shape[2] for t in tiles)
    ncol = max(len(r) for r in rows)
    grid = torch.full((c, pad + len(rows) * (h + pad), pad + ncol * (w + pad)), float(fill))
    for i, r in enumerate(rows):
        for j, t in enumerate(r):
            t = t.detach().float().cpu().clamp(0, 1).expand(c, -1, -1)
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            grid[:, top:top + t.shape[1], left:left + t.shape[2]] = t
    return grid


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomic, indented JSON (non-finite floats become null so every JSON parser reads it)."""
    def clean(v):
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(u) for k, u in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(u) for u in v]
        return v
    return atomic_write_text(path, json.dumps(clean(obj), indent=2, default=str) + "\n")


def write_csv(path: str | os.PathLike, rows: list[dict[str, Any]], fields: Sequence[str] | None = None,
              float_format: str | None = None) -> Path:
    """Atomic CSV. Columns: ``fields`` (other keys left out, missing ones empty) or else the first row's
    keys; ``None`` is written as an empty cell, floats with ``float_format`` (e.g. ``".5g"``) if given."""
    def cell(v):
        if v is None:
            return ""
        return format(v, float_format) if float_format and isinstance(v, float) else v

    buf = _io.StringIO()
    if rows or fields:
        writer = csv.DictWriter(buf, fieldnames=list(fields or rows[0]), lineterminator="\n", restval="",
                                extrasaction="ignore" if fields else "raise")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: cell(v) for k, v in r.items()})
    return atomic_write_text(path, buf.getvalue())
