"""`python -m invscore evaluate`: many images in batches, sharded over torchrun processes, merged exactly."""
import csv
import json
import os
import subprocess
import sys

import pytest

from invscore.cli import main

# 5 images in batches of 2: three batches (2, 2, 1), so two processes get unequal shares (batches 0, 2 and 1).
# --num-images, not --n: torchrun's parser takes --n for an ambiguous abbreviation of its own options
TINY = ["--num-images", "5", "--batch", "2", "--steps", "2", "--method", "pigdm", "--quiet", "--threads", "1"]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _read(run_dir):
    return list(csv.DictReader(open(run_dir / "metrics.csv"))), json.loads((run_dir / "summary.json").read_text())


def test_two_torchrun_processes_merge_to_the_single_process_metrics(prior, tmp_path):
    args = ["evaluate", "--prior", prior, *TINY, "--mask", "random"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "invscore", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("evaluate inpaint: 5 image(s) on 2 processes") == 1  # rank 0 alone reports
    rows1, s1 = _read(tmp_path / "one")
    rows2, s2 = _read(tmp_path / "two")
    assert [r["image"] for r in rows1] == [f"fashion_mnist_{i:03d}" for i in range(5)]
    assert rows1 == rows2  # every metric, as written (repr of the float), bit for bit
    assert s1["metrics"] == s2["metrics"] and s1["metrics"]["psnr"] > 0
    assert (s1["processes"], s2["processes"], s1["nfe"], s2["nfe"]) == (1, 2, 2, 2)
    assert s1["complete"] is s2["complete"] is True and s2["verb"] == "evaluate" and s2["task"] == "inpaint"
    assert len(list((tmp_path / "two" / "samples").glob("*.png"))) == 5
    assert not list((tmp_path / "two").glob(".*.tmp"))


def test_rerun_never_overwrites_and_interrupted_run_is_visibly_incomplete(prior, tmp_path, monkeypatch, capsys):
    args = ["evaluate", "--prior", prior, *TINY, "--task", "deblur", "--n", "2", "--batch", "1", "--steps", "1",
            "--out", "same"]
    assert main(args) == 0
    assert main(args) == 0
    assert "'same' exists; writing to 'same-1'" in capsys.readouterr().err
    assert _read(tmp_path / "same")[1]["complete"] and _read(tmp_path / "same-1")[1]["complete"]
    assert _read(tmp_path / "same")[0] == _read(tmp_path / "same-1")[0]  # same seed, same numbers

    import invscore.conditional
    real, calls = invscore.conditional.solve, []

    def interrupted(*a, **k):  # Ctrl-C during the second batch
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(invscore.conditional, "solve", interrupted)
    assert main(args) == 130
    partial = tmp_path / "same-2"
    assert (partial / "config.yaml").exists() and not (partial / "metrics.csv").exists()
    summary = json.loads((partial / "summary.json").read_text())
    assert summary["complete"] is False and summary["error"] == "interrupted" and summary["finished_batches"] == 1
    assert "--resume same-2" in summary["resume"]
    assert (partial / "samples" / "000_0.png").exists()  # the finished batch's samples stay


def test_resume_continues_an_interrupted_run_to_the_uninterrupted_files(prior, tmp_path, monkeypatch, capsys):
    args = ["evaluate", "--prior", prior, *TINY, "--samples", "2"]
    assert main([*args, "--out", "full"]) == 0
    import invscore.conditional
    real, calls = invscore.conditional.solve, []

    def interrupted(*a, **k):  # Ctrl-C during the second of three batches
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(invscore.conditional, "solve", interrupted)
    assert main([*args, "--out", "part"]) == 130
    monkeypatch.setattr(invscore.conditional, "solve", lambda *a, **k: calls.append(1) or real(*a, **k))
    calls.clear()
    assert main([*args, "--steps", "3", "--resume", "part"]) == 2  # not the run's command: refused, untouched
    assert "sets steps=3 but the run used steps=2" in capsys.readouterr().err
    assert main([*args, "--resume", "part"]) == 0
    assert len(calls) == 2  # batches 1 and 2 only; batch 0 was finished
    files = ["metrics.csv", "grid.png", *(f"samples/{i:03d}_{j}.png" for i in range(5) for j in range(2))]
    assert all((tmp_path / "full" / f).read_bytes() == (tmp_path / "part" / f).read_bytes() for f in files)
    (_, s1), (_, s2) = _read(tmp_path / "full"), _read(tmp_path / "part")
    assert s1["metrics"] == s2["metrics"] and s2["complete"] is True and s2["resumed_batches"] == 1
    assert (tmp_path / "part" / "report.html").exists()
    assert main([*args, "--resume", "part"]) == 2
    assert "that run is complete; nothing to resume" in capsys.readouterr().err
    assert main([*args, "--resume", "nowhere"]) == 2
    assert "no run there (config.yaml missing)" in capsys.readouterr().err


def test_evaluate_flags_must_fit_the_task(prior, capsys):
    assert main(["evaluate", "--prior", prior, "--task", "deblur", "--mask", "center"]) == 2
    assert "--mask applies to --task inpaint, not deblur" in capsys.readouterr().err
    assert main(["evaluate", "--prior", prior, "--task", "generate"]) == 2
    assert "expected one of inpaint, colorize, deblur, superres" in capsys.readouterr().err


def test_a_failing_metric_keeps_the_samples_and_marks_the_run_incomplete(prior, tmp_path, monkeypatch):
    import invscore.metrics
    real, calls = invscore.metrics.compute_all, []

    def failing(*a, **k):  # the metrics of the second batch fail (a bug, not a user's mistake)
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("metric exploded")
        return real(*a, **k)
    monkeypatch.setattr(invscore.metrics, "compute_all", failing)
    with pytest.raises(RuntimeError, match="metric exploded"):
        main(["evaluate", "--prior", prior, *TINY, "--out", "broken"])
    summary = json.loads((tmp_path / "broken" / "summary.json").read_text())
    assert summary["complete"] is False and summary["error"] == "RuntimeError: metric exploded"
    assert summary["finished_batches"] == 1
    kept = sorted(p.name for p in (tmp_path / "broken" / "samples").glob("*.png"))
    assert kept == [f"{i:03d}_0.png" for i in range(4)]  # batch 1's samples were written before its metrics
    monkeypatch.setattr(invscore.metrics, "compute_all", real)
    assert main(["evaluate", "--prior", prior, *TINY, "--resume", "broken"]) == 0
    assert _read(tmp_path / "broken")[1]["complete"] is True


def test_several_samples_are_also_scored_as_their_posterior_mean(tmp_path):
    """With k samples per image, each image gets a row ``sample = mean``: the metrics of the k samples' mean
    (here PSNR 20 log10(1 / 0.025) = 32.04 dB for samples off by +0.1 and -0.05), its PNG, and its own summary."""
    import math
    import torch
    import operators
    from invscore.run.outputs import score_batch, write_inverse
    x01 = torch.full((2, 1, 32, 32), 0.5)
    x_hat = torch.stack([x01 + 0.1, x01 - 0.05], 1).flatten(0, 1)  # image i's samples at rows 2i, 2i + 1
    op = operators.make("inpaint_center", img_size=(1, 32, 32), noise=0.05)
    y = op.A(x01 * 2 - 1)
    out = score_batch(x_hat, x01, y, op, ["a", "b"], 0, 2, 2, tmp_path)
    rows = {(r["image"], r["sample"]): r for r in out["rows"]}
    assert set(rows) == {(i, j) for i in "ab" for j in (0, 1, "mean")}
    for i in "ab":
        assert rows[i, 0]["psnr"] == pytest.approx(20.0, abs=1e-3) and rows[i, 1]["psnr"] == pytest.approx(26.02, abs=1e-2)
        assert rows[i, "mean"]["psnr"] == pytest.approx(20 * math.log10(1 / 0.025), abs=1e-2)
    assert (tmp_path / "samples" / "001_mean.png").is_file()
    s = write_inverse([out], tmp_path, grid_scale=1, k=2)
    assert s["metrics"]["psnr"] == pytest.approx(23.01, abs=1e-2)  # the samples' mean PSNR, not the mean's
    assert s["metrics_posterior_mean"]["psnr"] == pytest.approx(32.04, abs=1e-2)
