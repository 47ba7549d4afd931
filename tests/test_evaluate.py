"""`python -m invscore evaluate`: many images in batches, sharded over torchrun processes, merged exactly."""
import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from invscore.checkpoint import save_model
from invscore.cli import main
from invscore.nets import build

# 5 images in batches of 2: three batches (2, 2, 1), so two processes get unequal shares (batches 0, 2 and 1).
# --num-images, not --n: torchrun's parser takes --n for an ambiguous abbreviation of its own options
TINY = ["--num-images", "5", "--batch", "2", "--steps", "2", "--method", "pigdm", "--quiet", "--threads", "1"]


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    arch = {"name": "unet", "kwargs": {"in_channels": 1, "channels": [8, 8], "num_res_blocks": 1}}
    return str(save_model(build(arch), d / "gray", {"arch": arch, "kind": "denoiser", "image_size": 32,
                                                    "channels": 1, "name": "gray", "data": {"name": "fashion_mnist"}}))


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
    assert (partial / "config.yaml").exists()
    assert not (partial / "summary.json").exists() and not (partial / "metrics.csv").exists()


def test_evaluate_flags_must_fit_the_task(prior, capsys):
    assert main(["evaluate", "--prior", prior, "--task", "deblur", "--mask", "center"]) == 2
    assert "--mask applies to --task inpaint, not deblur" in capsys.readouterr().err
    assert main(["evaluate", "--prior", prior, "--task", "generate"]) == 2
    assert "expected one of inpaint, colorize, deblur, superres" in capsys.readouterr().err
