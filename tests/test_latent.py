"""Latent priors: solve samples z for y = A(𝒟(z)) + n and decodes; with 𝒟 = identity it is exactly the pixel
solve; PSLD's gluing term, its refusals, the autoencoder's cost counts, the two-stage training and the CLI."""
import json

import pytest
import torch
from torch import nn

import operators
from invscore.conditional import METHODS, solve
from invscore.nets import Autoencoder, vae_loss
from invscore.priors import GaussianMixture
from invscore.priors.latent import LatentOperator, LatentPrior, load_latent_prior
from conftest import identity_latent

D = dict(dtype=torch.float64)


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = GaussianMixture(torch.tensor([0.3, 0.7], **D), torch.randn(2, 16, generator=g, **D),
                          torch.tensor([0.1, 0.3], **D), data_shape=(1, 4, 4))
    mask = (torch.rand(1, 4, 4, generator=g) < 0.5).double()
    op = operators.Mask(mask, channels=1, dtype=torch.float64).with_noise(0.1)
    y = op.measure(mix.sample(3, generator=g).view(3, 1, 4, 4), g)
    return mix, op, y


@pytest.mark.parametrize("method, steps", [("dps", 12), ("daps", 4)])
def test_a_latent_prior_over_the_identity_autoencoder_is_the_pixel_prior(method, steps):
    mix, op, y = _problem()
    lp = identity_latent(mix)
    r_lat = solve(lp, op, y, method=method, steps=steps, generator=torch.Generator().manual_seed(5))
    r_pix = solve(mix, op, y, method=method, steps=steps, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(r_lat.x, r_pix.x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(r_lat.latent, r_pix.x, rtol=1e-10, atol=1e-10)
    assert r_lat.nfe == r_pix.nfe and r_lat.vjp == r_pix.vjp and r_pix.latent is None
    assert r_lat.autoencoder_nfe > 0 and r_pix.autoencoder_nfe == 0


def test_psld_without_gluing_is_latent_dps_and_its_gluing_term_counts_the_encoder():
    mix, op, y = _problem(1)
    lp = identity_latent(mix)
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    dps = solve(lp, op, y, method="dps", steps=10, generator=g())
    plain = solve(lp, op, y, method="psld", steps=10, generator=g(), gamma=0.0)
    torch.testing.assert_close(plain.x, dps.x, rtol=1e-10, atol=1e-10)
    glued = solve(lp, op, y, method="psld", steps=10, generator=g())
    assert not torch.allclose(glued.x, dps.x)  # with E = 𝒟 = id, the gluing term is A⁺(A ẑ0 − y) ≠ 0
    assert (glued.autoencoder_nfe, glued.autoencoder_vjp) == (20, 20)  # decoder + encoder, each step
    assert (dps.autoencoder_nfe, dps.autoencoder_vjp) == (10, 10)


def test_psld_refuses_a_pixel_prior_and_a_nonlinear_image_operator():
    mix, op, y = _problem()
    with pytest.raises(TypeError, match="needs a latent prior"):
        solve(mix, op, y, method="psld", steps=3)
    lp = identity_latent(mix)
    square = operators.FunctionOperator(lambda x: x ** 2, (1, 4, 4))
    with pytest.raises(TypeError, match="linear image operator"):
        solve(lp, square, square(y.new_ones(1, 1, 4, 4)), method="psld", steps=3)
    assert "psld" not in [n for n, m in METHODS.items() if m.accepts(op)]
    assert METHODS["psld"].accepts(LatentOperator(op, lp))


def test_an_operator_of_the_wrong_image_size_is_refused_in_one_line():
    mix, _, _ = _problem()
    lp = identity_latent(mix)
    big = operators.Mask(torch.ones(1, 8, 8), channels=1)
    with pytest.raises(ValueError, match=r"takes \(1, 8, 8\) images but the latent prior decodes to \(1, 4, 4\)"):
        solve(lp, big, torch.zeros(1, 1, 8, 8), method="dps", steps=2)


def test_autoencoder_shapes_scale_and_loss():
    ae = Autoencoder(1, 4, (8, 16, 16)).double()
    # smooth images (64 degrees of freedom each), which a 4×8×8 latent can hold
    x = nn.functional.interpolate(torch.rand(5, 1, 8, 8, **D) * 2 - 1, scale_factor=4, mode="bilinear")
    mu, logvar = ae.encode(x)
    assert mu.shape == logvar.shape == (5, 4, 8, 8) == (5, *ae.latent_shape(32))
    ae.latent_scale.fill_(3.0)
    mu3, logvar3 = ae.encode(x)
    torch.testing.assert_close(mu3, 3 * mu)
    torch.testing.assert_close(logvar3, logvar + 2 * torch.log(torch.tensor(3.0, **D)))
    torch.testing.assert_close(ae.decode(mu3), ae.decode.__self__.decoder(mu))  # served units undo the scale
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    first = None
    for _ in range(60):
        loss, rec = vae_loss(ae, x, g)
        first = float(rec.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(rec.detach()) < 0.3 * first  # it learns to reconstruct the 5 images


def test_two_stage_training_ships_a_latent_prior_that_loads_and_solves(tmp_path, monkeypatch):
    from invscore import latent_training
    from invscore.checkpoint import load_denoiser
    monkeypatch.setattr(latent_training, "_train_prior", _fast_prior(latent_training._train_prior))
    out = tmp_path / "lat"
    assert latent_training.main(["--out", str(out), "--vae-minutes", "0.01", "--vae-steps", "3", "--prior-steps", "2",
                                 "--n-train", "64", "--vae-channels", "8,16,16", "--prior-channels", "16,16"]) == 0
    card = json.loads((out / "prior" / "ema.json").read_text())
    assert card["family"] == "latent" and card["channels"] == 4 and card["image_size"] == 8
    assert set(card["eval_test_mse_by_sigma"]) and (out / "samples.png").exists()
    net = load_denoiser(out / "prior" / "ema.safetensors")
    lp = load_latent_prior(net, card, "cpu", where=net.source)
    op = operators.make("inpaint_center", img_size=(1, 32, 32), noise=0.05)
    r = solve(lp, op, op.measure(torch.zeros(2, 1, 32, 32)), method="psld", steps=3)
    assert r.x.shape == (2, 1, 32, 32) and r.latent.shape == (2, 4, 8, 8) and torch.isfinite(r.x).all()
    bad = {**card, "autoencoder": None}
    with pytest.raises(ValueError, match="does not name its autoencoder"):
        load_latent_prior(net, bad, "cpu")
    assert latent_training.main(["--out", str(tmp_path / "none"), "--ship-as", "x"]) == 2


def _fast_prior(real):
    def run(args, z, out, name):  # the same code path, a couple of steps
        args.prior_minutes, args.threads = 0.01, 1
        return real(args, z, out, name)
    return run


def test_the_shipped_latent_prior_runs_from_the_cli(tmp_path, capsys):
    from invscore.checkpoint import shipped
    from invscore.cli import main
    if "fashion_mnist_latent" not in shipped():
        pytest.skip("fashion_mnist_latent is not shipped in this checkout")
    assert main(["inpaint", "--mask", "center", "--prior", "fashion_mnist_latent", "--method", "psld", "--steps", "4",
                 "--n", "2", "--quiet", "--out", str(tmp_path / "r")]) == 0
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["method"] == "psld" and s["autoencoder_passes"] == 8 and s["autoencoder_backward"] == 8
    assert main(["inpaint", "--mask", "center", "--prior", "fashion_mnist_latent", "--method", "ddrm", "--steps", "4",
                 "--n", "2", "--quiet", "--out", str(tmp_path / "bad")]) == 2
    assert "needs an operator with an SVD" in capsys.readouterr().err
    assert main(["generate", "--prior", "fashion_mnist_latent", "--steps", "3", "--n", "2", "--quiet",
                 "--out", str(tmp_path / "g")]) == 0
    assert main(["inpaint", "--prior", "fashion_mnist_vae", "--quiet", "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert "is an autoencoder" in err and "(fashion_mnist_latent)" in err


def test_a_latent_prior_freezes_its_networks_and_checks_latent_shapes():
    from invscore.nets import EDMDenoiser, UNet
    lp = LatentPrior(EDMDenoiser(UNet(4, channels=(8, 8), num_res_blocks=1)), Autoencoder(1, 4, (8, 8, 8)),
                     latent_shape=(4, 8, 8))
    lp.train()
    assert lp.pixel_shape == (1, 32, 32) and not lp.training and not lp.autoencoder.training
    assert not any(p.requires_grad for p in lp.parameters())
    z = torch.zeros(1, 4, 8, 8, requires_grad=True)
    lp.decode(z).sum().backward()  # gradients reach the latent, not the weights
    assert z.grad is not None and all(p.grad is None for p in lp.parameters())
    with pytest.raises(ValueError, match="expected \\(B, 4, 8, 8\\)"):
        lp.check_input(torch.zeros(1, 1, 32, 32))
