"""ADM's noisy classifier (guided-diffusion's EncoderUNetModel): key names and shapes of the published
configurations, strict loading, the DDPM time convention, guidance through the wrapper, and bad input.

Reference fixtures were taken from guided-diffusion's own code (openai/guided-diffusion @ 22e0df8,
``create_classifier(image_size=256, classifier_defaults())`` and the small config below, built on the meta
device): key count, parameter count and the SHA-256 of the ordered ``key:shape`` listing."""
import hashlib

import pytest
import torch

from invscore.conditional import ClassifierGuidance, Guided
from invscore.nets.adm_classifier import EncoderUNet, classifier_config
from invscore.priors import Diffusion, StationaryGaussian
from invscore.priors.fmt_adm_classifier import ADMClassifier, adm_classifier, match_classifier_config
from invscore.priors.formats import FormatError
from invscore.samplers import sample
from invscore.sde import DiscreteVPSDE, VPSDE

REF_256 = dict(keys=249, params=54_096_360,
               sha="c0396441c437f7bdd0a5c8b1535228fab408dcc9b1315d86c018ad9aaa890c6b",
               some={"time_embed.0.weight": (512, 128), "input_blocks.0.0.weight": (128, 3, 3, 3),
                     "input_blocks.3.0.in_layers.2.weight": (128, 128, 3, 3),
                     "input_blocks.13.1.qkv.weight": (1536, 512, 1), "input_blocks.17.1.norm.weight": (512,),
                     "middle_block.1.proj_out.weight": (512, 512, 1),
                     "middle_block.2.emb_layers.1.bias": (1024,), "out.0.weight": (512,),
                     "out.2.positional_embedding": (512, 65), "out.2.qkv_proj.weight": (1536, 512, 1),
                     "out.2.c_proj.weight": (1000, 512, 1), "out.2.c_proj.bias": (1000,)},
               absent=("input_blocks.18.0.in_layers.0.weight", "out.2.weight", "input_blocks.16.0.skip_connection.weight"))

SMALL = dict(image_size=32, in_channels=3, model_channels=32, out_channels=10, num_res_blocks=1,
             attention_resolutions=(4,), channel_mult=(1, 2, 2), num_head_channels=32,
             use_scale_shift_norm=True, resblock_updown=True, pool="attention")
REF_SMALL = dict(keys=97, params=563_082, sha="333c6da57a476c8a7b613078d7c5be3323548ac00d493a8937a6d47b6d7c25ac")

TINY = dict(SMALL, image_size=16, channel_mult=(1, 2), out_channels=4)


def _listing_sha(sd) -> str:
    s = ";".join(f"{k}:{'x'.join(map(str, v.shape))}" for k, v in sd.items())
    return hashlib.sha256(s.encode()).hexdigest()


def _meta(cfg):
    with torch.device("meta"):
        return EncoderUNet(**cfg)


def _random_sd(cfg, seed=0, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) * scale for k, v in _meta(cfg).state_dict().items()}


@pytest.mark.parametrize("cfg,ref", [(classifier_config(256), REF_256), (SMALL, REF_SMALL)], ids=["256", "small"])
def test_keys_and_shapes_are_guided_diffusions(cfg, ref):
    net = _meta(cfg)
    sd = net.state_dict()
    assert len(sd) == ref["keys"]
    assert sum(p.numel() for p in net.parameters()) == ref["params"]
    assert _listing_sha(sd) == ref["sha"]  # every name and shape, in guided-diffusion's order
    for k, shape in ref.get("some", {}).items():
        assert tuple(sd[k].shape) == shape, k
    for k in ref.get("absent", ()):
        assert k not in sd


def test_256_state_dict_matched_on_meta():
    """A state dict with the 256 classifier's names and shapes (meta tensors: no memory) is recognised as
    guided-diffusion's 256 configuration; other sizes are told apart."""
    sd = _meta(classifier_config(256)).state_dict()
    cfg = match_classifier_config(sd)
    assert cfg == classifier_config(256) and cfg["channel_mult"] == (1, 1, 2, 2, 4, 4)
    assert cfg["attention_resolutions"] == (8, 16, 32)
    assert match_classifier_config(_meta(classifier_config(64)).state_dict())["image_size"] == 64
    with pytest.raises(FormatError, match=r"Closest: EncoderUNet\(image_size=128.*mis-shaped key"):
        match_classifier_config(sd, image_size=128)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_strict_load_of_a_saved_state_dict(tmp_path, suffix):
    sd = _random_sd(SMALL)
    path = tmp_path / f"clf{suffix}"
    if suffix == ".pt":
        torch.save({"model": sd}, path)
    else:
        from safetensors.torch import save_file
        save_file(sd, str(path))
    clf = adm_classifier(path, config=SMALL)
    assert isinstance(clf, ADMClassifier) and clf.card["parameters"] == REF_SMALL["params"]
    got = clf.net.state_dict()
    assert list(got) == list(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    assert not any(p.requires_grad for p in clf.parameters())
    logits = clf(torch.randn(2, 3, 32, 32), torch.tensor([0.1, 5.0]))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


def _ddpm_alphas_cumprod():
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)  # guided-diffusion's "linear"
    return torch.cumprod(1 - betas, 0)


