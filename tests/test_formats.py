"""The prior-format registry: ``FORMAT:PATH`` specs, a registered adapter reaching the CLI, and its errors."""
import json

import pytest
import torch
from PIL import Image

from invscore.cli import main
from invscore.priors import CallablePrior
from invscore.priors.formats import FORMATS, FormatError, available_formats, load_prior, register_format, split_spec


@pytest.fixture
def toy_format():
    """A format 'toy': a JSON file {"shift": c} is the exact denoiser of N(c·1, I) on 1×16×16 images."""
    def load(path, device):
        c = float(json.loads(open(path).read())["shift"])
        prior = CallablePrior(lambda x, s: c + (x - c) / (1 + s.view(-1, 1, 1, 1) ** 2), data_shape=(1, 16, 16))
        return prior, {"name": "toy", "channels": 1, "image_size": 16, "data_range": [-1, 1]}
    register_format("toy", "a JSON file naming the mean of a Gaussian (test only)")(load)
    yield load
    FORMATS.pop("toy", None)


def test_specs_split_only_on_registered_formats(toy_format):
    assert split_spec("toy:/a/b.json") == ("toy", "/a/b.json")
    assert split_spec("C:/weights/x.safetensors") == (None, "C:/weights/x.safetensors")
    assert split_spec("fashion_mnist") == (None, "fashion_mnist")
    assert "toy" in available_formats()
    with pytest.raises(ValueError, match="already registered"):
        register_format("toy", "again")(lambda p, d: None)


def test_load_errors_name_the_file_and_the_formats(toy_format, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json' \\(toy format\\) does not exist"):
        load_prior(f"toy:{tmp_path / 'nope.json'}")
    with pytest.raises(FormatError, match="names no prior format; expected FORMAT:PATH with FORMAT one of.*toy"):
        load_prior("zzz:/x")


def test_a_registered_format_runs_through_the_cli(toy_format, tmp_path, capsys):
    """--prior toy:PATH inpaints a user's images: the adapter's card sets the image size and range."""
    (tmp_path / "toy.json").write_text('{"shift": 0.5}')
    Image.new("L", (16, 16), 200).save(tmp_path / "im.png")
    out = tmp_path / "run"
    code = main(["inpaint", "--prior", f"toy:{tmp_path / 'toy.json'}", "--image", str(tmp_path / "im.png"),
                 "--steps", "3", "--quiet", "--threads", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["prior"]["name"] == "toy" and summary["prior"]["shape"] == [1, 16, 16]
    # 16×16 is too small for LPIPS: the finished run keeps its other metrics and says so, once
    assert summary["metrics"]["lpips"] is None and summary["metrics"]["ssim"] is not None
    assert err.count("lpips is not defined for images this small") == 1
    code = main(["inpaint", "--prior", f"toy:{tmp_path / 'missing.json'}", "--image", str(tmp_path / "im.png"),
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "missing.json' (toy format) does not exist" in err and err.count("\n") == 1
    assert torch.get_num_threads() >= 1
