"""Any folder of PNG/JPEG images (searched recursively), as `invscore.data.load('folder:/path', split)`.

Images are composited on white, centre-cropped square and resized (Lanczos) to `size`:
(N, channels, size, size) in [0, 1]; labels None.  Split (fixed): a file is 'test' iff SHA-1 of its
path relative to the folder falls in the lowest 10 % (`_image.is_test_key`); pass split='all' for every
image, e.g. a folder of evaluation images.
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from ._image import is_test_key, resize_to_tensor, to_square_rgb

EXTENSIONS = (".png", ".jpg", ".jpeg")


def load_folder(path: str | Path, split: str = "all", n: int | None = None, size: int = 32,
                channels: int = 3):
    """Return (images, None) for the folder's files of `split` ('train', 'test' or 'all'), sorted by name."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS)
    if split != "all":
        files = [p for p in files if is_test_key(p.relative_to(root).as_posix()) == (split == "test")]
    files = files[:n] if n is not None else files
    if not files:
        raise ValueError(f"no {'/'.join(EXTENSIONS)} images for split {split!r} in {root}")
    ims = []
    for p in files:
        with Image.open(p) as im:
            ims.append(resize_to_tensor(to_square_rgb(im, crop=True), size, channels))
    return torch.stack(ims), None
