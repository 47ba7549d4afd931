"""Writing a run's outputs: the run directory, per-image metrics, the PNG grid and samples, the summary.

A run directory holds ``grid.png`` (labelled columns: measurement | samples | posterior mean and per-pixel
std when there are several samples | ground truth | A⁺y), ``metrics.csv`` (per image and sample),
``summary.json`` (means, NFE, seconds, resolved config; with several samples per image also the metrics of
their posterior mean, rows ``sample = mean`` in ``metrics.csv``; written last, so a directory is complete exactly when
its summary says ``"complete": true``; a failed or interrupted run's says ``false``), ``config.yaml``,
``samples/*.png``, ``report.html`` (:mod:`invscore.run.report`) and ``batches/`` (one record per finished
batch, which ``evaluate --resume`` reuses).
"""
from __future__ import annotations

import json
import math
import os
from datetime import datetime
from io import BytesIO as _BytesIO
from pathlib import Path

import torch

from .. import io
from .build import UserError

__all__ = ["new_run_dir", "measurement_view", "grid_columns", "score_batch", "write_batch", "read_batch",
           "write_inverse", "write_generated", "FILES"]

#: the files of a run directory, as its summary names them
FILES = {"grid": "grid.png", "metrics": "metrics.csv", "samples": "samples/", "config": "config.yaml",
         "report": "report.html", "batches": "batches/"}
#: the grid shows the per-pixel posterior std times this (clipped to 1), a fixed scale so batches agree
STD_GAIN = 4
_MEANS = ("psnr", "ssim", "lpips", "baseline_psnr", "baseline_ssim")


def new_run_dir(out, task: str, root: str | os.PathLike = "outputs") -> Path:
    """Create and return a new, empty run directory: ``out`` or ``root/task/YYYYmmdd-HHMMSS``; if that
    exists, ``-1``, ``-2``… is appended (an existing run is never overwritten)."""
    base = Path(out) if out else Path(root) / task / datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        for i in range(10_000):
            cand = base if i == 0 else base.with_name(f"{base.name}-{i}")
            try:
                cand.mkdir()  # atomic claim: two runs started in the same second get different names
                return cand
            except FileExistsError:
                continue
    except OSError as exc:  # read-only, no permission, a file where a folder should be
        raise UserError(f"cannot create the run directory {str(base)!r} ({exc.strerror or exc}); pass --out "
                        "a folder you can write to") from None
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


def grid_columns(k: int) -> list[str]:
    """The column labels of an inverse run's grid with ``k`` samples per image (``grid.png``, ``report.html``)."""
    stats = ["posterior mean", f"std x{STD_GAIN}"] if k > 1 else []
    return ["measurement", *(f"sample {j}" for j in range(k)), *stats, "ground truth", "A+y baseline"]


def score_batch(x_hat, x01, y, op, names, lo: int, k: int, grid_rows: int, run_dir: Path) -> dict:
    """Write one batch's sample PNGs, then score its ``k`` samples per image (rows ``lo …`` of the input)
    against the ground truth ``x01`` and the pseudo-inverse baseline A⁺y; returns its metric rows and its
    first grid rows (:func:`grid_columns`). The PNGs come first so that a failing metric cannot cost them.
    Without LPIPS weights, or on images too small for it, the rows say ``lpips: None`` (with a warning).

    With ``k`` > 1 each image also gets a row ``sample = "mean"`` (and ``NNN_mean.png``): the metrics of
    the k samples' mean, a Monte-Carlo posterior-mean (MMSE) estimate, E‖x̄_k − x‖² = (1 + 1/k) MMSE for
    exact samples against 2 MMSE for one sample: higher PSNR, blurrier (higher LPIPS)."""
    from ..metrics import compute_all
    samples = x_hat.view(x01.shape[0], k, *x_hat.shape[1:])
    mean = samples.mean(1) if k > 1 else None
    for i in range(x01.shape[0]):
        for j in range(k):
            io.save_png(samples[i, j], run_dir / "samples" / f"{lo + i:03d}_{j}.png")
        if mean is not None:
            io.save_png(mean[i], run_dir / "samples" / f"{lo + i:03d}_mean.png")
    pinv = io.from_data(op.A_pinv(y)).cpu()
    scored = x_hat if mean is None else torch.cat([x_hat, mean])  # one metric pass (one LPIPS warning)
    truth = x01.repeat_interleave(k, 0) if mean is None else torch.cat([x01.repeat_interleave(k, 0), x01])
    per = compute_all(scored, truth, lpips_nets={"lpips": "alex"}, colour=False, on_missing="warn")
    base = compute_all(pinv, x01, lpips_nets=(), colour=False)
    view = measurement_view(op, y).cpu()
    rows, grid = [], []
    for i in range(x01.shape[0]):
        for j in [*range(k), *(["mean"] if mean is not None else [])]:
            r = x_hat.shape[0] + i if j == "mean" else i * k + j
            rows.append({"image": names[lo + i], "sample": j,
                         **{m: float(per[m][r]) if m in per else None for m in ("psnr", "ssim", "lpips")},
                         "baseline_psnr": float(base["psnr"][i]),
                         "baseline_ssim": float(base["ssim"][i]) if "ssim" in base else None})
        if lo + i < grid_rows:
            # the sample std of the posterior draws, per pixel: where the method is unsure
            stats = [mean[i], (samples[i].std(0) * STD_GAIN).clamp(0, 1)] if k > 1 else []
            grid.append([view[i], *samples[i], *stats, x01[i], pinv[i]])
    return {"rows": rows, "grid": grid}


