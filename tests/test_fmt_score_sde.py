"""Prior format ``score_sde`` (invscore.priors.fmt_score_sde): score_sde_pytorch NCSN++ checkpoints through
deepinv's NCSNpp.

The fixture ``tests/data/score_sde_tiny/`` was written by score_sde_pytorch's own code (``make_fixture.py``, which
needs that repository; this test does not): a tiny NCSN++ checkpoint in the real ``{model, ema, step, optimizer}``
layout and the reference denoiser ``2 (u + σ_u² s(u, t)) − 1`` it computed in float64 at four times t, for the
EMA and the raw weights. CPU only, no download.
"""
import shutil
from pathlib import Path

import pytest
import torch

deepinv = pytest.importorskip("deepinv")
from safetensors.torch import load_file  # noqa: E402

from invscore.priors.fmt_score_sde import _build, infer_config, key_map, score_sde_prior  # noqa: E402
from invscore.priors.formats import FormatError, available_formats, load_prior  # noqa: E402

DATA = Path(__file__).parent / "data" / "score_sde_tiny"
CKPT = DATA / "checkpoint_1.pth"


@pytest.fixture(scope="module")
def ref():
    return load_file(str(DATA / "reference.safetensors"))


@pytest.fixture(scope="module")
def loaded():
    return load_prior(f"score_sde:{CKPT}")


def _raw():
    return torch.load(CKPT, map_location="cpu", weights_only=True)


def _save(obj, tmp_path, name="ckpt.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def _denoise64(prior, ref):
    with torch.no_grad():
        return prior.double().denoise(ref["x"], ref["sigma"])


def _close(out, want):
    # 1e-5 relative to each image's scale (D grows with σ: up to ~290 at t = 1)
    scale = want.abs().amax(dim=(1, 2, 3), keepdim=True)
    err = ((out - want).abs() / scale).amax()
    assert err < 1e-5, float(err)


def test_registered_and_card(loaded, ref):
    assert "score_sde" in available_formats()
    prior, card = loaded
    assert card["format"] == "score_sde" and card["name"] == "checkpoint_1" and card["source"] == str(CKPT)
    assert card["channels"] == 3 and card["image_size"] == 16 and card["data_range"] == [-1, 1]
    assert card["sde"] == "ve" and card["weights"] == "ema" and card["step"] == 1
    # the fixture's config: σ in [0.01, 50] on [0, 1] data, i.e. [0.02, 100] on [-1, 1]
    assert card["sigma_min"] == pytest.approx(0.02, rel=1e-9) and card["sigma_max"] == pytest.approx(100, rel=1e-9)
    assert prior.sigma_range == pytest.approx((0.02, 100.0)) and prior.data_shape == (3, 16, 16)
    assert "sigmas" in card["sigma_from"] and "attention" in card["image_size_from"]
    n_ref = sum(v.numel() for k, v in _raw()["model"].items() if not k.endswith(("sigmas", "all_modules.0.W")))
    assert card["parameters"] == n_ref
    assert ref["t"].numel() == 4 and torch.allclose(ref["sigma"][[0, -1]].float(), torch.tensor([0.02, 100.0]),
                                                    rtol=1e-3)


def test_denoiser_equals_reference_ema(loaded, ref):
    _close(_denoise64(loaded[0], ref), ref["D_ema"])


def test_raw_model_weights(ref):
    prior = score_sde_prior(CKPT, ema=False)
    assert prior.card["weights"] == "model"
    pick = [1, 3]  # two of the four times keep this test cheap; the EMA test covers all four
    with torch.no_grad():
        out = prior.double().denoise(ref["x"][pick], ref["sigma"][pick])
    _close(out, ref["D_model"][pick])
    # the two weight sets give clearly different denoisers, so the EMA test above can tell them apart
    assert (ref["D_model"] - ref["D_ema"]).abs().max() > 0.1


def test_float32_matches_deepinv_forward_and_reference(ref):
    prior = score_sde_prior(CKPT)
    x, s = ref["x"].float(), ref["sigma"].float()
    with torch.no_grad():
        out = prior.denoise(x, s)
        own = prior.net(x, s, input_in_minus_one_one=True)  # deepinv's own 've-baseline' forward
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, own, rtol=1e-6, atol=1e-6)
    _close(out.double(), ref["D_ema"])


