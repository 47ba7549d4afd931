"""deepinv's diffusion networks as priors (issue 13): NCSNpp (NCSN++ / DDPM++), ADMUNet (class-conditional,
for classifier-free guidance) and DiffUNet, by object, by state-dict file and by published name; invscore's
denoiser must equal what deepinv itself computes. Small random networks, CPU."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

deepinv = pytest.importorskip("deepinv")

import operators  # noqa: E402
from invscore import CallablePrior  # noqa: E402
from invscore.conditional import ClassifierFreeGuidance, solve  # noqa: E402
from invscore.priors.formats import FormatError, load_prior  # noqa: E402
from invscore.priors.fmt_deepinv import ConditionalPrior, EDMDenoiserPrior, deepinv_prior  # noqa: E402

SIGMAS = [0.01, 0.3, 2.0, 40.0]
SMALL = dict(img_resolution=16, model_channels=32, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(8,),
             pretrained=None)


def _randomise(net):
    # EDM's networks zero-initialise their output layers: give every parameter weights so outputs depend on them
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return net.eval()


def _ncsnpp(model_type="ncsn", **kw):
    return _randomise(deepinv.models.NCSNpp(model_type=model_type, **{**SMALL, **kw}))


def _admunet(label_dim=10):
    return _randomise(deepinv.models.ADMUNet(**{**SMALL, "label_dim": label_dim}))


def _inputs(c=3, n=len(SIGMAS)):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, c, 16, 16, generator=g) * 2 - 1, torch.tensor(SIGMAS)


@pytest.mark.parametrize("model_type", ["ncsn", "ddpm"])
def test_ncsnpp_file_equals_deepinv_on_its_own_scale(tmp_path, model_type):
    # a state dict file: EDM's settings (pixel_std 0.5, trained on [-1, 1]); deepinv's own [0, 1] call maps the
    # range itself, so D(x, σ) on [-1, 1] must be 2 D_dinv((x + 1)/2, σ/2) - 1
    net = _ncsnpp(model_type)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    prior, card = load_prior(f"deepinv:{tmp_path / 'net.pt'}")
    assert isinstance(prior, EDMDenoiserPrior) and card["image_size"] == 16 and card["channels"] == 3
    ref = deepinv.models.NCSNpp(model_type=model_type, pixel_std=0.5, **SMALL)
    ref.load_state_dict(net.state_dict())
    ref._was_trained_on_minus_one_one = True
    x, s = _inputs()
    with torch.no_grad():
        want = 2 * ref.eval()((x + 1) / 2, s / 2) - 1
        got = prior.denoise(x, s)
    assert (got - want).abs().max() < 1e-5
    assert not any(p.requires_grad for p in prior.parameters())


def test_ncsnpp_object_keeps_its_own_range_and_preconditioning():
    net = _ncsnpp()  # deepinv's default: trained on [0, 1], pixel_std 0.75
    prior, card = deepinv_prior(net)
    assert card["trained_range"] == [0, 1]
    x, s = _inputs()
    with torch.no_grad():
        assert (prior.denoise(x, s) - (2 * net((x + 1) / 2, s / 2) - 1)).abs().max() < 1e-6
    net._was_trained_on_minus_one_one = True
    with torch.no_grad():
        assert (prior.denoise(x, s) - net(x, s, input_in_minus_one_one=True)).abs().max() < 1e-6


def test_card_beside_the_file_sets_what_the_state_dict_cannot(tmp_path):
    net = _ncsnpp()
    torch.save(net.state_dict(), tmp_path / "net.pt")
    (tmp_path / "net.json").write_text(json.dumps({"pixel_std": 0.75, "data_range": [0, 1], "name": "mine"}))
    prior, card = load_prior(f"deepinv:{tmp_path / 'net.pt'}")
    x, s = _inputs()
    with torch.no_grad():
        assert (prior.denoise(x, s) - (2 * net((x + 1) / 2, s / 2) - 1)).abs().max() < 1e-5
    assert card["name"] == "mine" and card["trained_range"] == [0, 1]
    (tmp_path / "net.json").write_text(json.dumps({"pixel_sd": 0.75}))
    with pytest.raises(FormatError, match="pixel_sd"):
        load_prior(f"deepinv:{tmp_path / 'net.pt'}")


def test_admunet_is_a_conditional_prior_for_classifier_free_guidance(tmp_path):
    net = _admunet()
    torch.save(net.state_dict(), tmp_path / "adm.pt")
    prior, card = load_prior(f"deepinv:{tmp_path / 'adm.pt'}")
    assert isinstance(prior, ConditionalPrior) and card["label_dim"] == 10
    x, s = _inputs()
    ref = deepinv.models.ADMUNet(pixel_std=0.5, **{**SMALL, "label_dim": 10})
    ref.load_state_dict(net.state_dict())
    onehot = torch.nn.functional.one_hot(torch.tensor([3, 3, 3, 3]), 10).float()
    with torch.no_grad():
        assert (prior.denoise_given(x, s, 3) - ref.eval()(x, s, class_labels=onehot,
                                                          input_in_minus_one_one=True)).abs().max() < 1e-5
        uncond = ref(x, s, class_labels=torch.zeros(4, 10), input_in_minus_one_one=True)
        assert (prior.denoise(x, s) - uncond).abs().max() < 1e-5
        assert (prior.denoise_given(x, s, 3) - prior.denoise(x, s)).abs().max() > 1e-3  # the label matters
    with pytest.raises(ValueError, match="0..9"):
        prior.denoise_given(x, s, 10)
    # CFG with a real network: w = 1 is the conditional model, at one extra NFE per step
    op = operators.make("inpaint_center", img_size=(3, 16, 16), noise=0.05)
    y = op.measure(torch.zeros(1, 3, 16, 16), generator=torch.Generator().manual_seed(0))
    res = solve(prior, op, y, method="pigdm", steps=3, generator=torch.Generator().manual_seed(0),
                guidance=[ClassifierFreeGuidance(prior.denoise_given, 3, weight=1.0)])
    assert torch.isfinite(res.x).all() and res.nfe == 6


def test_diffunet_object_and_file_go_through_the_adm_adapter(tmp_path):
    from invscore.priors.fmt_adm import adm_prior
    net = deepinv.models.DiffUNet(in_channels=3, out_channels=6, large_model=False, pretrained=None)
    prior, card = deepinv_prior(net)
    assert card["format"] == "deepinv" and prior.data_shape == (3, 256, 256)
    assert type(prior) is type(adm_prior(net))


def test_published_name_is_found_in_the_hub_cache_or_named_with_its_url(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"huggingface\.co/deepinv/edm/.*edm-cifar10-32x32-uncond-ve"):
        load_prior("deepinv:edm-cifar10-32x32-uncond-ve")
    (tmp_path / "checkpoints").mkdir()
    net = _ncsnpp()
    torch.save(net.state_dict(), tmp_path / "checkpoints" / "edm-cifar10-32x32-uncond-ve.pt")
    prior, card = load_prior("deepinv:edm-cifar10-32x32-uncond-ve")
    assert card["name"] == "edm-cifar10-32x32-uncond-ve" and card["sigma_range"] == [0.002, 80.0]


def test_bad_files_get_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a file nor one of deepinv's published"):
        load_prior("deepinv:nope.pt")
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(FormatError, match="none of deepinv's diffusion networks"):
        load_prior(f"deepinv:{tmp_path / 'other.pt'}")
    sd = _ncsnpp().state_dict()
    sd["enc.16x16_block0.conv0.weight"] = torch.zeros(7, 32, 3, 3)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(FormatError, match="mis-shaped key.*enc.16x16_block0.conv0.weight"):
        load_prior(f"deepinv:{tmp_path / 'bad.pt'}")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(FormatError):
        load_prior(f"deepinv:{tmp_path / 'junk.pt'}")
    with pytest.raises(TypeError, match="NCSNpp, ADMUNet or DiffUNet"):
        deepinv_prior(torch.nn.Conv2d(3, 3, 1))


# -- 4b: a user's own network -----------------------------------------------------------------------------
def test_a_network_inside_a_lambda_is_frozen():
    net = torch.nn.Conv2d(1, 1, 3, padding=1).train()
    CallablePrior(lambda x, s: net(x))
    assert not net.training and not any(p.requires_grad for p in net.parameters())


def test_solve_warns_without_data_shape_and_beyond_the_trained_sigma_range():
    op = operators.make("inpaint_center", img_size=(1, 8, 8), noise=0.05)
    y = op.measure(torch.zeros(1, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="no data_shape"):
        solve(CallablePrior(lambda x, s: x / (1 + s[:, None, None, None] ** 2)), op, y, method="ddrm", steps=2)
    shaped = CallablePrior(lambda x, s: x / (1 + s[:, None, None, None] ** 2), data_shape=(1, 8, 8),
                           sigma_range=(0.002, 1.0))
    with pytest.warns(UserWarning, match="trained up to sigma 1"):  # ΠGDM starts at T (DDRM at 2 x data scale)
        solve(shaped, op, y, method="pigdm", steps=2)
    wide = CallablePrior(shaped.fn, data_shape=(1, 8, 8), sigma_range=(0.002, 80.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default VP SDE (sigma up to ~152) within 2 x 80: no warning
        solve(wide, op, y, method="pigdm", steps=2)


def test_a_prior_returning_the_wrong_thing_is_named():
    op = operators.make("inpaint_center", img_size=(1, 8, 8), noise=0.05)
    y = op.measure(torch.zeros(1, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    for bad, what in [(lambda x, s: None, "NoneType"), (lambda x, s: x[:, :, :4], r"shape \(1, 1, 4, 8\)")]:
        with pytest.raises(TypeError, match=f"prior CallablePrior.*returned {what}"):
            solve(CallablePrior(bad, data_shape=(1, 8, 8)), op, y, method="ddrm", steps=2)


def test_backward_passes_are_counted_not_declared():
    op = operators.make("inpaint_center", img_size=(1, 8, 8), noise=0.05)
    y = op.measure(torch.zeros(1, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    prior = CallablePrior(lambda x, s: x / (1 + s[:, None, None, None] ** 2), data_shape=(1, 8, 8))
    assert solve(prior, op, y, method="dps", steps=3).vjp == 3
    assert solve(prior, op, y, method="ddrm", steps=3).vjp == 0
    assert solve(prior, op, y, method="mmps", steps=3, cg_iters=2).vjp == 3 * 2  # cg_iters backward passes per step


def test_evaluate_runs_a_deepinv_checkpoint(tmp_path, monkeypatch, capsys):
    # every verb takes a format prior through one loader; evaluate on the Fashion-MNIST test split at 32x32
    import json as _json
    from invscore.cli import main
    monkeypatch.chdir(tmp_path)
    net = _randomise(deepinv.models.NCSNpp(**{**SMALL, "img_resolution": 32, "in_channels": 1, "out_channels": 1}))
    torch.save(net.state_dict(), tmp_path / "gray.pt")
    code = main(["evaluate", "--prior", f"deepinv:{tmp_path / 'gray.pt'}", "--dataset", "fashion_mnist",
                 "--num-images", "3", "--batch", "2", "--steps", "2", "--quiet", "--threads", "1",
                 "--out", str(tmp_path / "ev")])
    assert code == 0, capsys.readouterr().err
    summary = _json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["complete"] and summary["prior"]["shape"] == [1, 32, 32] and summary["metrics"]["psnr"] > 0
