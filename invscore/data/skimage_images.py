"""scikit-image's bundled colour photographs as evaluation images (evaluation only: no 'train' split).

Every image is centre-cropped to a square and resized with Lanczos antialiasing to `size` (default 32,
the shipped priors' size): (N, 3, size, size) in [0, 1].  Labels: None.  The names are in `NAMES`.
"""
from __future__ import annotations

import torch
from PIL import Image

from ._image import resize_to_tensor, to_square_rgb

NAMES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
         "retina", "colorwheel")


def is_available() -> bool:
    """True when scikit-image is importable (its colour images ship inside the package)."""
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        return False
    return True


def load(split: str = "test", n: int | None = None, size: int = 32):
    """Return (images, None); only split 'test' exists, since these images are for evaluation."""
    if split != "test":
        raise ValueError("'skimage' holds evaluation images only: use split='test'")
    import skimage.data as d
    names = NAMES if n is None else NAMES[:n]
    ims = [resize_to_tensor(to_square_rgb(Image.fromarray(getattr(d, k)()), crop=True), size, 3)
           for k in names]
    return torch.stack(ims), None