class _Spy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.calls = []

    def forward(self, x_t, t):
        self.calls.append((x_t.detach().clone(), t.detach().clone()))
        return self.w * x_t.flatten(1)[:, :3]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_time_convention_is_the_trained_step(dtype):
    ac = _ddpm_alphas_cumprod()
    steps = torch.tensor([0, 1, 10, 250, 500, 998, 999])
    sigma = torch.sqrt((1 - ac[steps]) / ac[steps]).to(dtype)
    spy = _Spy()
    clf = ADMClassifier(spy)
    x = torch.randn(len(steps), 3, 4, 4, dtype=dtype)
    clf(x, sigma)
    x_t, t = spy.calls[-1]
    tol = 1e-6 if dtype == torch.float64 else 2e-2
    torch.testing.assert_close(t.double(), steps.double(), rtol=0, atol=tol)
    scale = ac[steps].sqrt().to(dtype).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(x_t.to(dtype), scale * x)
    # between trained levels the step is fractional, and a scalar sigma is broadcast
    mid = torch.sqrt((1 - ac[100:102].mean()) / ac[100:102].mean()).to(dtype)
    clf(x[:2], mid)
    t = spy.calls[-1][1]
    assert t.shape == (2,) and 100 < float(t[0]) < 101


def test_guidance_gradient_raises_the_target_log_probability():
    torch.manual_seed(0)
    net = EncoderUNet(**TINY)
    net.load_state_dict(_random_sd(TINY, seed=1, scale=0.2))
    clf = adm_classifier(net)
    sde = DiscreteVPSDE.schedule("linear", 1000)

    class _Model:  # what ClassifierGuidance reads from its model
        pass

    model = _Model()
    model.sde = sde
    t = sde.step_to_t(torch.tensor(300.0))
    x = torch.randn(4, 3, 16, 16, requires_grad=True)

    def logp(x, label):
        return torch.log_softmax(clf(x / sde.alpha(t), sde.ratio(t)), -1)[:, label]

    for label in (0, 3):
        g = ClassifierGuidance(clf, label, gamma=1.0).score(x, t, None, model)
        assert g.shape == x.shape and float(g.norm()) > 0
        eta = 1e-2 / float(g.flatten(1).norm(dim=1).max())
        with torch.no_grad():
            before, after = logp(x, label), logp(x + eta * g, label)
        assert bool((after > before).all()), (label, before, after)


class _ChannelMeans(torch.nn.Module):
    """A stand-in for the trained net: logits = k · (channel means of x_t), so class c favours channel c."""

    def __init__(self, k=8.0):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(k))

    def forward(self, x_t, t):
        assert t.shape == (x_t.shape[0],) and bool(((t >= 0) & (t <= 999)).all())
        return self.k * x_t.mean(dim=(2, 3))


def test_guided_sampling_moves_towards_the_class():
    """As tests/test_conditional.py's guidance tests: ClassifierGuidance through ADMClassifier (its x_t and
    step mapping, under a continuous VP sampler whose SDE is not the classifier's) shifts DDIM samples of a
    stationary Gaussian prior towards the requested class — the target channel's mean rises by > 4 SE and
    the other channels' means fall. (A random EncoderUNet is too flat for this; its gradient is checked above.)"""
    clf = adm_classifier(_ChannelMeans())
    prior = StationaryGaussian.radial((3, 8, 8), corner=0.3, dtype=torch.float32)
    base = Diffusion(prior, VPSDE())
    shape = (64, 3, 8, 8)
    plain = sample(base, shape, method="ddim", steps=10, generator=torch.Generator().manual_seed(0)).x.mean((2, 3))
    se = plain.std(0) / shape[0] ** 0.5
    for label in (0, 2):
        x = sample(Guided(base, [ClassifierGuidance(clf, label, gamma=1.0)]), shape, method="ddim", steps=10,
                   generator=torch.Generator().manual_seed(0)).x
        assert torch.isfinite(x).all()
        shift = x.mean((2, 3)).mean(0) - plain.mean(0)
        others = [c for c in range(3) if c != label]
        assert float(shift[label]) > 4 * float(se[label]), (label, shift, se)
        assert bool((shift[others] < 0).all()), (label, shift)


def test_wrong_key_wrong_shape_and_code_pickle_are_refused(tmp_path):
    sd = _random_sd(SMALL)
    renamed = dict(sd)
    renamed["out.2.c_proj.weight_bad"] = renamed.pop("out.2.c_proj.weight")
    with pytest.raises(FormatError, match=r"1 missing key\(s\): out\.2\.c_proj\.weight;.*1 unexpected key\(s\): "
                                          r"out\.2\.c_proj\.weight_bad"):
        adm_classifier(renamed, config=SMALL)
    reshaped = dict(sd)
    reshaped["out.2.positional_embedding"] = torch.zeros(64, 17)
    with pytest.raises(FormatError, match=r"1 mis-shaped key\(s\): out\.2\.positional_embedding \(64, 17\) "
                                          r"\(expected \(64, 65\)\)"):
        adm_classifier(reshaped, config=SMALL)
    with pytest.raises(FormatError, match="does not match an ADM"):  # no published configuration fits
        adm_classifier(sd)
    path = tmp_path / "module.pt"
    torch.save(EncoderUNet(**TINY), path)
    with pytest.raises(FormatError, match="needs code to load"):
        adm_classifier(path)
    with pytest.raises(FileNotFoundError):
        adm_classifier(tmp_path / "missing.pt")
    clf = adm_classifier(sd, config=SMALL)
    with pytest.raises(ValueError, match=r"expects images of shape \(B, 3, 32, 32\)"):
        clf(torch.randn(1, 3, 16, 16), 1.0)
    with pytest.raises(ValueError, match="no ADM classifier configuration"):
        classifier_config(100)
