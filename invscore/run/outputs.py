"""Writing a run's outputs: the run directory, per-image metrics, the PNG grid and samples, the summary.

A run directory holds ``grid.png`` (measurement | samples | ground truth per row), ``metrics.csv`` (per
image and sample), ``summary.json`` (means, NFE, seconds, resolved config; written last, so a directory is
complete exactly when its summary says ``"complete": true``), ``config.yaml`` and ``samples/*.png``.
"""
from __future__ import annotations

import math
import os
from datetime import datetime
from pathlib import Path

import torch

from .. import io
from .build import UserError

__all__ = ["new_run_dir", "measurement_view", "score_batch", "write_inverse", "write_generated", "FILES"]

#: the files of a run directory, as its summary names them
FILES = {"grid": "grid.png", "metrics": "metrics.csv", "samples": "samples/", "config": "config.yaml"}
_MEANS = ("psnr", "ssim", "lpips", "baseline_psnr", "baseline_ssim")


def new_run_dir(out, task: str, root: str | os.PathLike = "outputs") -> Path:
    """Create and return a new, empty run directory: ``out`` or ``root/task/YYYYmmdd-HHMMSS``; if that
    exists, ``-1``, ``-2``… is appended (an existing run is never overwritten)."""
    base = Path(out) if out else Path(root) / task / datetime.now().strftime("%Y%m%d-%H%M%S")
    base.parent.mkdir(parents=True, exist_ok=True)
    for i in range(10_000):
        cand = base if i == 0 else base.with_name(f"{base.name}-{i}")
        try:
            cand.mkdir()  # atomic claim: two runs started in the same second get different names
            return cand
        except FileExistsError:
            continue
    raise UserError(f"cannot find a free run directory name next to {base}")


def measurement_view(op, y: torch.Tensor) -> torch.Tensor:
    """What the grid shows for a measurement, in [0, 1]: y itself when it has image layout of the
    same height and width (masks, blur, gray), else A⁺y (super-resolution and other shape changes)."""
    if y.ndim == 4 and tuple(y.shape[-2:]) == tuple(op.input_shape[-2:]):
        return io.from_data(y)
    return io.from_data(op.A_pinv(y))


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def score_batch(x_hat, x01, y, op, names, lo: int, k: int, grid_rows: int, run_dir: Path) -> dict:
    """Score one batch of ``k`` samples per image (rows ``lo …`` of the input) against the ground truth
    ``x01`` and the pseudo-inverse baseline A⁺y, and write its sample PNGs; returns its metric rows and
    its first grid rows. Without LPIPS weights the rows say ``lpips: None`` (and one warning says how to
    install them)."""
    from ..metrics import compute_all
    per = compute_all(x_hat, x01.repeat_interleave(k, 0), lpips_nets={"lpips": "alex"}, colour=False,
                      on_missing="warn")
    base = compute_all(io.from_data(op.A_pinv(y)).cpu(), x01, lpips_nets=(), colour=False)
    samples = x_hat.view(x01.shape[0], k, *x_hat.shape[1:])
    view = measurement_view(op, y).cpu()
    rows, grid = [], []
    for i in range(x01.shape[0]):
        for j in range(k):
            r = i * k + j
            rows.append({"image": names[lo + i], "sample": j,
                         **{m: float(per[m][r]) if m in per else None for m in ("psnr", "ssim", "lpips")},
                         "baseline_psnr": float(base["psnr"][i]),
                         "baseline_ssim": float(base["ssim"][i]) if "ssim" in base else None})
            io.save_png(samples[i, j], run_dir / "samples" / f"{lo + i:03d}_{j}.png")
        if lo + i < grid_rows:
            grid.append([view[i], *samples[i], x01[i]])
    return {"rows": rows, "grid": grid}


def write_inverse(done: list[dict], run_dir: Path, grid_scale: int) -> dict:
    """Merge the batches' rows (in batch order) into ``metrics.csv`` and ``grid.png``; returns the means."""
    rows = [r for d in done for r in d["rows"]]
    io.write_csv(run_dir / "metrics.csv", rows)
    io.save_png(io.make_grid([g for d in done for g in d["grid"]]), run_dir / "grid.png", scale=grid_scale)
    return {"metrics": {m: _mean([r[m] for r in rows]) for m in _MEANS},
            "lpips_available": all(r["lpips"] is not None for r in rows)}


def write_generated(x: torch.Tensor, rows: list[dict], run_dir: Path, grid_scale: int) -> None:
    """Write unconditional samples ``x`` (N, C, H, W) in [0, 1]: a grid of 8 per row, the PNGs, the CSV."""
    n, ncol = x.shape[0], min(8, x.shape[0])
    io.save_png(io.make_grid([list(x[i:i + ncol]) for i in range(0, n, ncol)]), run_dir / "grid.png", scale=grid_scale)
    for i in range(n):
        io.save_png(x[i], run_dir / "samples" / f"{i:03d}.png")
    io.write_csv(run_dir / "metrics.csv", rows)