def test_frozen_and_differentiable_in_x(loaded, ref):
    prior = loaded[0]
    assert not any(p.requires_grad for p in prior.parameters()) and not prior.training
    prior.train()
    assert not prior.training
    x = ref["x"][:1].float().clone().requires_grad_(True)
    prior.float().denoise(x, ref["sigma"][:1].float()).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is None for p in prior.parameters())


def test_stepped_adam_state_and_safetensors(tmp_path, loaded):
    """A checkpoint with a real (stepped) Adam state still reads with weights_only; a bare model state dict as
    safetensors loads the raw weights."""
    obj = _raw()
    params = [v.float().clone().requires_grad_(True) for v in obj["ema"]["shadow_params"]]
    opt = torch.optim.Adam(params, lr=1e-3)
    sum(p.sum() for p in params).backward()
    opt.step()
    obj["optimizer"] = opt.state_dict()
    assert len(obj["optimizer"]["state"]) == len(params)
    want = loaded[0].net.state_dict()
    got = score_sde_prior(_save(obj, tmp_path)).net.state_dict()
    assert all(torch.equal(got[k], want[k].to(got[k].dtype)) for k in want)
    from safetensors.torch import save_file
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in obj["model"].items()}, str(path))
    prior = score_sde_prior(path)
    raw = score_sde_prior(CKPT, ema=False).net.state_dict()
    assert prior.card["weights"].startswith("state dict")
    assert all(torch.equal(prior.net.state_dict()[k], v) for k, v in raw.items())


def test_card_beside_checkpoint(tmp_path, ref):
    path = tmp_path / "checkpoint_1.pth"
    shutil.copy(CKPT, path)
    path.with_suffix(".json").write_text('{"data": {"image_size": 32}, "model": {"nf": 32, "sigma_max": 50}}')
    card = score_sde_prior(path).card
    assert card["image_size"] == 32 and card["image_size_from"] == str(path.with_suffix(".json"))
    for bad, part in [('{"model": {"scale_by_sigma": false}}', "scale_by_sigma=False is not supported"),
                      ('{"model": {"nf": 64}}', "nf=64 but the weights"),
                      ('{"sigma_max": 348}', "sigmas' buffer"),
                      ('{"imag_size": 16}', "unknown score_sde option(s) ['imag_size']"),
                      ('{"training": {"sde": "vpsde"}}', "sde='vpsde' is not supported"),
                      ("{not json", "not valid JSON")]:
        path.with_suffix(".json").write_text(bad)
        with pytest.raises(FormatError, match=None) as e:
            score_sde_prior(path)
        assert part in str(e.value) and "\n" not in str(e.value), (part, str(e.value))


def test_wrong_and_missing_keys_are_named(tmp_path):
    obj = _raw()
    model = obj["model"]
    model["module.all_modules.5.NIN_1.Wz"] = model.pop("module.all_modules.5.NIN_1.W")  # renamed
    del model["module.all_modules.4.Dense_0.bias"]  # missing
    model["module.all_modules.3.weight"] = torch.zeros(32, 3, 5, 5)  # mis-shaped
    with pytest.raises(FormatError) as e:
        load_prior(f"score_sde:{_save(obj, tmp_path)}")
    msg = str(e.value)
    for part in ("all_modules.5.NIN_1.W", "all_modules.5.NIN_1.Wz", "all_modules.4.Dense_0.bias",
                 "all_modules.3.weight (32, 3, 5, 5) (expected (32, 3, 3, 3))", "2 missing", "1 unexpected",
                 "1 mis-shaped", "nf=32"):
        assert part in msg, (part, msg)
    assert "\n" not in msg


