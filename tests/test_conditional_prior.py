"""Class-conditional priors for classifier-free guidance: the label embedding and its dropped label ∅, label
dropout in training, the card, and --class on a conditional prior (CFG) from the CLI."""
import json

import pytest
import torch

from invscore.checkpoint import load_denoiser
from invscore.nets import EDMDenoiser, UNet
from invscore.training import _loss, check_args, parser, train


def _net(k=3):
    torch.manual_seed(0)
    net = EDMDenoiser(UNet(1, channels=(16, 16), num_res_blocks=1, num_classes=k)).double()
    for p in net.parameters():  # the zero-initialised output convs would hide the label's effect
        torch.nn.init.normal_(p, std=0.1)
    return net


def test_the_label_changes_the_denoiser_and_none_is_the_dropped_label():
    net = _net()
    x, s = torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.full((4,), 0.7, dtype=torch.float64)
    out = [net(x, s, k) for k in range(3)]
    assert all(not torch.allclose(out[i], out[j]) for i in range(3) for j in range(i))
    torch.testing.assert_close(net(x, s), net(x, s, -1))  # ∅ = None = −1
    mixed = net(x, s, torch.tensor([0, -1, 2, 1]))
    torch.testing.assert_close(mixed[2], out[2][2])
    torch.testing.assert_close(mixed[1], net(x, s)[1])
    torch.testing.assert_close(net.denoise_given(x, s, 1), out[1])
    with pytest.raises(ValueError, match=r"classes 0..2"):
        net(x, s, 3)
    plain = EDMDenoiser(UNet(1, channels=(8, 8), num_res_blocks=1))
    with pytest.raises(ValueError, match="unconditional"):
        plain.denoise_given(x.float(), s.float(), 0)
    with pytest.raises(ValueError, match="takes no label"):
        plain(x.float(), s.float(), 0)


def test_label_dropout_feeds_the_dropped_label_at_the_asked_rate():
    args = parser().parse_args(["--conditional", "--out", "unused", "--batch", "4000", "--label-drop", "0.2"])
    seen = []

    class Spy(torch.nn.Module):
        sigma_data = 0.5

        def forward(self, x, sigma, label=None):
            seen.append(label)
            return x

    x, y = torch.zeros(10, 1, 2, 2), torch.arange(10)
    _loss(args, Spy(), x, y, torch.Generator().manual_seed(0))
    share = float((seen[0] == -1).float().mean())
    assert abs(share - 0.2) < 4 * (0.2 * 0.8 / 4000) ** 0.5  # binomial: 4 standard errors
    assert set(seen[0][seen[0] >= 0].tolist()) <= set(range(10))


@pytest.mark.parametrize("extra", [["--objective", "flow"], ["--task", "classifier"], ["--label-drop", "1.0"]])
def test_conditional_refuses_what_it_cannot_train(extra):
    with pytest.raises(ValueError, match="--conditional|--label-drop"):
        check_args(parser().parse_args(["--conditional", "--out", "x", *extra]))


def test_conditional_training_writes_a_class_conditional_card(tmp_path):
    args = parser().parse_args(["--conditional", "--out", str(tmp_path / "c"), "--steps", "2", "--batch", "4",
                                "--channels", "8,8", "--no-final", "--quiet", "--threads", "1", "--num-classes", "4"])
    x, y = torch.rand(16, 1, 8, 8) * 2 - 1, torch.randint(4, (16,))
    train(args, (x, y))
    net = load_denoiser(tmp_path / "c" / "ema.safetensors")
    assert net.num_classes == 4 and net.card["classes"] == 4 and net.card["label_dropout"] == 0.1
    assert net.denoise_given(torch.zeros(1, 1, 8, 8), torch.ones(1), 3).shape == (1, 1, 8, 8)


def test_class_on_a_conditional_prior_is_classifier_free_guidance_from_the_cli(tmp_path, capsys):
    from invscore.checkpoint import shipped
    from invscore.cli import main
    if "fashion_mnist_cond" not in shipped():
        pytest.skip("fashion_mnist_cond is not shipped in this checkout")
    out = tmp_path / "g"
    assert main(["generate", "--prior", "fashion_mnist_cond", "--class", "1", "--cfg-weight", "3", "--steps", "4",
                 "--n", "2", "--quiet", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["class"] == 1 and s["cfg_weight"] == 3.0 and s["nfe"] == 2 * 8  # Heun, 4 steps = 8 NFE, each doubled
    assert main(["generate", "--prior", "fashion_mnist_cond", "--class", "10", "--steps", "2", "--n", "1",
                 "--quiet", "--out", str(tmp_path / "b1")]) == 2
    assert "--class must be in 0..9" in capsys.readouterr().err
    assert main(["generate", "--prior", "fashion_mnist_cond", "--class", "1", "--cfg-weight", "-1", "--steps", "2",
                 "--n", "1", "--quiet", "--out", str(tmp_path / "b2")]) == 2
    assert "--cfg-weight must be" in capsys.readouterr().err
    assert main(["inpaint", "--mask", "center", "--prior", "fashion_mnist_cond", "--class", "1", "--method", "pigdm",
                 "--steps", "3", "--n", "1", "--quiet", "--out", str(tmp_path / "i")]) == 0


def test_exact_classifier_guidance_and_classifier_free_guidance_agree_on_a_mixture():
    """For a two-class Gaussian mixture with class = component, γ = 1 guidance by the exact noisy classifier
    p_σ(c | x) and w = 1 classifier-free guidance by the exact conditional denoiser are both the conditional
    model's Tweedie estimate (Dhariwal & Nichol 2021, eq. 12; Ho & Salimans 2022, eq. 6): the two terms agree."""
    from invscore.conditional import ClassifierFreeGuidance, ClassifierGuidance, Guided
    from invscore.priors import CallablePrior, Diffusion, GaussianMixture
    from invscore.sde import VPSDE
    d = dict(dtype=torch.float64)
    w, mu, var = torch.tensor([0.3, 0.7], **d), torch.tensor([[1.0, -0.5, 0.2], [-1.0, 0.4, 0.0]], **d), torch.tensor([0.2, 0.5], **d)
    mix = GaussianMixture(w, mu, var)

    def cond(x, sigma, c):  # E[x0 | x, c] of N(μ_c, v_c I) under VE noise σ
        v, s2 = var[c], sigma.view(-1, 1) ** 2
        return mu[c] + v / (v + s2) * (x - mu[c])

    def clf(x, sigma):  # log p_σ(c | x) up to a constant: log w_c + log N(x; μ_c, (v_c + σ²) I)
        s2 = var[None] + sigma.view(-1, 1) ** 2
        return w.log()[None] - 0.5 * ((x[:, None] - mu[None]) ** 2).sum(-1) / s2 - 1.5 * s2.log()

    base = Diffusion(CallablePrior(mix.denoise), VPSDE())
    x, t = torch.randn(5, 3, generator=torch.Generator().manual_seed(3), **d), torch.tensor(0.35, **d)
    target = Diffusion(CallablePrior(lambda v, s: cond(v, s, 1)), VPSDE()).x0(x, t)
    x_cg = Guided(base, [ClassifierGuidance(clf, 1, 1.0)]).x0(x.requires_grad_(True), t)
    x_cfg = Guided(base, [ClassifierFreeGuidance(cond, 1, 1.0)]).x0(x.detach(), t)
    torch.testing.assert_close(x_cg.detach(), target, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(x_cfg, target, rtol=1e-9, atol=1e-9)
