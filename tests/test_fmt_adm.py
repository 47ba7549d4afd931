"""Prior format ``adm`` (invscore.priors.fmt_adm): guided-diffusion state dicts through deepinv's DiffUNet.

CPU only, random weights, no download. The small DiffUNet (~94 M parameters) is built once per module. Its
forward costs ~10 s of CPU at 256x256 (~25 s wall on 2 shared cores), so the default equality check against
deepinv's own computation runs at 32x32 (the same network and code path; DiffUNet takes 2^n sizes); the
256x256 check runs with INVSCORE_ADM_256=1.
"""
import os
import pickle

import pytest
import torch

deepinv = pytest.importorskip("deepinv")

from invscore.priors.fmt_adm import ADMEps, _build, adm_prior, match_config  # noqa: E402
from invscore.priors.formats import FormatError, available_formats, load_prior  # noqa: E402

STEPS = (0, 400, 999)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    n = deepinv.models.DiffUNet(in_channels=3, out_channels=6, large_model=False, pretrained=None).eval()
    with torch.no_grad():  # DiffUNet zero-initialises its last conv: give it weights so outputs are not 0
        n.out[2].weight.normal_(0, 0.05)
        n.out[2].bias.normal_(0, 0.05)
    return n


@pytest.fixture(scope="module")
def ckpt(net, tmp_path_factory):
    path = tmp_path_factory.mktemp("adm") / "ffhq_random.pt"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def loaded(ckpt):
    return load_prior(f"adm:{ckpt}")


def reference_x0(net, x, i):
    """deepinv's DiffUNet on its own: x_t = sqrt(ᾱ_i) x, ε̂ = first half of the output, Tweedie's x̂0."""
    a, s = net.sqrt_alphas_cumprod[i], net.sqrt_1m_alphas_cumprod[i]
    xt = a * x
    eps = net.forward_diffusion(xt, torch.full((x.shape[0],), i))[:, :3]
    return (xt - s * eps) / a, (s / a).reshape(1).expand(x.shape[0])


def check_steps(prior, net, x, steps):
    for i in steps:
        with torch.no_grad():
            ref, sigma = reference_x0(net, x, i)
            out = prior.denoise(x, sigma)
        # x̂0 = (x_t − s ε̂)/a amplifies float32 rounding by 1/a (156 at step 999): 1e-5 relative to its scale
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()), msg=f"step {i}")


def test_registered_and_card(loaded, ckpt, net):
    assert "adm" in available_formats()
    prior, card = loaded
    assert card["name"] == "ffhq_random" and card["source"] == str(ckpt)
    assert card["channels"] == 3 and card["image_size"] == 256 and card["data_range"] == [-1, 1]
    assert card["schedule"] == "linear" and card["num_steps"] == 1000 and card["parametrization"] == "eps"
    assert card["learned_sigma"] is True and "large_model=False" in card["architecture"]
    assert prior.data_shape == (3, 256, 256) and prior.time_input == "step"
    assert prior.sde.num_steps == 1000 and not any(p.requires_grad for p in prior.parameters())
    # deepinv's derived schedule buffers (not in an ADM state dict) are recomputed, for its forward_denoise
    assert torch.equal(prior.net.net.sqrt_alphas_cumprod, net.sqrt_alphas_cumprod)
    assert torch.equal(prior.net.net.sqrt_1m_alphas_cumprod, net.sqrt_1m_alphas_cumprod)


def test_denoiser_equals_deepinv_at_trained_steps(loaded, net):
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    check_steps(loaded[0], net, x, STEPS)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("INVSCORE_ADM_256"), reason="256x256 CPU forwards: set INVSCORE_ADM_256=1")
def test_denoiser_equals_deepinv_256(loaded, net):
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(2)) * 2 - 1
    check_steps(loaded[0], net, x, STEPS)


def test_learned_sigma_takes_eps_half(loaded, net):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([250.0])
    with torch.no_grad():
        eps = loaded[0].net(x, t)
        full = net(x, t, type_t="timestep")
    assert isinstance(loaded[0].net, ADMEps) and full.shape[1] == 6 and eps.shape[1] == 3
    torch.testing.assert_close(eps, full[:, :3], rtol=0, atol=0)


def test_module_api_matches_file(net):
    prior = adm_prior(net)
    card = prior.card
    assert card["learned_sigma"] and prior.data_shape == (3, 256, 256)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1
    check_steps(prior, net, x, (123,))


def test_safetensors(net, tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    prior, card = load_prior(f"adm:{path}")
    assert card["learned_sigma"] and torch.equal(prior.net.net.out[2].weight, net.out[2].weight)


def test_detects_configs_by_shape():
    for large in (False, True):
        for cout in (6, 3):
            sd = _build(large, 3, cout).state_dict()  # meta tensors: shapes only
            assert match_config(sd) == (large, 3, cout)


def test_mismatch_names_keys_and_architectures(net, tmp_path):
    sd = dict(net.state_dict())
    sd["input_blocks.1.0.in_layers.2.weightz"] = sd.pop("input_blocks.1.0.in_layers.2.weight")  # renamed
    del sd["middle_block.1.qkv.bias"]  # missing
    sd["time_embed.2.weight"] = torch.zeros(512, 7)  # wrong shape
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(FormatError) as e:
        load_prior(f"adm:{path}")
    msg = str(e.value)
    for part in ("input_blocks.1.0.in_layers.2.weight", "middle_block.1.qkv.bias",
                 "input_blocks.1.0.in_layers.2.weightz", "time_embed.2.weight (512, 7) (expected (512, 512))",
                 "2 missing", "1 unexpected", "1 mis-shaped", "large_model=False", "large_model=True",
                 "Architectures tried"):
        assert part in msg, (part, msg)


def test_pickled_module_is_refused(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(FormatError, match=r"not a plain state dict.*torch\.save\(model\.state_dict\(\)"):
        load_prior(f"adm:{path}")


class _Snapshot:  # stands for EDM's persistence-wrapped network in network-snapshot-*.pkl
    pass


def test_edm_style_pickle_is_refused(tmp_path):
    path = tmp_path / "network-snapshot.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"ema": _Snapshot()}, fh, protocol=4)
    with pytest.raises(FormatError, match=r"not a plain state dict.*needs code.*_Snapshot.*safetensors"):
        load_prior(f"adm:{path}")


@pytest.mark.parametrize("content", [b"\x00garbage" * 20, b"hello, not a checkpoint", "truncated"])
def test_corrupt_file_one_line_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "truncated":
        torch.save({"a": torch.zeros(1000)}, path)
        content = path.read_bytes()[:600]
    path.write_bytes(content)
    with pytest.raises(FormatError) as e:
        load_prior(f"adm:{path}")
    assert "\n" not in str(e.value) and str(path) in str(e.value) and "corrupt" in str(e.value)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(FormatError, match="not a state dict"):
        load_prior(f"adm:{path}")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_prior(f"adm:{path}")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        adm_prior(path)
