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


USER_FILE = '''
import torch
from torch import nn
from invscore.priors import NetworkPrior
from invscore.sde import VPSDE


class EpsNet(nn.Module):
    """The exact E[eps | x_t] of N(0, I) data under VP: x_t is N(0, I) too, so eps_hat = sigma(t) x_t."""

    def __init__(self, sde):
        super().__init__()
        self.sde, self.scale = sde, nn.Parameter(torch.ones(()))

    def forward(self, x_t, t):
        return self.scale * self.sde.sigma(t).view(-1, 1, 1, 1) * x_t


def make():
    sde = VPSDE()
    return NetworkPrior(EpsNet(sde), sde, parametrization="eps", data_shape=(1, 16, 16))


def no_shape():
    return lambda x, s: x
'''


def test_a_users_own_network_file_is_a_prior(tmp_path, capsys):
    """--prior py:FILE.py:FACTORY: the user's network, frozen, with its declared SDE and parametrization; the
    exact denoiser of N(0, I) data, x/(1 + σ²), comes back; the CLI runs it; mistakes get one line."""
    f = tmp_path / "mine.py"
    f.write_text(USER_FILE)
    prior, card = load_prior(f"py:{f}:make")
    assert card["name"] == "mine:make" and card["image_size"] == 16 and card["format"] == "py"
    x, s = torch.randn(2, 1, 16, 16, dtype=torch.float64), torch.tensor([0.3, 2.0], dtype=torch.float64)
    torch.testing.assert_close(prior(x, s), x / (1 + s.view(-1, 1, 1, 1) ** 2))
    assert not any(p.requires_grad for p in prior.parameters())  # frozen like every prior
    with pytest.raises(FormatError, match="without a square data_shape"):
        load_prior(f"py:{f}:no_shape")
    with pytest.raises(FormatError, match="has no function 'nope'"):
        load_prior(f"py:{f}:nope")
    with pytest.raises(FormatError, match="expected py:FILE.py:FACTORY"):
        load_prior(f"py:{f}")
    with pytest.raises(FileNotFoundError, match="gone.py' \\(py format\\) does not exist"):
        load_prior(f"py:{tmp_path / 'gone.py'}:make")
    Image.new("L", (16, 16), 90).save(tmp_path / "im.png")
    code = main(["inpaint", "--prior", f"py:{f}:make", "--image", str(tmp_path / "im.png"), "--steps", "2",
                 "--quiet", "--threads", "1", "--out", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["prior"]["name"] == "mine:make"


def test_adm_classifier_spec_reaches_the_loader(tmp_path, capsys):
    """--classifier adm:PATH goes to guided-diffusion's classifier loader: a missing file is named, and a file
    that is not a state dict is refused in one line (no code from it is run)."""
    code = main(["generate", "--class", "1", "--classifier", f"adm:{tmp_path / 'nope.pt'}", "--n", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "nope.pt' (adm format) does not exist" in err and err.count("\n") == 1
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    code = main(["generate", "--class", "1", "--classifier", f"adm:{tmp_path / 'junk.pt'}", "--n", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot load classifier" in err and err.count("\n") == 1