def _record_paths(run_dir: Path, b: int) -> tuple[Path, Path]:
    return run_dir / "batches" / f"{b:05d}.json", run_dir / "batches" / f"{b:05d}.safetensors"


def write_batch(run_dir: Path, record: dict) -> None:
    """Save a finished batch (its metric rows, costs and grid tiles) under ``batches/``: the JSON is written
    last, so it exists exactly when the batch is finished. JSON keeps every float exactly (repr round-trips)."""
    from safetensors.torch import save_file
    meta, tiles = _record_paths(run_dir, record["batch"])
    grid = {f"{i}_{j}": t.contiguous() for i, row in enumerate(record["grid"]) for j, t in enumerate(row)}
    if grid:
        io.atomic_write(tiles, lambda tmp: save_file(grid, str(tmp)))
    body = {key: v for key, v in record.items() if key != "grid"}
    io.atomic_write_text(meta, json.dumps({**body, "grid_shape": [len(row) for row in record["grid"]]}))


def read_batch(run_dir: Path, b: int) -> dict | None:
    """The record :func:`write_batch` left for batch ``b``, or ``None`` if that batch did not finish."""
    from safetensors.torch import load_file
    meta, tiles = _record_paths(run_dir, b)
    if not meta.is_file():
        return None
    record = json.loads(meta.read_text())
    shape = record.pop("grid_shape")
    if any(shape) and not tiles.is_file():
        return None
    t = load_file(str(tiles)) if any(shape) else {}
    return {**record, "grid": [[t[f"{i}_{j}"] for j in range(n)] for i, n in enumerate(shape)]}


def save_labelled_grid(rows, labels, path: Path, scale: int, pad: int = 2) -> Path:
    """``io.make_grid(rows)`` upscaled ``scale``× with a strip of column ``labels`` above it (Pillow's
    built-in font, so nothing is downloaded), as a PNG."""
    from PIL import Image, ImageDraw, ImageFont
    img = io.to_pil(io.make_grid(rows, pad=pad))
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    tile_w = max(t.shape[-1] for r in rows for t in r)
    col = (tile_w + pad) * scale
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(img)
    lines = []
    for label in labels:  # wrap at spaces to fit a column
        out, cur = [], ""
        for word in label.split():
            trial = f"{cur} {word}".strip()
            if cur and draw.textlength(trial, font=font) > col - 2:
                out.append(cur)
                trial = word
            cur = trial
        lines.append(out + [cur])
    line_h = 12
    strip = Image.new(img.mode, (img.width, line_h * max(len(x) for x in lines) + 4), "white")
    d = ImageDraw.Draw(strip)
    for c, text in enumerate(lines):
        for n, line in enumerate(text):
            x = pad * scale + c * col + max(0, (tile_w * scale - d.textlength(line, font=font)) / 2)
            d.text((x, 2 + n * line_h), line, fill="black", font=font)
    out = Image.new(img.mode, (img.width, img.height + strip.height), "white")
    out.paste(strip, (0, 0))
    out.paste(img, (0, strip.height))
    buf = _BytesIO()
    out.save(buf, format="PNG")
    return io.atomic_write_bytes(path, buf.getvalue())


def write_inverse(done: list[dict], run_dir: Path, grid_scale: int, k: int = 1) -> dict:
    """Merge the batches' rows (in batch order) into ``metrics.csv`` and the labelled ``grid.png``; returns
    the means over the samples (``metrics``) and, with k > 1, over the posterior means
    (``metrics_posterior_mean``)."""
    rows = [r for d in done for r in d["rows"]]
    io.write_csv(run_dir / "metrics.csv", rows)
    save_labelled_grid([g for d in done for g in d["grid"]], grid_columns(k), run_dir / "grid.png", grid_scale)
    draws = [r for r in rows if r["sample"] != "mean"]
    means = [r for r in rows if r["sample"] == "mean"]
    return {"metrics": {m: _mean([r[m] for r in draws]) for m in _MEANS},
            **({"metrics_posterior_mean": {m: _mean([r[m] for r in means]) for m in ("psnr", "ssim", "lpips")}}
               if means else {}),
            "lpips_available": all(r["lpips"] is not None for r in rows)}


def write_generated(x: torch.Tensor, rows: list[dict], run_dir: Path, grid_scale: int) -> None:
    """Write unconditional samples ``x`` (N, C, H, W) in [0, 1]: a grid of 8 per row, the PNGs, the CSV."""
    n, ncol = x.shape[0], min(8, x.shape[0])
    io.save_png(io.make_grid([list(x[i:i + ncol]) for i in range(0, n, ncol)]), run_dir / "grid.png", scale=grid_scale)
    for i in range(n):
        io.save_png(x[i], run_dir / "samples" / f"{i:03d}.png")
    io.write_csv(run_dir / "metrics.csv", rows)
