"""The command line end to end, on tiny untrained checkpoints (tests never need a shipped prior)."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from invscore import io
from invscore.checkpoint import save_model, shipped
from invscore.cli import main
from invscore.nets import build

FAST = ["--steps", "2", "--n", "2", "--quiet", "threads=1"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Untrained 1- and 3-channel 32×32 denoisers and a 1-channel classifier: fast, and enough to run."""
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    out = {}
    for ch, name, data in ((1, "gray", "fashion_mnist"), (3, "rgb", "emoji")):
        arch = {"name": "unet", "kwargs": {"in_channels": ch, "channels": [8, 8], "num_res_blocks": 1}}
        out[name] = str(save_model(build(arch), d / name, {"arch": arch, "kind": "denoiser", "image_size": 32,
                                                          "channels": ch, "name": name, "data": {"name": data}}))
    arch = {"name": "classifier", "kwargs": {"in_channels": 1, "num_classes": 10, "channels": [8, 8]}}
    out["clf"] = str(save_model(build(arch), d / "clf", {"arch": arch, "kind": "classifier", "image_size": 32,
                                                         "channels": 1}))
    return out


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default run directories land under tmp/outputs
    return tmp_path


def _run(argv, capsys=None):
    code = main([str(a) for a in argv])
    return code, (capsys.readouterr() if capsys else None)


def _check_run(run_dir: Path, n_rows: int) -> dict:
    with Image.open(run_dir / "grid.png") as im:
        assert im.width > 0 and im.height > 0
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert len(rows) == n_rows
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run_dir"] == str(run_dir) and summary["wall_seconds"] > 0
    return summary


@pytest.mark.parametrize("verb, prior, extra", [
    ("inpaint", "gray", ["--mask", "random", "--ratio", "0.5"]),
    ("deblur", "gray", ["--kernel", "motion"]),
    ("superres", "gray", ["--scale", "2", "--method", "ddrm"]),
    ("colorize", "rgb", []),
])
def test_inverse_verbs_write_grid_csv_summary(ckpts, tmp_path, verb, prior, extra):
    out = tmp_path / "run"
    code, _ = _run([verb, "--prior", ckpts[prior], "--out", out, *FAST, *extra])
    assert code == 0
    s = _check_run(out, n_rows=2)
    assert s["task"] == verb and s["steps"] == 2 and s["nfe"] == 2 and s["n_images"] == 2
    assert set(s["metrics"]) >= {"psnr", "ssim", "lpips", "baseline_psnr"}
    row = next(csv.DictReader(open(out / "metrics.csv")))
    assert float(row["psnr"]) > 0 and 0 <= float(row["ssim"]) <= 1
    assert len(list((out / "samples").glob("*.png"))) == 2


def test_generate_with_class_guidance(ckpts, tmp_path):
    out = tmp_path / "gen"
    assert _run(["generate", "--prior", ckpts["gray"], "--class", "3", "--classifier", ckpts["clf"], "--out", out,
                 *FAST]) == (0, None)
    s = _check_run(out, n_rows=2)
    assert s["class"] == 3 and 0 <= s["class_accuracy"] <= 1 and s["nfe"] == 4  # Heun: 2 evaluations a step


def test_override_beats_flag_and_is_recorded(ckpts, tmp_path):
    out = tmp_path / "r"
    assert _run(["inpaint", "--prior", ckpts["gray"], "--out", out, *FAST, "steps=3", "method=ddrm", "samples=2"])[0] == 0
    s = _check_run(out, n_rows=6)  # 2 images × (2 samples + their mean)
    assert (s["steps"], s["nfe"], s["method"]) == (3, 3, "ddrm")
    assert set(s["metrics_posterior_mean"]) == {"psnr", "ssim", "lpips"}
    assert s["config"]["steps"] == 3 and "steps=3" in s["overrides"]


