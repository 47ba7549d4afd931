"""Tests for invscore.io's atomic writes, the one mechanism behind every file the library writes."""
from __future__ import annotations

import pytest
import torch

from invscore import checkpoint, io


def test_atomic_write_replaces_whole_files_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    io.atomic_write_bytes(path, b"old")
    io.atomic_write(path, lambda tmp: tmp.write_bytes(b"new"))
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.bin"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.txt"
    io.atomic_write_text(path, "old")

    def half_then_crash(tmp):
        tmp.write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        io.atomic_write(path, half_then_crash)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_resume_state_goes_through_atomic_write(tmp_path):
    path = tmp_path / "state.pt"
    checkpoint.save_state({"step": 3, "w": torch.ones(2)}, path)
    loaded = checkpoint.load_state(path)
    assert loaded["step"] == 3 and torch.equal(loaded["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_write_csv_selects_columns_and_formats_floats(tmp_path):
    rows = [{"a": 1, "b": 0.123456789, "extra": "x"}, {"a": 2, "b": None}]
    path = io.write_csv(tmp_path / "t.csv", rows, fields=["a", "b", "c"], float_format=".3g")
    assert path.read_text() == "a,b,c\n1,0.123,\n2,,\n"
    assert io.write_csv(tmp_path / "u.csv", rows[1:]).read_text() == "a,b\n2,\n"


def test_fit_images_centre_crops_to_the_aspect_ratio_before_resizing():
    """A 48×64 image whose middle 48×48 is white and margins black fits a square prior as all white: the
    margins are cropped, not squeezed in."""
    from invscore.io import center_crop_to_aspect, fit_images
    x = torch.zeros(1, 1, 48, 64)
    x[..., 8:56] = 1
    assert torch.equal(fit_images(x, 1, (32, 32)), torch.ones(1, 1, 32, 32))
    assert center_crop_to_aspect(torch.rand(2, 3, 40, 48), 2.0).shape == (2, 3, 24, 48)
    assert center_crop_to_aspect(torch.rand(2, 3, 40, 48), 1.2).shape == (2, 3, 40, 48)
