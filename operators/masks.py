"""Inpainting masks: A x = m ⊙ x with a binary mask m (1 = observed pixel, 0 = missing).

SVD form: V = U = I over pixels and s = m (flattened), so the measured spectral coordinates are the
observed pixels and ``replace_measured`` is Song et al. 2021's imputation step (Appendix I.1).
The measurement keeps the image shape, with zeros at missing pixels.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from .svd import SVDOperator

__all__ = ["Mask", "center_box_mask", "box_mask", "random_mask", "half_mask", "mask_from_file"]


def _img_size(img_size) -> tuple[int, int, int]:
    size = tuple(int(s) for s in img_size)
    if len(size) != 3 or any(s <= 0 for s in size):
        raise ValueError(f"expected img_size (C, H, W) of positive ints, got {tuple(img_size)}")
    return size


class Mask(SVDOperator):
    """Masking operator A x = m ⊙ x (inpainting); m shared across channels (shape (H, W) or (1, H, W))
    or per channel (shape (C, H, W)).

    The mask must be binary: a soft mask is not a projection and breaks the SVD form, so values
    other than 0/1 raise ValueError (threshold it yourself, or use ``mask_from_file(threshold=...)``).
    """

    def __init__(self, mask: torch.Tensor, channels: int = 3, noise=None, dtype: torch.dtype | None = None):
        mask = torch.as_tensor(mask)
        if mask.dim() == 2:
            mask = mask.unsqueeze(0)
        if mask.dim() != 3:
            raise ValueError(f"Mask: expected a mask of shape (H, W), (1, H, W) or (C, H, W), got {tuple(mask.shape)}")
        if mask.shape[0] not in (1, channels):
            raise ValueError(f"Mask: expected 1 or {channels} mask channels, got {mask.shape[0]}")
        if not ((mask == 0) | (mask == 1)).all():
            raise ValueError("Mask: expected a binary mask with values in {0, 1}, got non-binary values; "
                             "threshold it first (e.g. (mask > 0.5).float())")
        shape = (channels, mask.shape[1], mask.shape[2])
        super().__init__(shape, shape, noise)
        mask = mask.to(dtype or torch.get_default_dtype())
        self.register_buffer("mask", mask, persistent=False)
        # A same-shape contiguous mask multiplies faster than a broadcast (1, H, W) one.
        self.register_buffer("_full", mask.expand(shape).contiguous(), persistent=False)
        self._register_svd(self._full.flatten())

    # Identity factors: spectral coordinates are the pixels themselves.
    def V_T(self, x):
        return x.flatten(1)

    def V(self, z):
        return z.view(z.shape[0], *self.input_shape)

    def U_T(self, y):
        return y.flatten(1)

    def U(self, z):
        return z.view(z.shape[0], *self.output_shape)

    # Closed forms: A = Aᵀ = A⁺ = AᵀA = A⁺A = diag(m).
    def _A(self, x):
        return x * self._full

    _A_T = _A
    _A_pinv = _A
    _AtA = _A
    _project_measured = _A

    @property
    def observed_fraction(self) -> float:
        """Fraction of observed pixels (reads the mask; not for sampling loops)."""
        return float(self.mask.mean())


#: the defaults of the masks' parameters (their one home; operators.make reads them from here)
CENTER_RATIO = 0.25  # missing area of the centre box: half the side, DPS's 128² box in a 256² image
MISSING_RATIO = 0.7  # missing pixels of the random mask (DPS: 0.7 or 0.92)


def center_box_mask(img_size, box: int | tuple[int, int] | None = None, ratio: float = CENTER_RATIO) -> torch.Tensor:
    """Mask (1, H, W) with a missing box at the centre: ``box`` (side, or (height, width)) if given, else
    the box whose area is the fraction ``ratio`` of the image, sides ⌊√ratio · H⌋ × ⌊√ratio · W⌋ (so the
    default, :data:`CENTER_RATIO`, is H//2 × W//2 on odd sizes too)."""
    _, h, w = _img_size(img_size)
    if box is None:
        if not 0.0 < float(ratio) < 1.0:
            raise ValueError(f"the centre box's area ratio must be in (0, 1), got {ratio}")
        # floor, with a hair of slack so that e.g. √0.36 · 10 = 5.999… still gives 6
        bh, bw = (max(1, math.floor(math.sqrt(float(ratio)) * n + 1e-9)) for n in (h, w))
    else:
        bh, bw = (box, box) if isinstance(box, int) else tuple(box)
    return box_mask(img_size, (h - bh) // 2, (w - bw) // 2, bh, bw)


def box_mask(img_size, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """Mask (1, H, W) with a missing box [top, top+height) × [left, left+width) anywhere in the image."""
    _, h, w = _img_size(img_size)
    if not (0 <= top and 0 <= left and height > 0 and width > 0 and top + height <= h and left + width <= w):
        raise ValueError(f"box_mask: expected a box inside the {h}x{w} image, got top={top}, left={left}, "
                         f"height={height}, width={width}")
    m = torch.ones(1, h, w)
    m[:, top:top + height, left:left + width] = 0
    return m


def random_mask(img_size, missing_ratio: float = MISSING_RATIO, generator: torch.Generator | None = None,
                per_channel: bool = False, seed: int | None = None) -> torch.Tensor:
    """Mask with each pixel missing independently with probability ``missing_ratio`` (DPS uses 0.7 or 0.92).

    Pass a ``generator`` or an integer ``seed``; shape (1, H, W), or (C, H, W) if ``per_channel``.
    """
    c, h, w = _img_size(img_size)
    if not 0.0 <= missing_ratio <= 1.0:
        raise ValueError(f"random_mask: expected missing_ratio in [0, 1], got {missing_ratio}")
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    device = generator.device if generator is not None else "cpu"
    u = torch.rand((c if per_channel else 1, h, w), generator=generator, device=device)
    return (u >= missing_ratio).to(torch.get_default_dtype()).cpu()


def half_mask(img_size, side: str = "right") -> torch.Tensor:
    """Mask (1, H, W) with one half of the image missing: side in {'right', 'left', 'top', 'bottom'}."""
    _, h, w = _img_size(img_size)
    m = torch.ones(1, h, w)
    slices = {"right": (slice(None), slice(w // 2, None)), "left": (slice(None), slice(0, w // 2)),
              "bottom": (slice(h // 2, None), slice(None)), "top": (slice(0, h // 2), slice(None))}
    if side not in slices:
        raise ValueError(f"half_mask: expected side in {sorted(slices)}, got {side!r}")
    m[(slice(None),) + slices[side]] = 0
    return m


def mask_from_file(path, img_size=None, threshold: float = 0.5, invert: bool = False) -> torch.Tensor:
    """Read a mask (1, H, W) from an image file: gray level / 255 > threshold means observed.

    ``img_size`` (C, H, W) resizes with nearest-neighbour; ``invert`` swaps observed and missing (for
    files where white marks the hole).
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"mask file {str(path)!r} does not exist; expected an image file (bright = observed, "
                         "dark = missing)")
    try:
        with Image.open(path) as opened:
            img = opened.convert("L")
    except (OSError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"cannot read mask file {str(path)!r} as an image ({type(exc).__name__}); expected a "
                         "PNG/JPEG mask (bright = observed, dark = missing)") from None
    if img_size is not None:
        _, h, w = _img_size(img_size)
        img = img.resize((w, h), Image.NEAREST)
    m = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(1, img.height, img.width)
    m = (m.to(torch.get_default_dtype()) / 255.0 > threshold).to(torch.get_default_dtype())
    return 1.0 - m if invert else m