def test_run_dirs_are_never_overwritten_and_sweeps_get_one_each(ckpts, tmp_path, capsys):
    args = ["inpaint", "--prior", ckpts["gray"], "--n", "1", "--quiet", "threads=1"]
    assert _run([*args, "--out", "same", "steps=1"])[0] == 0
    code, cap = _run([*args, "--out", "same", "steps=1"], capsys)
    assert code == 0 and "'same' exists" in cap.err
    assert (tmp_path / "same" / "summary.json").exists() and (tmp_path / "same-1" / "summary.json").exists()
    code, cap = _run([*args, "-m", "method=pigdm,ddrm", "steps=1,2"], capsys)
    assert code == 0
    root = next((tmp_path / "outputs" / "inpaint-sweep").iterdir())
    sweep = json.loads((root / "sweep.json").read_text())
    assert len(sweep) == 4 and len({r["run_dir"] for r in sweep}) == 4
    assert sorted(r["nfe"] for r in sweep) == [1, 1, 2, 2]
    assert str(root.relative_to(tmp_path)) in cap.out


def test_image_file_resize_and_mask_file(ckpts, tmp_path):
    Image.new("RGB", (40, 48), (200, 30, 30)).save(tmp_path / "photo.png")
    mask = Image.new("L", (32, 32), 255)
    mask.paste(0, (8, 8, 24, 24))
    mask.save(tmp_path / "mask.png")
    out = tmp_path / "r"
    assert _run(["inpaint", "--prior", ckpts["gray"], "--image", "photo.png", "--resize", "--mask", "mask.png",
                 "--out", out, *FAST])[0] == 0
    s = _check_run(out, n_rows=1)
    assert s["config"]["operator"]["name"] == "inpaint_file"