def test_bad_ema_list(tmp_path):
    obj = _raw()
    obj["ema"]["shadow_params"] = obj["ema"]["shadow_params"][:-1]
    path = _save(obj, tmp_path)
    with pytest.raises(FormatError, match=r"shadow_params has 153 entries, expected 154.*ema=False"):
        score_sde_prior(path)
    assert score_sde_prior(path, ema=False).card["weights"] == "model"
    obj = _raw()
    sp = obj["ema"]["shadow_params"]
    sp[0], sp[2] = sp[2], sp[0]  # two entries swapped: map_layer0.weight gets map_layer1's shape
    with pytest.raises(FormatError, match=r"entry for all_modules.1.weight has shape \(128, 128\), expected "
                                          r"\(128, 64\)"):
        score_sde_prior(_save(obj, tmp_path))


def test_unsupported_option_is_named(tmp_path):
    """An output-skip decoder (score_sde's 256x256 configs): one extra GroupNorm + conv3x3 to the image channels
    per level, stood in for by the fixture with two modules appended."""
    obj = _raw()
    model = obj["model"]
    n = 1 + max(int(k.split(".")[2]) for k in model if k.startswith("module.all_modules."))
    model[f"module.all_modules.{n}.weight"], model[f"module.all_modules.{n}.bias"] = torch.ones(32), torch.zeros(32)
    model[f"module.all_modules.{n + 1}.weight"] = torch.zeros(3, 32, 3, 3)
    model[f"module.all_modules.{n + 1}.bias"] = torch.zeros(3)
    with pytest.raises(FormatError, match=r"option\(s\) not supported: progressive='output_skip'"):
        score_sde_prior(_save(obj, tmp_path))


def test_not_score_sde(tmp_path):
    adm_like = {"input_blocks.0.0.weight": torch.zeros(4, 3, 3, 3), "out.2.weight": torch.zeros(3, 4, 3, 3)}
    with pytest.raises(FormatError, match="not a score_sde NCSN\\+\\+ state dict"):
        load_prior(f"score_sde:{_save(adm_like, tmp_path)}")
    with pytest.raises(FormatError, match="not a score_sde checkpoint"):
        load_prior(f"score_sde:{_save([1, 2], tmp_path)}")


def test_pickle_needing_code_and_corrupt_file(tmp_path):
    path = _save({"model": torch.nn.Linear(2, 2)}, tmp_path)
    with pytest.raises(FormatError, match=r"not a plain state dict.*needs code.*torch\.nn"):
        load_prior(f"score_sde:{path}")
    path = tmp_path / "trunc.pth"
    path.write_bytes(CKPT.read_bytes()[:5000])
    with pytest.raises(FormatError) as e:
        load_prior(f"score_sde:{path}")
    assert "corrupt" in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_prior(f"score_sde:{tmp_path / 'nope.pth'}")


@pytest.mark.parametrize("nf, ch_mult, nrb, attn", [(128, (1, 2, 2, 2), 4, (1,)), (64, (1, 2, 1), 2, (0, 2))])
def test_infers_architecture_from_shapes(nf, ch_mult, nrb, attn):
    """key_map's score_sde layout, built as shapes (the cifar10_ncsnpp_continuous config first), reads back as
    the configuration it came from, and maps onto exactly NCSNpp's parameters and their shapes."""
    cfg = {"channels": 3, "nf": nf, "ch_mult": ch_mult, "num_res_blocks": nrb, "attn_levels": attn}
    kmap = key_map(cfg, 32)
    sd = {k: torch.empty(shape, device="meta") for k, (shape, _, _) in kmap.items()}
    assert infer_config(sd) == cfg
    net = _build(cfg, 32)
    want = {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.endswith("resample_filter")}
    got = {dkey: _deepinv_shape(shape, how) for shape, dkey, how in kmap.values()}
    assert got == want


def _deepinv_shape(shape, how):
    if how == "nin":  # NIN W (in, out) -> 1x1 conv (out, in, 1, 1)
        return (shape[1], shape[0], 1, 1)
    if isinstance(how, tuple):  # one third of qkv
        return (3 * shape[1], shape[0], 1, 1) if how[2] == "w" else (3 * shape[0],)
    return tuple(shape)