def _bad(name, ckpts, tmp_path):
    Image.new("RGB", (40, 48)).save(tmp_path / "big.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    g = ["--prior", ckpts["gray"], "--quiet"]
    return {
        "mask": (["inpaint", *g, "--mask", "star"], "unknown mask 'star'; expected one of center, box, random, half"),
        "kernel": (["deblur", *g, "--kernel", "box"], "unknown kernel 'box'; expected one of gaussian, motion"),
        "method": (["inpaint", *g, "--method", "magic"], "unknown method 'magic'; expected one of auto, daps, ddrm, diffpir, dps"),
        "method_override": (["inpaint", *g, "method=magic"], "Available options in 'method': auto, daps, ddrm"),
        "scale": (["superres", *g, "--scale", "3"], "unsupported scale 3; expected one of 2, 4, 8"),
        "missing": (["inpaint", *g, "--image", "nope.png"], "image file 'nope.png' does not exist"),
        "undecodable": (["inpaint", *g, "--image", "broken.png"], "cannot decode 'broken.png' as an image"),
        "size": (["inpaint", *g, "--image", "big.png"], "is 3×48×40 (channels×height×width) but prior 'gray' "
                                                         "expects 1×32×32; pass --resize"),
        "gray_colorize": (["colorize", *g], "colorize needs an RGB (3-channel) prior"),
        "no_prior": (["inpaint", "--prior", "no_such_prior"], "no prior named 'no_such_prior' is shipped"),
        "sweep": (["inpaint", *g, "steps=1,2"], "add -m (--multirun)"),
        "ratio": (["inpaint", *g, "--mask", "half", "--ratio", "0.3"], "--ratio applies to --mask random"),
        "option": (["inpaint", *g, "+method.options.particles=3"], "method 'auto' does not take ['particles']"),
        "class": (["generate", *g, "--class", "3", "--classifier", str(tmp_path / "none")], "cannot load classifier"),
    }[name]


@pytest.mark.parametrize("name", ["mask", "kernel", "method", "method_override", "scale", "missing", "undecodable",
                                  "size", "gray_colorize", "no_prior", "sweep", "ratio", "option", "class"])
def test_user_errors_exit_2_with_one_line(name, ckpts, tmp_path, capsys):
    argv, expected = _bad(name, ckpts, tmp_path)
    code, cap = _run(argv, capsys)
    assert code == 2
    assert expected in cap.err and cap.err.startswith("invscore: error: ")
    assert cap.err.count("\n") == 1 and "Traceback" not in cap.err
    assert not list(tmp_path.glob("outputs/*/*"))  # a refused run leaves no run directory behind


def test_default_colorize_uses_the_shipped_rgb_prior_or_names_the_fix(tmp_path, capsys):
    out = tmp_path / "c"
    code, cap = _run(["colorize", "--quiet", "--steps", "2", "--n", "1", "--threads", "1", "--out", out], capsys)
    if "emoji" not in shipped():
        assert code == 2 and "needs an RGB prior" in cap.err and "--prior PATH" in cap.err
        return
    assert code == 0, cap.err
    s = _check_run(out, n_rows=1)
    assert s["prior"]["name"] == "emoji" and s["prior"]["shape"] == [3, 32, 32]


def test_missing_lpips_weights_warn_not_crash(ckpts, tmp_path, monkeypatch, capsys):
    from invscore.metrics import clear_lpips_cache
    monkeypatch.setenv("INVSCORE_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    clear_lpips_cache()
    try:
        out = tmp_path / "r"
        code, cap = _run(["inpaint", "--prior", ckpts["gray"], "--out", out, *FAST], capsys)
    finally:
        monkeypatch.undo()
        clear_lpips_cache()
    assert code == 0
    assert "LPIPS unavailable" in cap.err and "python -m invscore.metrics.setup_lpips" in cap.err
    s = _check_run(out, n_rows=2)
    assert s["lpips_available"] is False and s["metrics"]["lpips"] is None
    assert next(csv.DictReader(open(out / "metrics.csv")))["lpips"] == ""


def test_subprocess_list_and_clean_error():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ok = subprocess.run([sys.executable, "-m", "invscore", "list", "methods"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "pigdm" in ok.stdout and "smc" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "invscore", "deblur", "--kernel", "box"], capture_output=True,
                         text=True, env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == "invscore: error: unknown kernel 'box'; expected one of gaussian, motion"


def test_io_roundtrip_and_grid(tmp_path):
    x = torch.rand(3, 8, 6)
    io.save_png(x, tmp_path / "a.png")
    back = io.load_image(tmp_path / "a.png")
    assert back.shape == (3, 8, 6) and (back - x).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.allclose(io.from_data(io.to_data(x)), x)
    g = torch.Generator().manual_seed(0)
    a, b, c = torch.rand(1, 4, 4, generator=g), torch.rand(3, 8, 8, generator=g), torch.rand(3, 2, 2, generator=g)
    grid = io.make_grid([[a, b], [c]], pad=1)
    assert grid.shape == (3, 1 + 2 * 9, 1 + 2 * 9)
    # each tile at the top-left of its 8×8 cell (cells 1 px apart), gray made RGB; the rest is the fill
    filled = torch.zeros_like(grid, dtype=torch.bool)
    for tile, top, left in ((a, 1, 1), (b, 1, 10), (c, 10, 1)):
        h, w = tile.shape[1:]
        assert torch.equal(grid[:, top:top + h, left:left + w], tile.expand(3, -1, -1))
        filled[:, top:top + h, left:left + w] = True
    assert (grid[~filled] == 1.0).all()
    # fit_images: gray <-> RGB (ITU-R 601 luma, as kornia's rgb_to_grayscale) and antialiased resize, which keeps a
    # flat image flat
    rgb = torch.tensor([0.2, 0.6, 0.9])[None, :, None, None].expand(2, 3, 40, 48)
    gray = io.fit_images(rgb, 1, (32, 32))
    assert gray.shape == (2, 1, 32, 32)
    torch.testing.assert_close(gray, torch.full_like(gray, 0.299 * 0.2 + 0.587 * 0.6 + 0.114 * 0.9))
    back = io.fit_images(gray, 3, (16, 24))
    assert back.shape == (2, 3, 16, 24)
    torch.testing.assert_close(back, gray[:, :1, :16, :24].expand(-1, 3, -1, -1))


@pytest.mark.parametrize("argv", [["--help"], ["list", "tasks"], []])
def test_help_and_list_tasks_do_not_import_torch(argv):
    """`--help` should answer at once; importing torch took 4-16 s on a busy machine."""
    code = ("import sys\nfrom invscore.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)" % (argv,))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "False"
    assert "usage" in res.stdout or "inpaint" in res.stdout
